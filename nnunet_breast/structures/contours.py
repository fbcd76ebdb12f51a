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

Tracing (:func:`mask_to_polygons`)
-------------------------------------
A TPS computes a structure's volume from its polygons' areas, so every contour is made as large as the pixels
it encloses: **its area equals the number of pixel centres inside it** (each pixel 1 x 1), hence the even-odd
area of a plane's contours equals the mask's pixel area, hole by hole, island by island, while their even-odd
fill still gives back exactly the mask. How:

1. **Where the contour may run.** Marching squares at 0.5 (background 8-connected, so pixels touching at a
   corner are separate contours) gives the topology: which pixel edges each contour crosses, in which order.
   On the mask itself its vertices are the midpoints between inside and outside centres (the *staircase*);
   its area falls short by half a pixel per contour (an eighth cut off each outward corner).
2. **Smooth.** The same marching squares on the mask blurred with a Gaussian (:data:`SMOOTH_SIGMA` px), each
   pixel clamped to its own side of 0.5 (:data:`SIDE_MARGIN`), crosses the very same pixel edges, only at
   sub-pixel points that follow the blurred boundary instead of the pixel steps: the same pixel centres
   inside, a smooth line. Douglas-Peucker (:data:`SIMPLIFY_TOLERANCE` px) then drops the vertices a straight
   run does not need.
3. **Area.** Each contour is offset along its outward normals (mitred corners) by the distance that makes its
   area equal to its enclosed pixel count; the area of a mitred offset is a quadratic in the distance, solved
   exactly. A hole's contour grows into the structure just as an outer contour grows out of it.
4. **Checks, with fallbacks.** Douglas-Peucker replaces a run by its chord only if no pixel centre changes
   side or comes within :data:`CLEARANCE` of it (it runs on the line already grown, and the rest is grown back).
   A contour is kept only if it still encloses the same pixel centres, also when offset by :data:`CLEARANCE`
   either way (so rounding in a file cannot move a centre across); one that does not, or that crosses or
   touches another contour (or itself), falls back, in turn, to half the tolerance, to the unsimplified smooth
   line and then to the staircase grown to its area, which always passes: its points stay >= 0.1 px from every
   centre (the midpoints are >= 0.35 px away, growth moves them <= 0.25 px for any contour, a single pixel's
   diamond being the worst case), and its contours, 0.7 px apart at the closest (two pixels touching at a
   corner), keep clear of one another.

So ``polygons_to_mask(mask_to_polygons(m), m.shape) == m`` holds exactly for any binary mask, and the area of
every region equals its pixel count (to floating point; 0.001 mm rounding in a file).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["polygons_to_mask", "mask_to_polygons", "polygon_area", "SIMPLIFY_TOLERANCE"]

SMOOTH_SIGMA = 1.0          # px: Gaussian blur of the mask whose 0.5 iso-line is traced
SIDE_MARGIN = 0.05          # the blurred value at a pixel centre stays this far on the pixel's side of 0.5
SIMPLIFY_TOLERANCE = 0.3    # px: default Douglas-Peucker tolerance of the smooth line
CLEARANCE = 0.02            # px: a kept contour encloses the same centres when offset by this much either way
CROP_MARGIN = 5             # px around a mask's box: more than the blur's reach (scipy: 4 sigma)


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


def mask_to_polygons(mask2d: np.ndarray, simplify_tolerance: float | None = None, *,
                     smooth: bool = True) -> list[np.ndarray]:
    """Closed contours ``(N, 2)`` of ``(x=col, y=row)`` whose even-odd fill reproduces ``mask2d`` and whose area is
    its pixel area (see the module docstring: *Tracing*).

    The first point is not repeated at the end. Outer boundaries and holes are returned as traced (no orientation
    is imposed): RTSTRUCT readers combine the contours of a plane with even-odd / XOR, exactly like
    :func:`polygons_to_mask`, and the contours of a plane never cross or touch. ``smooth`` traces the iso-line of
    a lightly blurred mask, then simplifies it (Douglas-Peucker, ``simplify_tolerance`` pixels, default
    :data:`SIMPLIFY_TOLERANCE`); ``smooth=False, simplify_tolerance=0`` gives the pixel-midpoint staircase (still
    grown to the pixel area). Whatever the options, ``polygons_to_mask(mask_to_polygons(m), m.shape) == m``.
    """
    m = np.asarray(mask2d)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {m.shape}")
    tol = SIMPLIFY_TOLERANCE if simplify_tolerance is None else float(simplify_tolerance)
    if not tol >= 0:
        raise ValueError(f"simplify_tolerance must be >= 0, got {simplify_tolerance}")
    m = m.astype(bool)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if not len(rows):
        return []
    # Work on the mask's box plus the blur's reach (beyond it the field is 0 as on the whole slice), then shift back.
    r0, c0 = max(rows[0] - CROP_MARGIN, 0), max(cols[0] - CROP_MARGIN, 0)
    crop = m[r0:rows[-1] + CROP_MARGIN + 1, c0:cols[-1] + CROP_MARGIN + 1]
    return [p + (c0, r0) for p in _trace(crop, tol, smooth)]


def _trace(m: np.ndarray, tol: float, smooth: bool) -> list[np.ndarray]:
    midpoints = _iso_rings(m.astype(np.float64))
    staircase = [_drop_collinear(r) for r in midpoints]
    candidates = [[(ring, 0.0)] for ring in staircase]              # the last resort, proven to pass
    rings = _iso_rings(_smooth_field(m)) if smooth else staircase
    if smooth and not _same_tracing(rings, midpoints):
        rings = staircase                                           # never seen; the staircase is always right
    if rings is not staircase or tol > 0:
        for cands, ring in zip(candidates, rings):
            cands[:0] = [(ring, tol), (ring, tol / 2), (ring, 0.0)] if tol > 0 and rings is not staircase \
                else [(ring, tol)]
    traced = [_Traced(ring, cands) for ring, cands in zip(staircase, candidates)]
    while True:                                                     # each pass demotes at least one contour
        crossing = _crossing_contours([t.polygon for t in traced])
        movable = [traced[i] for i in crossing if traced[i].can_demote()]
        if not movable:
            break
        for t in movable:
            t.demote()
    return [np.ascontiguousarray(t.polygon) for t in traced]


class _Traced:
    """One traced contour: the pixels it encloses and its candidate polygons, smoothest first."""

    def __init__(self, staircase: np.ndarray, candidates: list[tuple[np.ndarray, float]]):
        self.lo = np.floor(staircase.min(0)) - 1.0                    # local grid: integer shift, exact
        hi = np.ceil(staircase.max(0)) + 2.0
        self.shape = (int(hi[1] - self.lo[1]), int(hi[0] - self.lo[0]))
        self.enclosed = polygons_to_mask([staircase - self.lo], self.shape)
        self.area = float(self.enclosed.sum())
        self.candidates = candidates
        self.level = -1
        self.polygon = None
        self.demote()

    def can_demote(self) -> bool:
        return self.level < len(self.candidates) - 1

    def demote(self) -> None:
        """Take the next candidate that encloses the same pixel centres once grown to the pixel area."""
        for level in range(self.level + 1, len(self.candidates)):
            ring, tol = self.candidates[level]
            grown = _grow_to_area(ring, self.area)
            if grown is not None and tol > 0:                # simplify the grown line, then grow the rest back
                poly = _simplify(grown[0], tol)
                grown = _grow_to_area(poly, self.area) if len(poly) >= 3 else None
            if grown is not None and all(np.array_equal(polygons_to_mask([grown[0] + e * grown[1] - self.lo],
                                                                         self.shape), self.enclosed)
                                         for e in (-CLEARANCE, 0.0, CLEARANCE)):
                self.level, self.polygon = level, grown[0]
                return
        # unreachable: the last candidate, the staircase grown to its area, always passes (module docstring)
        raise AssertionError("the pixel-midpoint contour grown to its area must reproduce its pixels")


def _iso_rings(field: np.ndarray) -> list[np.ndarray]:
    """Marching-squares iso-lines at 0.5 (background 8-connected), as open rings in (x, y) of ``field``."""
    from skimage.measure import find_contours

    rings = []
    for contour in find_contours(np.pad(field, 1), 0.5, fully_connected="low"):
        xy = contour[:, ::-1] - 1.0
        if len(xy) > 1 and np.array_equal(xy[0], xy[-1]):
            xy = xy[:-1]
        rings.append(xy)
    return rings


def _smooth_field(mask: np.ndarray) -> np.ndarray:
    """The mask blurred (Gaussian, :data:`SMOOTH_SIGMA` px), each pixel kept on its own side of 0.5 by a margin."""
    from scipy.ndimage import gaussian_filter

    g = gaussian_filter(mask.astype(np.float64), SMOOTH_SIGMA, mode="nearest")
    return np.where(mask, np.maximum(g, 0.5 + SIDE_MARGIN), np.minimum(g, 0.5 - SIDE_MARGIN))


def _same_tracing(rings: list[np.ndarray], midpoints: list[np.ndarray]) -> bool:
    """The smooth rings cross the same pixel edges in the same order as the midpoint rings (the blurred field has
    the mask's sign at every pixel centre, so marching squares takes the same path through the cells)."""
    return len(rings) == len(midpoints) and all(
        r.shape == q.shape and bool(np.all(np.abs(r - q) < 0.5)) for r, q in zip(rings, midpoints))


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """``ring`` without vertices in the middle of a straight run (the staircase's runs along a pixel row)."""
    while len(ring) > 3:
        before = ring - np.roll(ring, 1, axis=0)
        after = np.roll(ring, -1, axis=0) - ring
        cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
        keep = (cross != 0) | (np.sum(before * after, axis=1) < 0)
        if keep.all() or keep.sum() < 3:
            break
        ring = ring[keep]
    return ring


def _simplify(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on a closed ring, where a run of vertices is replaced by its chord only if the chord
    leaves every pixel centre on its side, :data:`CLEARANCE` clear of it."""
    n = len(ring)
    closed = np.vstack([ring, ring[:1]])
    keep = np.zeros(n + 1, bool)
    far = int(np.argmax(np.hypot(*(ring - ring[0]).T)))
    keep[[0, far, n]] = True
    stack = [(0, far), (far, n)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        run = closed[i:j + 1]
        chord = run[-1] - run[0]
        length = np.hypot(*chord)
        rel = run[1:-1] - run[0]
        dist = np.abs(_cross(chord, rel)) / length if length > 0 else np.hypot(*rel.T)
        k = int(np.argmax(dist))
        if dist[k] > tolerance or not _chord_keeps_centres(run, float(dist[k])):
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return closed[keep][:-1]


def _chord_keeps_centres(run: np.ndarray, deviation: float) -> bool:
    """No pixel centre inside the loop ``run`` + chord back (those would change side), none near the chord.
    ``deviation``: the run's largest distance from the chord's line, which bounds the loop (centres farther from
    the line are not looked at)."""
    a, b = run[0], run[-1]
    lo, hi = np.ceil(run.min(0) - CLEARANCE), np.floor(run.max(0) + CLEARANCE)
    xs, ys = np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1)
    if not len(xs) or not len(ys):
        return True
    pts = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    chord = b - a
    length = float(np.hypot(*chord))
    if length > 0:
        pts = pts[np.abs(_cross(chord, pts - a)) <= (deviation + CLEARANCE) * length + 1e-9]
    t = np.clip(((pts - a) @ chord) / max(float(chord @ chord), 1e-300), 0, 1)
    if np.any(np.hypot(*(pts - a - t[:, None] * chord).T) < CLEARANCE):
        return False
    loop = np.vstack([run, run[:1]])                                 # even-odd: crossings of a ray to +x
    (x0, y0), (x1, y1) = loop[:-1].T, loop[1:].T
    px, py = pts[:, :1], pts[:, 1:]
    straddle = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    return not np.any(np.count_nonzero(straddle & (px < x_cross), axis=1) % 2)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _grow_to_area(ring: np.ndarray, area: float) -> tuple[np.ndarray, np.ndarray] | None:
    """``ring`` offset along its outward normals (mitred corners) by the distance that makes its area ``area``,
    and the mitre vectors (a further offset by ``e`` adds ``e * mitre``).

    The mitred offset by ``d`` moves vertex i by ``d * m_i``, so the area is a quadratic in ``d``, solved exactly;
    None when an edge would turn over (the offset is then not a plain growth) or the ring is degenerate.
    """
    p = np.asarray(ring, np.float64)
    nxt = np.roll(p, -1, axis=0)
    edge = nxt - p
    length = np.hypot(edge[:, 0], edge[:, 1])
    sign = 1.0 if _cross(p, nxt).sum() > 0 else -1.0
    if np.any(length == 0):
        return None
    normal = sign * np.stack([edge[:, 1], -edge[:, 0]], axis=1) / length[:, None]
    before = np.roll(normal, 1, axis=0)
    denominator = 1.0 + np.sum(before * normal, axis=1)
    if np.any(denominator < 0.1):                                    # a spike (turn > ~155 degrees)
        return None
    mitre = (before + normal) / denominator[:, None]
    mitre_next = np.roll(mitre, -1, axis=0)
    a0 = sign * _cross(p, nxt).sum() / 2 - area
    a1 = sign * (_cross(p, mitre_next) + _cross(mitre, nxt)).sum() / 2
    a2 = sign * _cross(mitre, mitre_next).sum() / 2
    if abs(a2) < 1e-12:
        d = -a0 / a1 if a1 != 0 else 0.0
    else:
        disc = a1 * a1 - 4 * a2 * a0
        if disc < 0:
            return None
        roots = ((-a1 + np.sqrt(disc)) / (2 * a2), (-a1 - np.sqrt(disc)) / (2 * a2))
        d = min(roots, key=abs)
    out = p + d * mitre
    if np.any(np.sum((np.roll(out, -1, axis=0) - out) * edge, axis=1) <= 0):
        return None
    return out, mitre


def _crossing_contours(polygons: list[np.ndarray]) -> set[int]:
    """Indices of contours that cross or touch another contour or themselves (adjacent edges excepted)."""
    lo = np.array([p.min(0) for p in polygons])
    hi = np.array([p.max(0) for p in polygons])
    near = np.all((lo[:, None] <= hi[None]) & (lo[None] <= hi[:, None]), axis=2)     # bounding boxes meet
    bad: set[int] = set()
    for i, j in zip(*np.nonzero(np.triu(near))):
        if _edges_meet(polygons[i], polygons[j], same=i == j):
            bad.update((int(i), int(j)))
    return bad


def _edges_meet(p: np.ndarray, q: np.ndarray, same: bool) -> bool:
    a, b = p[:, None], np.roll(p, -1, axis=0)[:, None]             # edges of p (rows) x edges of q (columns)
    c, d = q[None], np.roll(q, -1, axis=0)[None]
    o1, o2 = _cross(b - a, c - a), _cross(b - a, d - a)
    o3, o4 = _cross(d - c, a - c), _cross(d - c, b - c)
    meet = (o1 * o2 <= 0) & (o3 * o4 <= 0)
    collinear = (o1 == 0) & (o2 == 0)                               # then they meet only if their extents overlap
    if collinear.any():
        overlap = np.all((np.minimum(a, b) <= np.maximum(c, d)) & (np.minimum(c, d) <= np.maximum(a, b)), axis=-1)
        meet &= ~collinear | overlap
    if same:
        n = len(p)
        i, j = np.indices((n, n))
        meet &= (i != j) & ((i - j) % n != 1) & ((j - i) % n != 1)
    return bool(meet.any())


def polygon_area(poly: np.ndarray | Sequence) -> float:
    """Absolute area of a simple polygon (shoelace), in squared input units; open or closed input."""
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)
