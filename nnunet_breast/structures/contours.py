"""Planar contours <-> binary masks on one CT slice (the geometry behind RTSTRUCT import/export).

DICOM RTSTRUCT stores every structure as CLOSED_PLANAR polygons per slice, in patient mm. Training
needs voxel masks, and exporting predictions to a treatment-planning system (TPS) needs polygons
again. The caller converts mm <-> pixel index; this module works purely in *pixel index
coordinates* of one slice: a vertex is ``(x, y) = (col, row)`` and pixel ``(r, c)`` has its centre
exactly at ``(x=c, y=r)``.

Conventions
-----------
* **Centre-inside**: a pixel belongs to the mask when its centre lies inside the polygon set.
* **Even-odd over the whole plane**: all polygons of a slice are combined with the even-odd (XOR)
  rule, as RTSTRUCT readers do: a polygon inside another is a hole, an island inside that hole is
  filled again, disjoint polygons are separate islands. Orientation is irrelevant.
* **Centres exactly on an edge** follow a half-open (top-left) rule: an edge is crossed by scanline
  ``y`` when ``min(y0, y1) <= y < max(y0, y1)``, and a centre exactly on a crossing belongs to the
  span to its right. An axis-aligned square ``[a, b) x [a, b)`` with integer corners therefore covers
  exactly ``(b - a)**2`` pixels, and polygons sharing an edge never double-cover a pixel.
* :func:`mask_to_polygons` traces marching-squares iso-contours at 0.5, whose vertices lie on
  midpoints between pixel centres, so no centre is ever on an edge and
  ``polygons_to_mask(mask_to_polygons(m), m.shape) == m`` holds exactly for any binary mask.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["polygons_to_mask", "mask_to_polygons", "polygon_area"]


def _as_ring(poly: np.ndarray | Sequence) -> np.ndarray | None:
    """(N, 2) float ring without the closing duplicate, or None if it has < 3 distinct vertices."""
    p = np.asarray(poly, dtype=np.float64)
    if p.size == 0:
        return None
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"polygon must be an (N, 2) array of (x, y), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("polygon contains non-finite coordinates")
    if len(p) > 1 and np.array_equal(p[0], p[-1]):
        p = p[:-1]
    differs = np.any(p != p[0], axis=1)  # >= 3 distinct: some q != p[0], and some point != p[0], q
    if not differs.any() or not np.any(differs & np.any(p != p[np.argmax(differs)], axis=1)):
        return None
    return p


def polygons_to_mask(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise closed planar polygons (pixel-index ``(x=col, y=row)``) onto a ``(rows, cols)`` grid.

    Even-odd rule over all polygons together, centre-inside with the half-open rule described in the
    module docstring. Polygons may be given closed (last == first) or open; those with fewer than 3
    distinct vertices are ignored; vertices outside the grid are fine. Vectorised scanline fill: all
    edge/scanline crossings are generated at once, each toggles the pixels at and right of it.
    """
    rows, cols = int(shape[0]), int(shape[1])
    mask = np.zeros((rows, cols), dtype=bool)
    rings = [ring for ring in map(_as_ring, polygons) if ring is not None]
    if not rings or rows == 0 or cols == 0:
        return mask
    start = np.concatenate(rings)
    end = np.concatenate([np.roll(ring, -1, axis=0) for ring in rings])
    x0, y0, x1, y1 = start[:, 0], start[:, 1], end[:, 0], end[:, 1]
    keep = y0 != y1  # horizontal edges never cross a scanline under the half-open rule
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]

    # Integer scanlines r with min(y0, y1) <= r < max(y0, y1), clipped to the grid.
    r_lo = np.maximum(np.ceil(np.minimum(y0, y1)), 0).astype(np.int64)
    r_hi = np.minimum(np.ceil(np.maximum(y0, y1)) - 1, rows - 1).astype(np.int64)
    n = np.maximum(r_hi - r_lo + 1, 0)
    total = int(n.sum())
    if total == 0:
        return mask
    first = np.cumsum(n) - n  # offset of each edge's first crossing in the flat crossing list
    edge = np.repeat(np.arange(len(n)), n)
    r = np.repeat(r_lo - first, n) + np.arange(total)
    slope = (x1 - x0) / (y1 - y0)
    x = x0[edge] + (r - y0[edge]) * slope[edge]

    # A crossing at x toggles every pixel centre c >= x; parity of toggles = even-odd inside test.
    c = np.maximum(np.ceil(x), 0).astype(np.int64)
    on_grid = c < cols  # crossings right of the last centre toggle nothing
    toggles = np.bincount(r[on_grid] * cols + c[on_grid], minlength=rows * cols)
    toggles = toggles.astype(np.uint8).reshape(rows, cols)  # wraps mod 256: parity (bit 0) kept
    np.bitwise_xor.accumulate(toggles, axis=1, out=toggles)  # bit 0 of a running XOR = parity
    toggles &= 1
    return toggles.view(bool)


def mask_to_polygons(mask2d: np.ndarray, simplify_tolerance: float = 0.0) -> list[np.ndarray]:
    """Closed contours ``(N, 2)`` of ``(x=col, y=row)`` whose even-odd fill reproduces ``mask2d``.

    The first point is not repeated at the end. Outer boundaries and holes are returned as traced
    (no orientation is imposed): RTSTRUCT readers combine the contours of a plane with even-odd /
    XOR, exactly like :func:`polygons_to_mask`. With ``simplify_tolerance > 0`` (pixels) each contour
    is reduced with Douglas-Peucker (``skimage.measure.approximate_polygon``) for TPS export; the
    round trip is then approximate. Degenerate (< 3 vertex) contours are dropped.
    """
    from skimage.measure import approximate_polygon, find_contours

    m = np.asarray(mask2d)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {m.shape}")
    padded = np.pad(m.astype(bool), 1).astype(np.float64)
    if not padded.any():
        return []
    out: list[np.ndarray] = []
    for contour in find_contours(padded, 0.5, fully_connected="low"):
        if simplify_tolerance > 0:
            contour = approximate_polygon(contour, tolerance=float(simplify_tolerance))
        xy = contour[:, ::-1] - 1.0  # (row, col) of padded grid -> (x=col, y=row) of the original
        if len(xy) > 1 and np.array_equal(xy[0], xy[-1]):
            xy = xy[:-1]
        if len(xy) >= 3 and polygon_area(xy) > 0:
            out.append(np.ascontiguousarray(xy))
    return out


def polygon_area(poly: np.ndarray | Sequence) -> float:
    """Absolute area of a simple polygon (shoelace), in squared input units; open or closed input."""
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)
