"""Tumour-bed boost *proposal* from predicted surgical clips, for the physician to edit in the TPS.

The proposal is the convex hull of the clips that are kept, grown by an isotropic margin in mm and,
optionally, cut to a body or breast mask:

* **Clips.** Every connected component (26-connectivity) of the clip mask is one clip
  (:func:`nnunet_breast.volumes.components.components`).
* **Outliers.** With three clips or more, a clip whose centroid lies more than ``outlier_mm`` from the
  spatial (geometric) median of all clip centroids is left out and reported. The coordinate-wise median
  is not used: it jumps between the walls of the cavity when a single far clip is added. With one or two clips there is
  no majority to compare with, so nothing is left out (the note says so when the two clips lie far apart).
* **Hull.** Each voxel of a kept clip is a box (its eight corners), so one clip, two clips or clips in
  one plane still give a solid, non-degenerate hull: one single-voxel clip is a one-voxel box.
* **Margin.** The hull is grown by a true Euclidean margin: the Minkowski sum of the hull polytope and a
  ball of radius ``margin_mm`` (the ball is a volume-matched polyhedron with 256 vertices, within about
  0.5 % of the radius). It is computed in mm, so it is the same physical margin on any anisotropic grid,
  e.g. 3 mm slices.
* **Voxels.** A voxel belongs to the proposal when its centre lies inside the grown hull. The polytope is
  rasterised exactly, row by row, from its facet half-spaces.

Arrays are ``[z, y, x]`` and spacing is ``(z, y, x)`` in mm (reverse SimpleITK's ``GetSpacing()``).
The direction matrix is not needed: it only turns and flips the grid, which keeps every distance, so hull
and margin are the same in any patient orientation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import ConvexHull

from nnunet_breast.volumes.components import components

__all__ = ["ExcludedClip", "TumourBedProposal", "propose_tumour_bed"]

_BALL_VERTICES = 256
_TOL_MM = 1e-6
_CHUNK = 4_000_000  # rows x facets per block while rasterising


@dataclass(frozen=True)
class ExcludedClip:
    index: int                        # component index (0-based, order of ``components``)
    centroid_mm: tuple[float, ...]    # (z, y, x) mm from the array corner (voxel [0, 0, 0] centre)
    distance_mm: float                # distance from the median of all clip centroids


@dataclass
class TumourBedProposal:
    mask: np.ndarray                  # bool [z, y, x]; all False when no proposal could be made
    clips_used: int
    clips_excluded: list[ExcludedClip] = field(default_factory=list)
    margin_mm: float = 0.0
    volume_cc: float = 0.0
    note: str = ""

    @property
    def empty(self) -> bool:
        return not bool(self.mask.any())


def _fibonacci_ball(radius: float) -> np.ndarray:
    """Vertices of a polyhedron with the volume of a ball of ``radius`` (the ball's stand-in)."""
    n = _BALL_VERTICES
    i = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / n)
    azimuth = math.pi * (1.0 + 5.0 ** 0.5) * i
    pts = np.stack([np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)], axis=1)
    scale = (4.0 / 3.0 * math.pi / ConvexHull(pts).volume) ** (1.0 / 3.0)
    return pts * (radius * scale)


def _hull_points_mm(clips: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Corners (mm) of the clip voxels that can be vertices of the hull.

    Only the first and last voxel of each x-row can contribute a hull vertex; the others lie between
    them. Voxel (k, j, i) spans [k - 0.5, k + 0.5] x ... in index units.
    """
    idx = np.argwhere(clips)  # C order: sorted by z, then y, then x
    key = idx[:, 0].astype(np.int64) * clips.shape[1] + idx[:, 1]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    last = np.r_[first[1:] - 1, len(idx) - 1]
    ends = np.unique(np.concatenate([idx[first], idx[last]]), axis=0)
    offsets = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    corners = np.unique((ends[:, None, :] + offsets[None]).reshape(-1, 3), axis=0)
    return (corners - 0.5) * spacing


def _rasterise(equations: np.ndarray, vertices: np.ndarray, shape, spacing: np.ndarray) -> np.ndarray:
    """Bool mask of the voxels whose centres satisfy every half-space ``n . p + b <= 0`` (p in mm)."""
    out = np.zeros(shape, bool)
    lo = np.maximum(np.ceil(vertices.min(axis=0) / spacing - 1e-9).astype(int), 0)
    hi = np.minimum(np.floor(vertices.max(axis=0) / spacing + 1e-9).astype(int), np.array(shape) - 1)
    if np.any(hi < lo):
        return out
    zs = np.arange(lo[0], hi[0] + 1)
    ys = np.arange(lo[1], hi[1] + 1)
    zz, yy = np.meshgrid(zs, ys, indexing="ij")
    zz, yy = zz.ravel(), yy.ravel()
    normal, offset = equations[:, :3], equations[:, 3]
    nx = normal[:, 2]
    pos, neg, flat = nx > 1e-12, nx < -1e-12, np.abs(nx) <= 1e-12
    xs = np.arange(lo[2], hi[2] + 1)
    step = max(1, _CHUNK // len(equations))
    for s in range(0, len(zz), step):
        z, y = zz[s:s + step], yy[s:s + step]
        # c = n_z z + n_y y + b per row and facet; inside needs n_x x <= -c (+ tolerance)
        c = (np.outer(z * spacing[0], normal[:, 0]) + np.outer(y * spacing[1], normal[:, 1]) + offset) - _TOL_MM
        bound = -c
        x_hi = np.min(np.where(pos, bound / np.where(pos, nx, 1.0), np.inf), axis=1)
        x_lo = np.max(np.where(neg, bound / np.where(neg, nx, 1.0), -np.inf), axis=1)
        ok = np.all(~flat | (bound >= 0.0), axis=1)
        x_mm = xs * spacing[2]
        rows = ok[:, None] & (x_mm[None, :] >= x_lo[:, None]) & (x_mm[None, :] <= x_hi[:, None])
        out[z[:, None], y[:, None], xs[None, :]] = rows
    return out


def _spatial_median(points: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Geometric (spatial) median, by Weiszfeld's iteration.

    Unlike the coordinate-wise median it does not jump from one group of clips to another when one far
    clip is added (e.g. clips on the deep and the superficial wall of a cavity).
    """
    x = points.mean(axis=0)
    for _ in range(iterations):
        d = np.linalg.norm(points - x, axis=1)
        if np.any(d < 1e-9):  # on a data point: keep it unless the others pull it off
            at = d < 1e-9
            pull = ((points[~at] - x) / d[~at, None]).sum(axis=0)
            if np.linalg.norm(pull) <= at.sum():
                return x
            d = np.where(at, 1e-9, d)
        w = 1.0 / d
        new = (points * w[:, None]).sum(axis=0) / w.sum()
        if np.linalg.norm(new - x) < 1e-6:
            return new
        x = new
    return x


def _bounding_box(mask: np.ndarray):
    """Slices of the smallest box holding every True voxel, or None for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _check_args(clip_mask, spacing_zyx, margin_mm, within, outlier_mm, min_clips):
    mask = np.asarray(clip_mask)
    if mask.ndim != 3:
        raise ValueError(f"clip_mask must be 3-D [z, y, x], got {mask.ndim}-D shape {mask.shape}")
    spacing = np.asarray(spacing_zyx, np.float64).ravel()
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing_zyx must be three positive numbers (mm), got {spacing_zyx!r}")
    if not math.isfinite(float(margin_mm)) or margin_mm < 0:
        raise ValueError(f"margin_mm must be a finite number >= 0, got {margin_mm!r}")
    if outlier_mm is not None and (not math.isfinite(float(outlier_mm)) or outlier_mm <= 0):
        raise ValueError(f"outlier_mm must be > 0 or None, got {outlier_mm!r}")
    if isinstance(min_clips, bool) or int(min_clips) != min_clips or min_clips < 1:
        raise ValueError(f"min_clips must be an integer >= 1, got {min_clips!r}")
    inside = None
    if within is not None:
        inside = np.asarray(within)
        if inside.shape != mask.shape:
            raise ValueError(f"within has shape {inside.shape}, clip_mask has shape {mask.shape}")
        inside = inside.astype(bool)
    return mask.astype(bool), spacing, inside


def propose_tumour_bed(clip_mask: np.ndarray, spacing_zyx, *, margin_mm: float = 10.0,
                       within: np.ndarray | None = None, outlier_mm: float | None = 40.0,
                       min_clips: int = 1, min_voxels: int = 1) -> TumourBedProposal:
    """Tumour-bed proposal: hull of the kept clips + ``margin_mm``, cut to ``within`` (see module doc).

    ``min_voxels`` drops clip components smaller than that many voxels before anything else (speckle in a
    predicted mask). An empty prediction, or fewer than ``min_clips`` clips left, gives an empty mask and
    a note saying why; bad arguments raise ``ValueError``.
    """
    mask, spacing, inside = _check_args(clip_mask, spacing_zyx, margin_mm, within, outlier_mm, min_clips)
    margin_mm = float(margin_mm)
    empty = np.zeros(mask.shape, bool)
    box = _bounding_box(mask)
    if box is None:
        labels, centroids = np.zeros((0, 0, 0), np.int32), np.zeros((0, 3))
    else:  # label inside the clips' bounding box only: a CT is large, clips are few
        labels, centroids, _sizes = components(mask[box], spacing, min_voxels=min_voxels)
        centroids = centroids + np.array([b.start for b in box]) * spacing
    n = len(centroids)
    if n == 0:
        return TumourBedProposal(empty, 0, [], margin_mm, 0.0,
                                 "no proposal: no clips in the clip mask" +
                                 (f" (none of >= {min_voxels} voxels)" if min_voxels > 1 else ""))

    keep = np.ones(n, bool)
    excluded: list[ExcludedClip] = []
    notes: list[str] = []
    if outlier_mm is not None and n >= 3:
        dist = np.linalg.norm(centroids - _spatial_median(centroids), axis=1)
        keep = dist <= outlier_mm
        excluded = [ExcludedClip(int(i), tuple(float(v) for v in centroids[i]), float(dist[i]))
                    for i in np.flatnonzero(~keep)]
        if excluded:
            notes.append(f"{len(excluded)} of {n} clips excluded as outliers (> {outlier_mm:g} mm from the "
                         "spatial median of the clip centroids): " + ", ".join(
                             f"#{e.index} at {e.distance_mm:.0f} mm" for e in excluded))
    elif outlier_mm is not None and n == 2:
        gap = float(np.linalg.norm(centroids[0] - centroids[1]))
        if gap > 2 * outlier_mm:
            notes.append(f"only 2 clips, {gap:.0f} mm apart: no outlier check possible, check both")

    used = int(keep.sum())
    if used < min_clips:
        why = (f"no proposal: {used} clip(s) left after outlier exclusion, {min_clips} required" if excluded
               else f"no proposal: {used} clip(s) found, {min_clips} required")
        return TumourBedProposal(empty, used, excluded, margin_mm, 0.0, "; ".join([why] + notes))

    kept = np.zeros(mask.shape, bool)
    kept[box] = np.isin(labels, np.flatnonzero(keep) + 1)
    points = _hull_points_mm(kept, spacing)
    hull = ConvexHull(points)
    vertices = points[hull.vertices]
    if margin_mm > 0:
        grown = (vertices[:, None, :] + _fibonacci_ball(margin_mm)[None]).reshape(-1, 3)
        hull = ConvexHull(grown)
        vertices = grown[hull.vertices]
    out = _rasterise(hull.equations, vertices, mask.shape, spacing)

    span = float(np.max(np.linalg.norm(centroids[keep][:, None] - centroids[keep][None], axis=2)))
    text = [f"convex hull of {used} clip(s) (centroids span {span:.0f} mm) + {margin_mm:g} mm margin"]
    if inside is not None:
        before = int(out.sum())
        out &= inside
        cut = before - int(out.sum())
        text.append(f"cut to the given mask ({cut * float(np.prod(spacing)) / 1000.0:.1f} cc removed)")
        if not out.any():
            text.append("nothing left inside the given mask")
    volume_cc = int(out.sum()) * float(np.prod(spacing)) / 1000.0
    text.append(f"{volume_cc:.1f} cc")
    return TumourBedProposal(out, used, excluded, margin_mm, volume_cc, "; ".join(text + notes))
