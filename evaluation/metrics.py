"""Per-structure metrics of RT structures (DSC, HD95, ASSD, surface Dice, volumes) and their summaries.

Masks are boolean ``[z, y, x]`` arrays with spacing ``(z, y, x)`` mm (reverse SimpleITK's ``GetSpacing()``).
The surface distances follow DeepMind's convention; how, and how that differs from MedPy and MONAI, is
:mod:`nnunet_breast.evaluation.surface`.

Empty masks
-----------
See :data:`EMPTY_POLICY`. In short: a structure absent from a case's reference (not contoured there, e.g.
the untreated side of a clinical export) is *not evaluated* in that case (``evaluated=False``: DSC, surface
Dice and distances NaN) and left out of every summary, counted as ``n_not_evaluated``. No metric here raises on
empty input, and none reports 0 mm because a surface is missing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Mapping, Sequence

import numpy as np

from nnunet_breast.evaluation.surface import surface_distances_cropped, union_crop, validate_masks

__all__ = ["EMPTY_POLICY", "NOT_EVALUATED", "StructureMetrics", "structure_metrics", "evaluate_case", "summarize",
           "is_evaluated"]

NOT_EVALUATED = ("ref", "both")   # values of ``empty`` whose reference is empty: the structure is not evaluated

EMPTY_POLICY = (
    "A structure whose reference mask is empty in a case was not contoured in that case and is NOT EVALUATED "
    "there: empty='ref' (prediction not empty) or empty='both' (both empty) -> evaluated=False; DSC, surface "
    "Dice, HD, HD95, ASD and ASSD = NaN (never 1, never 0); volumes as measured (a prediction's volume is still "
    "reported). Why: a clinical export contours what was treated, e.g. only the left CTVs of a left-sided "
    "patient, often not every nodal level and sometimes no thyroid or esophagus; an empty reference means "
    "'not contoured', not 'absent', so scoring it (DSC 1 when both are empty) would inflate every mean. "
    "Reference present but prediction empty -> empty='pred', evaluated=True: DSC = 0.0, surface Dice = 0.0, "
    "every distance = NaN (never 0 mm, never inf). summarize() counts n_evaluated and n_not_evaluated (and "
    "n_pred_empty, n_not_evaluated_predicted) and takes every statistic over evaluated rows only, leaving NaN "
    "values out. Clip scores (clip_scores.py) still count the predicted clips of a clip-free reference as "
    "clips_false."
)


# --------------------------------------------------------------------------------------------------
# Per-structure metrics
# --------------------------------------------------------------------------------------------------

@dataclass
class StructureMetrics:
    """Metrics of one structure in one case. Distances in mm, volumes in cc.

    ``hd95`` holds the HD at the requested ``percentile`` (95 by default). ``empty`` is ``""``, ``"ref"``,
    ``"pred"`` or ``"both"`` and says which mask was empty. :attr:`evaluated` is False when the reference is
    empty (``"ref"``, ``"both"``): the structure was not contoured in that case and every score is NaN
    (see :data:`EMPTY_POLICY`).
    """
    dsc: float
    hd95: float
    hd: float
    assd: float
    asd_ref_to_pred: float
    asd_pred_to_ref: float
    surface_dice: float
    volume_ref_cc: float
    volume_pred_cc: float
    volume_diff_cc: float
    empty: str

    @property
    def evaluated(self) -> bool:
        """True when the reference has the structure (see :data:`EMPTY_POLICY`)."""
        return self.empty not in NOT_EVALUATED

    def as_dict(self) -> dict:
        """The fields plus ``evaluated`` (the ``metrics.csv`` row of this structure, without case and name)."""
        return {**asdict(self), "evaluated": self.evaluated}


def structure_metrics(ref: np.ndarray, pred: np.ndarray, spacing_zyx, tolerance_mm: float = 2.0,
                      percentile: float = 95) -> StructureMetrics:
    """DSC, HD95, HD, ASSD (and both directed ASDs), surface Dice at ``tolerance_mm`` and volumes.

    An empty ``ref`` gives a not-evaluated result (every score NaN, volumes as measured); an empty ``pred``
    against a non-empty ``ref`` gives DSC 0 (see :data:`EMPTY_POLICY`). 2D masks (spacing ``(y, x)``) are accepted for the distances. Their volume fields are NaN, because a
    plane has no volume.
    """
    ref, pred, spacing = validate_masks(ref, pred, spacing_zyx)
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {percentile}")
    cropped = union_crop(ref, pred)               # everything below works on the crop only
    if cropped is not None:
        ref, pred = cropped
    n_ref = int(np.count_nonzero(ref))
    n_pred = int(np.count_nonzero(pred))
    voxel_cc = float(np.prod(spacing)) / 1000.0 if ref.ndim == 3 else math.nan
    vol_ref, vol_pred = n_ref * voxel_cc, n_pred * voxel_cc
    nan = math.nan
    if n_ref == 0 or n_pred == 0:
        # empty reference: not contoured in this case, not evaluated (NaN); empty prediction only: a miss (0)
        score = nan if n_ref == 0 else 0.0
        empty = ("both" if n_pred == 0 else "ref") if n_ref == 0 else "pred"
        return StructureMetrics(score, nan, nan, nan, nan, nan, score, vol_ref, vol_pred, vol_pred - vol_ref, empty)
    n_both = int(np.count_nonzero(ref & pred))
    sd = surface_distances_cropped(ref, pred, spacing)
    asd_rp, asd_pr = sd.average_distances()
    return StructureMetrics(
        dsc=2.0 * n_both / (n_ref + n_pred),
        hd95=sd.hausdorff(percentile),
        hd=sd.hausdorff(100.0),
        assd=0.5 * (asd_rp + asd_pr),
        asd_ref_to_pred=asd_rp,
        asd_pred_to_ref=asd_pr,
        surface_dice=sd.surface_dice(tolerance_mm),
        volume_ref_cc=vol_ref,
        volume_pred_cc=vol_pred,
        volume_diff_cc=vol_pred - vol_ref,
        empty="",
    )


def evaluate_case(ref_masks: Mapping[str, np.ndarray], pred_masks: Mapping[str, np.ndarray], spacing_zyx,
                  structures: Sequence[str] | None = None, tolerance_mm: float = 2.0,
                  percentile: float = 95) -> dict[str, StructureMetrics]:
    """:func:`structure_metrics` for every structure of a case. A structure missing from a dict is empty.

    ``structures`` defaults to the union of both dicts' keys, references first.
    """
    if structures is None:
        structures = list(ref_masks) + [k for k in pred_masks if k not in ref_masks]
    first = next(iter(ref_masks.values()), next(iter(pred_masks.values()), None))
    if first is None:
        return {}
    zeros = np.zeros(np.shape(first), bool)
    return {name: structure_metrics(ref_masks.get(name, zeros), pred_masks.get(name, zeros), spacing_zyx,
                                    tolerance_mm, percentile)
            for name in structures}


_NUMERIC = tuple(f.name for f in fields(StructureMetrics) if f.name != "empty")


def is_evaluated(row: Mapping) -> bool:
    """Whether a ``metrics.csv`` row (dict, values possibly strings) was evaluated.

    Reads the ``evaluated`` column when present, else derives it from ``empty`` (files written before the
    column existed, whose both-empty rows hold DSC 1: they are not evaluated either).
    """
    value = row.get("evaluated")
    if value is None or value == "":
        return str(row.get("empty") or "") not in NOT_EVALUATED
    if isinstance(value, str):
        if value.strip().lower() in ("true", "1", "yes"):
            return True
        if value.strip().lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"evaluated must be True or False, got {value!r}")
    return bool(value)


def summarize(metrics: Iterable[StructureMetrics]) -> dict:
    """Mean, std, median, min and max of every metric over the evaluated rows' finite values, with counts.

    ``n`` counts all rows. ``n_evaluated`` counts those whose reference has the structure and
    ``n_not_evaluated`` those whose reference is empty (not contoured in that case; ``empty`` "ref" or
    "both"): they are left out of every statistic, volumes included (their volumes stay in the rows).
    ``n_not_evaluated_predicted`` is the part of ``n_not_evaluated`` with a non-empty prediction (``empty``
    "ref"), ``n_pred_empty`` the evaluated rows whose prediction is empty (DSC 0). For each metric
    ``<name>_n`` gives how many finite values went into its statistics.
    """
    rows = list(metrics)
    used = [r for r in rows if r.evaluated]
    out: dict = {"n": len(rows), "n_evaluated": len(used), "n_not_evaluated": len(rows) - len(used),
                 "n_not_evaluated_predicted": sum(r.empty == "ref" for r in rows),
                 "n_pred_empty": sum(r.empty == "pred" for r in rows)}
    for name in _NUMERIC:
        v = np.array([getattr(r, name) for r in used], np.float64)
        v = v[np.isfinite(v)]
        out[f"{name}_n"] = int(v.size)
        for stat, fn in (("mean", np.mean), ("std", np.std), ("median", np.median), ("min", np.min),
                         ("max", np.max)):
            out[f"{name}_{stat}"] = float(fn(v)) if v.size else math.nan
    return out
