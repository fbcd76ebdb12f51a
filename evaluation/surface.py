"""Overlap and surface-distance metrics for RT structures, in millimetres, for anisotropic CT grids.

Arrays are boolean masks indexed ``[z, y, x]`` (or ``[y, x]`` for a single 2D plane) and the spacing is
given in the same order, ``(z, y, x)`` mm: reverse SimpleITK's ``GetSpacing()``, which is ``(x, y, z)``.

Convention: surface elements weighted by area (DeepMind ``surface-distance``)
-----------------------------------------------------------------------------
Most auto-contouring papers cite DeepMind's ``surface-distance`` library (Nikolov et al. 2018) for HD95,
average surface distance and surface Dice, and this module follows its convention. It is a separate
implementation: the area table is derived here, and the library's code is not copied.

* **Surface.** Consider every 2x2x2 block of neighbouring voxels (the cells of a marching-cubes grid
  whose corners are voxel centres). A block whose corners are neither all inside nor all outside the
  mask holds a piece of the iso-surface. That piece is one surface element ("surfel"). It sits at the
  block centre, which is a half-voxel offset from the voxel grid, and its weight is the area in mm² of the
  marching-cubes triangles inside the block.
* **Area table.** The 256 corner configurations are triangulated once with
  :func:`skimage.measure.marching_cubes` (``method="lorensen"``, the classic table) applied to the single
  2x2x2 block. A configuration with more than four inside corners takes the triangles of its complement,
  because the classic table is complement-symmetric (a configuration and its inverse bound the same
  surface). On ambiguous faces this keeps the inside corners apart. For a given spacing every triangle
  vertex is scaled by the spacing and the triangle areas are summed. This is the same as scaling each
  unit-spacing area normal by ``(s_y s_x, s_z s_x, s_z s_y)``, which is what DeepMind does. At unit
  spacing the resulting per-configuration areas equal DeepMind's table, e.g. ``sqrt(3)/8`` for one
  corner, ``sqrt(2)/2`` for an edge pair and ``1`` for a face.
  In 2D the 16 marching-squares configurations give contour lengths in mm instead of areas. A saddle
  counts as two corner segments.
* **Distances.** An exact Euclidean distance transform in mm
  (``scipy.ndimage.distance_transform_edt(sampling=spacing)``) is computed from the border blocks of
  the *other* mask and read at this mask's surfels. The distance is therefore taken between block
  centres: surfel to nearest surfel of the other surface.
* **HD_p** (``hd95``, p = ``percentile``) is the maximum of the two *directed, area-weighted*
  percentiles. The directed value is the smallest distance ``d`` such that surfels with distance
  ``<= d`` cover at least p % of the surface area, with no interpolation. A relative tolerance of 1e-9
  on the cumulative area absorbs floating-point round-off; otherwise this equals DeepMind's
  ``compute_robust_hausdorff``. **HD** is the maximum distance in either direction.
* **ASD** is the area-weighted mean of the directed distances (``asd_ref_to_pred``,
  ``asd_pred_to_ref``). **ASSD** is the mean of those two values. DeepMind returns the pair and papers
  usually report their mean.
* **Surface Dice at tolerance tau**:
  ``(area of ref surfels within tau of pred + area of pred surfels within tau of ref)
  / (area ref + area pred)``. The comparison is ``<=``, as in DeepMind.
* **DSC and volumes** count voxels. Volumes are in cc: ``n_voxels * prod(spacing) / 1000``, and
  ``volume_diff_cc = pred - ref``.

How other libraries differ (values are not interchangeable across papers)
-------------------------------------------------------------------------
* **MedPy** (``medpy.metric.binary.hd95 / hd / asd / assd``) takes the *border voxels*, i.e. the mask
  minus its binary erosion. Their centres lie on the voxel grid, not at half-voxel block centres. It
  gives each border voxel the same weight, with no area weighting, so densely sampled regions (thin
  slices, oblique walls) count more. Its ``hd95`` is ``numpy.percentile`` with linear interpolation of
  the *union* of both directed distance sets, not the maximum of two directed percentiles, so it
  usually comes out lower than ours. ``assd`` is the mean of the two unweighted directed means. It
  raises ``RuntimeError`` on an empty mask.
* **MONAI** (``compute_hausdorff_distance``, ``compute_average_surface_distance``) also uses border
  voxels from an erosion. ``percentile`` is an unweighted, interpolated ``np.percentile`` over each
  direction and the result is their maximum by default (``directed=True`` gives one direction only).
  The average surface distance is pred -> ref only by default. ``symmetric=True`` averages the
  *concatenated* distances of both directions, so a surface with more points weighs more. MONAI's
  ``SurfaceDiceMetric(use_subvoxels=True)`` is the variant closest to this convention. An empty mask
  gives ``nan``/``inf`` with a warning.
* Here, as in DeepMind, the surface is sampled by surfels weighted by their area in mm². This makes the
  result nearly independent of how finely the surface is sampled along the coarse slice axis.

Empty masks: see :data:`nnunet_breast.evaluation.metrics.EMPTY_POLICY`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from nnunet_breast.volumes.components import bounding_box

__all__ = ["SurfaceDistances", "compute_surface_distances", "surfel_area_table", "neighbour_codes",
           "weighted_percentile", "validate_masks", "union_crop", "surface_distances_cropped"]

_PERCENTILE_RTOL = 1e-9


# --------------------------------------------------------------------------------------------------
# Surfel area tables
# --------------------------------------------------------------------------------------------------

def _corner_offsets(ndim: int) -> list[tuple[int, ...]]:
    """Corner offsets of a 2^ndim block; corner ``k`` is bit ``k`` of the neighbour code.

    Bit order: ``bit = 4*dz + 2*dy + dx`` in 3D and ``bit = 2*dy + dx`` in 2D.
    """
    return [tuple((k >> (ndim - 1 - a)) & 1 for a in range(ndim)) for k in range(2 ** ndim)]


@lru_cache(maxsize=None)
def _unit_triangles() -> tuple[np.ndarray, np.ndarray]:
    """Triangles of every 3D configuration at unit spacing: vertices (T, 3, 3) and their codes (T,)."""
    from skimage.measure import marching_cubes

    corners = _corner_offsets(3)
    per_code: dict[int, np.ndarray] = {}
    for code in range(1, 255):
        if bin(code).count("1") > 4:
            continue
        block = np.zeros((2, 2, 2), np.float32)
        for bit, off in enumerate(corners):
            if code >> bit & 1:
                block[off] = 1.0
        verts, faces, _, _ = marching_cubes(block, level=0.5, method="lorensen", allow_degenerate=False)
        # binary corners at level 0.5: every vertex is an edge midpoint, i.e. a multiple of 1/2
        verts = np.round(verts.astype(np.float64) * 2.0) / 2.0
        per_code[code] = verts[faces]
    for code in range(1, 255):
        if code not in per_code:        # more than 4 inside corners: the complement's surface
            per_code[code] = per_code[255 - code]
    tris = np.concatenate([per_code[c] for c in sorted(per_code)])
    codes = np.concatenate([np.full(len(per_code[c]), c) for c in sorted(per_code)])
    return tris, codes


@lru_cache(maxsize=None)
def _unit_segments() -> tuple[np.ndarray, np.ndarray]:
    """Marching-squares segments of every 2D configuration: endpoints (S, 2, 2) and codes (S,)."""
    corners = _corner_offsets(2)                       # (0,0) (0,1) (1,0) (1,1)
    edges = [((0, 0), (0, 1)), ((0, 1), (1, 1)), ((1, 1), (1, 0)), ((1, 0), (0, 0))]  # ring order
    segs, codes = [], []
    for code in range(1, 15):
        inside = {off: bool(code >> bit & 1) for bit, off in enumerate(corners)}
        mid = {e: np.add(e[0], e[1]) / 2.0 for e in edges}
        crossing = [e for e in edges if inside[e[0]] != inside[e[1]]]
        if len(crossing) == 2:
            pairs = [(crossing[0], crossing[1])]
        else:                                           # saddle: cut off each inside corner separately
            pairs = [tuple(e for e in edges if c in e) for c in corners if inside[c]]
        for a, b in pairs:
            segs.append(np.stack([mid[a], mid[b]]))
            codes.append(code)
    return np.array(segs, np.float64), np.array(codes)


@lru_cache(maxsize=64)
def _area_table_cached(spacing: tuple[float, ...]) -> np.ndarray:
    s = np.asarray(spacing, np.float64)
    if len(spacing) == 3:
        tris, codes = _unit_triangles()
        v = tris * s
        a = 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)
        table = np.bincount(codes, weights=a, minlength=256)
    else:
        segs, codes = _unit_segments()
        a = np.linalg.norm((segs[:, 1] - segs[:, 0]) * s, axis=1)
        table = np.bincount(codes, weights=a, minlength=16)
    table.setflags(write=False)
    return table


def surfel_area_table(spacing) -> np.ndarray:
    """Surfel area in mm² (contour length in mm for 2D) for every neighbour code, at ``spacing``.

    3D: 256 entries, code bit ``4*dz + 2*dy + dx`` set when that corner of the 2x2x2 block is inside.
    2D: 16 entries, bit ``2*dy + dx``. Entries 0 and the all-inside code are 0.
    """
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) not in (2, 3):
        raise ValueError(f"spacing must have 2 or 3 entries, got {spacing}")
    return _area_table_cached(spacing)


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbour code of every 2^ndim block of ``mask`` after padding it with one empty voxel per side.

    The result has shape ``mask.shape + 1``; block ``i`` spans voxels ``i-1`` and ``i`` of ``mask`` on
    every axis, so its centre lies at voxel coordinate ``i - 0.5``.
    """
    mask = np.asarray(mask, bool)
    nd = mask.ndim
    padded = np.pad(mask, 1).view(np.uint8)
    out_shape = tuple(n + 1 for n in mask.shape)
    code = np.zeros(out_shape, np.uint8)
    for bit, off in enumerate(_corner_offsets(nd)):
        sl = tuple(slice(o, o + n) for o, n in zip(off, out_shape))
        code |= padded[sl] << np.uint8(bit)
    return code


# --------------------------------------------------------------------------------------------------
# Surface distances
# --------------------------------------------------------------------------------------------------

def weighted_percentile(sorted_values: np.ndarray, weights: np.ndarray, percentile: float) -> float:
    """Smallest value whose cumulative weight reaches ``percentile`` % of the total (no interpolation).

    ``sorted_values`` must be ascending. Empty input gives NaN. 100 gives the maximum and 0 the minimum.
    """
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {percentile}")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if percentile >= 100:
        return float(sorted_values[-1])
    cum = np.cumsum(weights, dtype=np.float64)
    target = percentile / 100.0 * cum[-1] * (1.0 - _PERCENTILE_RTOL)
    idx = int(np.searchsorted(cum, target, side="left"))
    return float(sorted_values[min(idx, n - 1)])


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surfel distances in both directions, each sorted ascending with its surfel areas.

    Areas are mm² in 3D and contour lengths in mm in 2D. Where one mask is empty its arrays are empty and
    the other direction's distances are ``inf``. The methods then return NaN for every distance.
    """
    distances_ref_to_pred: np.ndarray
    areas_ref: np.ndarray
    distances_pred_to_ref: np.ndarray
    areas_pred: np.ndarray

    @property
    def area_ref(self) -> float:
        return float(self.areas_ref.sum())

    @property
    def area_pred(self) -> float:
        return float(self.areas_pred.sum())

    @property
    def comparable(self) -> bool:
        """True when both surfaces exist, so that distances are defined."""
        return len(self.areas_ref) > 0 and len(self.areas_pred) > 0

    def directed_hausdorff(self, percentile: float = 100.0) -> tuple[float, float]:
        """(ref -> pred, pred -> ref) area-weighted percentile distances in mm."""
        if not self.comparable:
            return math.nan, math.nan
        return (weighted_percentile(self.distances_ref_to_pred, self.areas_ref, percentile),
                weighted_percentile(self.distances_pred_to_ref, self.areas_pred, percentile))

    def hausdorff(self, percentile: float = 100.0) -> float:
        """Max of the two directed percentiles: HD at 100, HD95 at 95."""
        a, b = self.directed_hausdorff(percentile)
        return max(a, b) if self.comparable else math.nan

    def average_distances(self) -> tuple[float, float]:
        """(ref -> pred, pred -> ref) area-weighted mean distances in mm."""
        if not self.comparable:
            return math.nan, math.nan
        return (float((self.distances_ref_to_pred * self.areas_ref).sum() / self.areas_ref.sum()),
                float((self.distances_pred_to_ref * self.areas_pred).sum() / self.areas_pred.sum()))

    def assd(self) -> float:
        a, b = self.average_distances()
        return 0.5 * (a + b)

    def surface_dice(self, tolerance_mm: float) -> float:
        """Share of both surfaces lying within ``tolerance_mm`` of the other. NaN when both are empty."""
        total = self.area_ref + self.area_pred
        if total == 0:
            return math.nan
        within = (self.areas_ref[self.distances_ref_to_pred <= tolerance_mm].sum()
                  + self.areas_pred[self.distances_pred_to_ref <= tolerance_mm].sum())
        return float(within / total)


def validate_masks(ref, pred, spacing_zyx) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    if ref.shape != pred.shape:
        raise ValueError(f"ref and pred must have the same shape, got {ref.shape} and {pred.shape}")
    if ref.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D [y, x] or 3D [z, y, x], got {ref.ndim} dimensions")
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != ref.ndim:
        raise ValueError(f"spacing {spacing} does not match {ref.ndim}D masks (give it in [z, y, x] order)")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return ref.astype(bool, copy=False), pred.astype(bool, copy=False), spacing


def _bbox(mask: np.ndarray) -> list[tuple[int, int]] | None:
    """Inclusive index range per axis of the True voxels, or None."""
    box = bounding_box(mask)
    return None if box is None else [(b.start, b.stop - 1) for b in box]


def union_crop(ref: np.ndarray, pred: np.ndarray):
    """Crop both masks to the bounding box of their union. Returns None when both are empty."""
    boxes = [b for b in (_bbox(ref), _bbox(pred)) if b is not None]
    if not boxes:
        return None
    sl = tuple(slice(min(b[a][0] for b in boxes), max(b[a][1] for b in boxes) + 1) for a in range(ref.ndim))
    return ref[sl], pred[sl]


def _surfels(mask: np.ndarray, table: np.ndarray):
    codes = neighbour_codes(mask)
    border = (codes != 0) & (codes != len(table) - 1)
    return border, table[codes[border]]


def _directed(border_from: np.ndarray, border_to: np.ndarray, spacing) -> np.ndarray:
    n = int(np.count_nonzero(border_from))
    if not border_to.any():
        return np.full(n, np.inf)
    dist = ndimage.distance_transform_edt(~border_to, sampling=spacing)
    return dist[border_from]


def compute_surface_distances(ref: np.ndarray, pred: np.ndarray, spacing_zyx) -> SurfaceDistances:
    """Surfel-to-surface distances (mm) and surfel areas (mm²) in both directions. See module docstring.

    Both masks are first cropped to the bounding box of their union. The block grid adds the one-voxel
    margin, so nothing outside the crop can change a distance.
    """
    ref, pred, spacing = validate_masks(ref, pred, spacing_zyx)
    cropped = union_crop(ref, pred)
    if cropped is None:
        e = np.zeros(0)
        return SurfaceDistances(e, e.copy(), e.copy(), e.copy())
    return surface_distances_cropped(*cropped, spacing)


def surface_distances_cropped(ref_c: np.ndarray, pred_c: np.ndarray, spacing) -> SurfaceDistances:
    table = surfel_area_table(spacing)
    border_ref, areas_ref = _surfels(ref_c, table)
    border_pred, areas_pred = _surfels(pred_c, table)
    d_rp = _directed(border_ref, border_pred, spacing)
    d_pr = _directed(border_pred, border_ref, spacing)
    o_rp = np.argsort(d_rp, kind="stable")
    o_pr = np.argsort(d_pr, kind="stable")
    return SurfaceDistances(d_rp[o_rp], areas_ref[o_rp], d_pr[o_pr], areas_pred[o_pr])
