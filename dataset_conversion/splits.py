"""Stratified cross-validation splits written in nnU-Net's ``splits_final.json`` format.

Why: nnU-Net's default split (``nnUNetTrainer.do_split`` -> ``generate_crossval_split``) is a plain seeded
KFold over sorted case ids. In a multi-site breast cohort that can put most of one site, or most
contrast-enhanced scans, into one validation fold, which biases the per-fold metrics and the ensemble
selection. We deal each stratum (e.g. site x contrast) evenly over the folds instead and hand nnU-Net the
result through the file it already honours.

nnU-Net's contract (nnunetv2 2.8.1, ``training/nnUNetTrainer/nnUNetTrainer.py`` L616-634): the file is
``<nnUNet_preprocessed>/<dataset>/splits_final.json``; if present it is read with ``load_json`` and fold
``f`` uses ``splits[f]['train']`` and ``splits[f]['val']`` (lists of case identifiers); a fold index beyond
the list silently falls back to a random 80:20 split (L638-650), so the file must hold every fold trained.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nnunet_breast.errors import UserError
from nnunet_breast.util.files import atomic_write_text

__all__ = ["stratified_splits", "strata_from_table", "write_splits", "SPLITS_FILENAME"]

SPLITS_FILENAME = "splits_final.json"   # the name nnUNetTrainer.do_split looks for


def stratified_splits(case_ids: Sequence[str], strata: Sequence[str], folds: int = 5,
                      seed: int = 12345) -> list[dict[str, list[str]]]:
    """``folds``-fold splits in nnU-Net's format, each stratum spread as evenly as possible over the folds.

    Within each stratum (processed in sorted order) the case ids are sorted, shuffled with a seeded
    ``RandomState`` (whose stream numpy keeps stable across versions) and dealt round-robin, starting at the
    currently smallest validation fold (ties: lowest fold index). This gives, per stratum, validation counts
    that differ by at most one between folds and overall fold sizes that also differ by at most one. Sorting
    first makes the result depend only on the set of (case, stratum) pairs and the seed, not on input order.
    Train and val lists are sorted, like nnU-Net's own splits.
    """
    ids = [str(c) for c in case_ids]
    labels = [str(s) for s in strata]
    if len(ids) != len(labels):
        raise ValueError(f"got {len(ids)} case ids but {len(labels)} strata; need one stratum per case")
    dup = sorted({c for c in ids if ids.count(c) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise UserError(f"case ids must be unique; repeated: {dup[:10]}")
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise UserError(f"need at least 2 folds for cross-validation, got {folds!r}")
    if folds > len(ids):
        raise UserError(f"cannot make {folds} folds from {len(ids)} case(s): every fold needs at least one "
                        f"validation case; use fewer folds or more cases")

    by_stratum: dict[str, list[str]] = defaultdict(list)
    for c, s in zip(ids, labels):
        by_stratum[s].append(c)

    rng = np.random.RandomState(seed)
    val: list[list[str]] = [[] for _ in range(folds)]
    for stratum in sorted(by_stratum):
        members = sorted(by_stratum[stratum])
        order = rng.permutation(len(members))
        # smallest folds first, so the remainder of this stratum evens out the fold sizes
        fold_order = sorted(range(folds), key=lambda f: (len(val[f]), f))
        for j, idx in enumerate(order):
            val[fold_order[j % folds]].append(members[idx])

    everything = sorted(ids)
    splits = []
    for f in range(folds):
        val_set = set(val[f])
        splits.append({"train": [c for c in everything if c not in val_set], "val": sorted(val[f])})
    return splits


def strata_from_table(rows: Sequence[Mapping[str, str]], keys: Sequence[str]) -> list[str]:
    """One stratum label per row of cohort.csv (``csv.DictReader`` rows), e.g. ``"site=Site A|contrast=1"``.

    The key names are part of the label so that strata stay readable in logs and unambiguous when two
    columns share values. No keys means one stratum (``"all"``), i.e. an unstratified but balanced split.
    """
    keys = [str(k) for k in keys]
    rows = list(rows)
    if not rows:
        return []
    available = sorted({k for r in rows for k in r.keys() if k is not None})
    unknown = [k for k in keys if k not in available]
    if unknown:
        raise UserError(f"unknown stratification column(s) {unknown}; available columns: {available}")
    if not keys:
        return ["all"] * len(rows)
    out = []
    for i, row in enumerate(rows):
        parts = []
        for k in keys:
            value = row.get(k)
            if value is None:
                # a short CSV row: DictReader fills missing fields with None; guessing a value would mislabel
                raise UserError(f"row {i} has no value for column {k!r}: {dict(row)}")
            parts.append(f"{k}={str(value).strip()}")
        out.append("|".join(parts))
    return out


def _validated(splits: Any) -> list[dict[str, list[str]]]:
    """Check the structure ``do_split`` indexes (``splits[fold]['train']``) before nnU-Net trips over it."""
    if isinstance(splits, (str, bytes, Mapping)) or not isinstance(splits, Sequence) or not splits:
        raise ValueError("splits must be a non-empty list of {'train': [...], 'val': [...]} dicts")
    out = []
    for f, fold in enumerate(splits):
        if not isinstance(fold, Mapping) or not {"train", "val"} <= set(fold):
            raise ValueError(f"fold {f} must be a mapping with 'train' and 'val' keys, got {fold!r}")
        entry = {}
        for part in ("train", "val"):
            cases = fold[part]
            if isinstance(cases, (str, bytes)) or not isinstance(cases, (Sequence, np.ndarray)):
                raise ValueError(f"fold {f} {part!r} must be a list of case ids, got {type(cases).__name__}")
            entry[part] = [str(c) for c in cases]   # numpy strings are not JSON-serialisable
        if not entry["val"]:
            raise ValueError(f"fold {f} has no validation cases")
        out.append(entry)
    return out


def write_splits(preprocessed_dataset_dir: Path, splits: Sequence[Mapping[str, Sequence[str]]]) -> Path:
    """Write ``splits_final.json`` into the dataset's preprocessed folder (created if needed); returns its path.

    Written atomically (:mod:`nnunet_breast.util.files`: a temporary file in the same folder moved into
    place with ``os.replace``), so a trainer starting concurrently reads either the old file or the complete
    new one, never a truncated file (which nnU-Net would fail on, or worse, a missing file, which makes it
    generate its own default split).
    """
    data = _validated(splits)
    folder = Path(preprocessed_dataset_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / SPLITS_FILENAME
    atomic_write_text(target, json.dumps(data, indent=4) + "\n")   # nnU-Net's save_json also writes indent=4
    return target
