"""Tests for nnunet_breast.dataset_conversion.splits: balanced stratified folds that nnU-Net reads as-is."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from types import SimpleNamespace

import pytest

from nnunet_breast.dataset_conversion.splits import SPLITS_FILENAME, strata_from_table, stratified_splits, write_splits

COHORT_CSV = """case_id,site,contrast,laterality
""" + "\n".join(
    f"BRST_{i:03d},{site},{contrast},{'L' if i % 3 else 'R'}"
    for i, (site, contrast) in enumerate(
        [("Site A", 1)] * 17 + [("Site A", 0)] * 6 + [("Site B", 1)] * 9 + [("Site B", 0)] * 4 + [("Site C", 0)] * 3)
) + "\n"


@pytest.fixture
def cohort() -> tuple[list[str], list[str]]:
    rows = list(csv.DictReader(io.StringIO(COHORT_CSV)))
    return [r["case_id"] for r in rows], strata_from_table(rows, ["site", "contrast"])


def test_every_case_is_validated_exactly_once(cohort):
    ids, strata = cohort
    splits = stratified_splits(ids, strata)
    assert len(splits) == 5
    val_all = [c for f in splits for c in f["val"]]
    assert sorted(val_all) == sorted(ids) and len(set(val_all)) == len(ids)
    for f in splits:
        assert set(f["train"]).isdisjoint(f["val"])
        assert sorted(f["train"] + f["val"]) == sorted(ids)
        assert f["train"] == sorted(f["train"]) and f["val"] == sorted(f["val"])


def test_strata_and_fold_sizes_are_balanced(cohort):
    ids, strata = cohort
    stratum_of = dict(zip(ids, strata))
    for folds in (2, 3, 5, 7):
        splits = stratified_splits(ids, strata, folds=folds)
        sizes = [len(f["val"]) for f in splits]
        assert max(sizes) - min(sizes) <= 1, (folds, sizes)
        for s in set(strata):
            counts = [Counter(stratum_of[c] for c in f["val"])[s] for f in splits]
            assert max(counts) - min(counts) <= 1, (folds, s, counts)


def test_many_small_strata_keep_fold_sizes_balanced():
    ids = [f"c{i:02d}" for i in range(23)]
    strata = [f"s{i % 9}" for i in range(23)]          # nine strata of 2-3 cases, all fewer than the folds
    sizes = [len(f["val"]) for f in stratified_splits(ids, strata, folds=5)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 23


def test_deterministic_and_independent_of_input_order(cohort):
    ids, strata = cohort
    a = stratified_splits(ids, strata, seed=3)
    assert stratified_splits(ids, strata, seed=3) == a
    assert stratified_splits(ids[::-1], strata[::-1], seed=3) == a


def test_seed_changes_the_assignment(cohort):
    ids, strata = cohort
    assert stratified_splits(ids, strata, seed=1) != stratified_splits(ids, strata, seed=2)


def test_invalid_arguments_raise(cohort):
    ids, strata = cohort
    with pytest.raises(ValueError, match="cannot make 6 folds from 5 case"):
        stratified_splits(ids[:5], strata[:5], folds=6)
    stratified_splits(ids[:5], strata[:5], folds=5)    # exactly one val case per fold is fine
    with pytest.raises(ValueError, match="at least 2 folds"):
        stratified_splits(ids, strata, folds=1)
    with pytest.raises(ValueError, match="one stratum per case"):
        stratified_splits(ids, strata[:-1])
    with pytest.raises(ValueError, match="unique"):
        stratified_splits(ids + ids[:1], strata + strata[:1])


def test_strata_from_table_labels_and_errors():
    rows = list(csv.DictReader(io.StringIO(COHORT_CSV)))
    assert strata_from_table(rows, ["site", "contrast"])[0] == "site=Site A|contrast=1"
    assert strata_from_table(rows, ["laterality"])[:3] == ["laterality=R", "laterality=L", "laterality=L"]
    assert set(strata_from_table(rows, [])) == {"all"}
    with pytest.raises(ValueError, match=r"'scanner'.*available columns.*'case_id'.*'site'"):
        strata_from_table(rows, ["site", "scanner"])
    short = list(csv.DictReader(io.StringIO("case_id,site\nX1\n")))
    with pytest.raises(ValueError, match="no value for column 'site'"):
        strata_from_table(short, ["site"])


def test_write_splits_is_read_by_nnunet_do_split(cohort, tmp_path):
    """Run nnU-Net's own do_split (no trainer instance: a stand-in self) against the written file."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    ids, strata = cohort
    splits = stratified_splits(ids, strata)
    folder = tmp_path / "nnUNet_preprocessed" / "Dataset501_Breast"
    path = write_splits(folder, splits)
    assert path == folder / SPLITS_FILENAME and path.is_file()
    assert [p.name for p in folder.iterdir()] == [SPLITS_FILENAME]       # no temp file left behind
    assert load_json(str(path)) == splits

    class Dataset:   # do_split only instantiates the dataset class when it has to create a split itself
        def __init__(self, folder, identifiers=None, folder_with_segs_from_previous_stage=None):
            self.identifiers = ids

    log: list[str] = []
    for fold in range(5):
        fake = SimpleNamespace(dataset_class=Dataset, fold=fold, preprocessed_dataset_folder_base=str(folder),
                               preprocessed_dataset_folder=str(folder / "nnUNetPlans_3d_fullres"),
                               folder_with_segs_from_previous_stage=None,
                               print_to_log_file=lambda *a, **k: log.append(" ".join(map(str, a))))
        tr_keys, val_keys = nnUNetTrainer.do_split(fake)
        assert tr_keys == splits[fold]["train"] and val_keys == splits[fold]["val"]
    assert any("Using splits from existing split file" in line for line in log)
    assert not any("WARNING" in line or "random" in line for line in log)


def test_write_splits_replaces_and_validates(tmp_path):
    first = write_splits(tmp_path / "new" / "dir", [{"train": ["a"], "val": ["b"]}, {"train": ["b"], "val": ["a"]}])
    write_splits(first.parent, [{"train": ["b"], "val": ["a"]}, {"train": ["a"], "val": ["b"]}])
    assert json.loads(first.read_text())[0] == {"train": ["b"], "val": ["a"]}
    for bad in ([], {"train": [], "val": []}, [{"train": ["a"]}], [{"train": "a", "val": ["b"]}],
                [{"train": ["a"], "val": []}]):
        with pytest.raises(ValueError):
            write_splits(tmp_path / "bad", bad)
    assert not (tmp_path / "bad" / SPLITS_FILENAME).exists()
