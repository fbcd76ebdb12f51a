"""Clip-level detection for the surgical-clip cohort: which reference clips were found, missed or invented.

Every connected component (26-connectivity in 3D, 8 in 2D) of the reference mask is one clip, and so is
every component of the prediction. A predicted component is a *candidate* for a reference clip when

* the two components share at least one voxel, or
* their centroids (voxel centre of mass, converted to mm with the spacing and the optional origin) lie
  within ``tolerance_mm`` of each other (``<=``).

The final matching is one-to-one, by the Hungarian method (:func:`scipy.optimize.linear_sum_assignment`).
It first maximises the number of matched clips and then minimises the summed centroid distance of the
matched pairs. One predicted blob that covers two clips therefore counts once, and the other clip counts as
missed. Matched pairs are true positives. Reference clips left unmatched are ``missed`` (false negatives),
and predicted components left unmatched are ``false_positives``. Each match records its centroid error in
mm.

Arrays are boolean ``[z, y, x]`` and spacing and origin are ``(z, y, x)`` mm: reverse SimpleITK's
``GetSpacing()`` / ``GetOrigin()``. The direction matrix is taken as identity, as for axial CT. The
origin only shifts the reported centroids. It never changes a match or an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from nnunet_breast.volumes.components import components

__all__ = ["ClipMatch", "ClipDetection", "detect_clips"]


@dataclass(frozen=True)
class ClipMatch:
    ref_index: int          # index into ClipDetection.ref_centroids_mm
    pred_index: int         # index into ClipDetection.pred_centroids_mm
    error_mm: float         # centroid distance
    overlap: bool           # the two components share at least one voxel


@dataclass
class ClipDetection:
    true_positives: int
    missed: int
    false_positives: int
    matches: list[ClipMatch] = field(default_factory=list)
    ref_centroids_mm: list[tuple[float, ...]] = field(default_factory=list)
    pred_centroids_mm: list[tuple[float, ...]] = field(default_factory=list)
    ref_voxels: list[int] = field(default_factory=list)
    pred_voxels: list[int] = field(default_factory=list)

    @property
    def counts(self) -> tuple[int, int, int]:
        """(true positives, missed, false positives)."""
        return self.true_positives, self.missed, self.false_positives

    @property
    def centroid_errors_mm(self) -> list[float]:
        return [m.error_mm for m in self.matches]

    @property
    def sensitivity(self) -> float:
        n = self.true_positives + self.missed
        return self.true_positives / n if n else math.nan

    @property
    def precision(self) -> float:
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else math.nan

    @property
    def missed_indices(self) -> list[int]:
        hit = {m.ref_index for m in self.matches}
        return [i for i in range(len(self.ref_centroids_mm)) if i not in hit]

    @property
    def false_positive_indices(self) -> list[int]:
        hit = {m.pred_index for m in self.matches}
        return [i for i in range(len(self.pred_centroids_mm)) if i not in hit]

    def as_dict(self) -> dict:
        return {"true_positives": self.true_positives, "missed": self.missed,
                "false_positives": self.false_positives, "sensitivity": self.sensitivity,
                "precision": self.precision, "centroid_errors_mm": self.centroid_errors_mm,
                "matches": [vars(m) for m in self.matches],
                "ref_centroids_mm": [list(c) for c in self.ref_centroids_mm],
                "pred_centroids_mm": [list(c) for c in self.pred_centroids_mm]}


def detect_clips(ref: np.ndarray, pred: np.ndarray, spacing_zyx, tolerance_mm: float = 5.0,
                 origin_zyx=None, min_voxels: int = 1) -> ClipDetection:
    """Match predicted clip components to reference clips one-to-one (see module docstring)."""
    ref = np.asarray(ref, bool)
    pred = np.asarray(pred, bool)
    if ref.shape != pred.shape:
        raise ValueError(f"ref and pred must have the same shape, got {ref.shape} and {pred.shape}")
    if len(spacing_zyx) != ref.ndim:
        raise ValueError(f"spacing {tuple(spacing_zyx)} does not match {ref.ndim}D masks")
    lab_r, c_r, n_r = components(ref, spacing_zyx, origin_zyx, min_voxels)
    lab_p, c_p, n_p = components(pred, spacing_zyx, origin_zyx, min_voxels)
    nr, npd = len(c_r), len(c_p)
    matches: list[ClipMatch] = []
    if nr and npd:
        dist = np.linalg.norm(c_r[:, None, :] - c_p[None, :, :], axis=2)
        overlap = np.zeros((nr, npd), bool)
        both = (lab_r > 0) & (lab_p > 0)
        overlap[lab_r[both] - 1, lab_p[both] - 1] = True
        feasible = overlap | (dist <= tolerance_mm)
        if feasible.any():
            # an infeasible pair costs more than all feasible pairs together, so the assignment first
            # maximises the number of feasible pairs, then minimises their summed distance
            big = float(dist[feasible].sum()) + 1.0
            cost = np.where(feasible, dist, big)
            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols):
                if feasible[i, j]:
                    matches.append(ClipMatch(int(i), int(j), float(dist[i, j]), bool(overlap[i, j])))
    matches.sort(key=lambda m: m.ref_index)
    tp = len(matches)
    return ClipDetection(tp, nr - tp, npd - tp, matches,
                         [tuple(map(float, c)) for c in c_r], [tuple(map(float, c)) for c in c_p],
                         [int(s) for s in n_r], [int(s) for s in n_p])
