"""The score of one predicted clip mask against its reference: overlap, surface distance and clip detection.

Every clip evaluation reports these columns (:data:`CLIP_SCORE_COLUMNS`): ``nnunet-breast evaluate``
(``clip_detection.csv``), the demo (``evaluation_clips.csv``) and ``benchmarks/clip_cascade.py``. DSC, HD95
and ASSD come from :func:`~nnunet_breast.evaluation.metrics.structure_metrics` (mm), the clip counts and the
centroid error from :func:`~nnunet_breast.evaluation.clip_detection.detect_clips`.

A case whose reference has no clip (a clip-cohort case has every clip annotated, so: a patient without
clips) is not evaluated for DSC, HD95 and ASSD (NaN, as for every structure with an empty reference, see
:data:`~nnunet_breast.evaluation.metrics.EMPTY_POLICY`), but its predicted clips still count as
``clips_false``: there the empty reference is a fact, not a structure left uncontoured.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Iterable

import numpy as np

from nnunet_breast.evaluation.clip_detection import detect_clips
from nnunet_breast.evaluation.metrics import StructureMetrics, structure_metrics

__all__ = ["ClipScore", "CLIP_SCORE_COLUMNS", "CLIP_COUNTS", "score_clip_mask", "summarise_clip_scores"]


@dataclass(frozen=True)
class ClipScore:
    case_id: str
    dsc: float
    hd95_mm: float
    assd_mm: float
    clips_found: int                  # reference clips matched by a predicted clip (true positives)
    clips_missed: int                 # reference clips left unmatched (false negatives)
    clips_false: int                  # predicted clips left unmatched (false positives)
    centroid_error_mm_mean: float     # mean centroid distance of the matched pairs; NaN without a match

    def as_dict(self) -> dict:
        return asdict(self)


CLIP_SCORE_COLUMNS = [f.name for f in fields(ClipScore)]
CLIP_COUNTS = ("clips_found", "clips_missed", "clips_false")


def score_clip_mask(case_id: str, ref: np.ndarray, pred: np.ndarray, spacing_zyx,
                    metrics: StructureMetrics | None = None, detection_tolerance_mm: float = 5.0) -> ClipScore:
    """Score the bool ``[z, y, x]`` clip mask ``pred`` against ``ref``; spacing ``(z, y, x)`` mm.

    ``metrics``: the clip structure's :class:`StructureMetrics` when the caller has them already (they are
    computed otherwise). ``detection_tolerance_mm``: the centroid distance within which clips match.
    """
    m = metrics if metrics is not None else structure_metrics(ref, pred, spacing_zyx)
    det = detect_clips(ref, pred, spacing_zyx, tolerance_mm=detection_tolerance_mm)
    errors = det.centroid_errors_mm
    return ClipScore(case_id, m.dsc, m.hd95, m.assd, det.true_positives, det.missed, det.false_positives,
                     float(np.mean(errors)) if errors else math.nan)


def summarise_clip_scores(scores: Iterable[ClipScore]) -> dict:
    """Means of DSC, HD95 and ASSD over their finite values (``<column>_mean``) and the summed clip counts.

    ``n_cases`` counts the scores; ``n_not_evaluated`` those whose reference has no clip (DSC, HD95, ASSD NaN,
    left out of the means; their false clips are in ``clips_false``).
    """
    scores = list(scores)
    out: dict = {"n_cases": len(scores),
                 "n_not_evaluated": sum(s.clips_found + s.clips_missed == 0 for s in scores)}
    for name in ("dsc", "hd95_mm", "assd_mm"):
        v = np.array([getattr(s, name) for s in scores], np.float64)
        v = v[np.isfinite(v)]
        out[f"{name}_mean"] = float(v.mean()) if v.size else math.nan
    out.update({k: int(sum(getattr(s, k) for s in scores)) for k in CLIP_COUNTS})
    return out
