"""Tests for nnunet_breast.structures.contours: scanline rasteriser vs brute force, exact mask round trips,
contour areas equal to pixel areas."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage
from shapely.geometry import LinearRing, Polygon

from nnunet_breast.structures.contours import mask_to_polygons, polygon_area, polygons_to_mask


# ----------------------------------------------------------------------------- reference helpers
def brute_force_mask(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Independent even-odd reference: PNPOLY ray casting (ray to +x) from every pixel centre.

    Crossing rule (yi > y) != (yj > y) is the half-open [ymin, ymax) rule; the crossing abscissa is
    computed with the same float expression as the rasteriser so boundary cases agree bit for bit.
    """
    Y, X = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    inside = np.zeros(shape, dtype=bool)
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64)
        if len(p) > 1 and np.array_equal(p[0], p[-1]):
            p = p[:-1]
        if len(np.unique(p, axis=0)) < 3:
            continue
        for i in range(len(p)):
            (xi, yi), (xj, yj) = p[i], p[(i + 1) % len(p)]
            if yi == yj:
                continue
            straddles = (yi > Y) != (yj > Y)
            x_cross = xi + (Y - yi) * ((xj - xi) / (yj - yi))
            inside ^= straddles & (X < x_cross)
    return inside


def star_polygon(rng: np.random.Generator, centre, r_max: float, n: int, r_min_frac: float = 0.3):
    """Random star-shaped, generally non-convex polygon (x, y) with float vertices."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(r_min_frac * r_max, r_max, n)
    return np.stack([centre[0] + rad * np.cos(ang), centre[1] + rad * np.sin(ang)], axis=1)


def circle(centre, radius: float, n: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([centre[0] + radius * np.cos(t), centre[1] + radius * np.sin(t)], axis=1)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# ----------------------------------------------------------------------------- polygons_to_mask
def test_integer_square_is_half_open():
    sq = np.array([[5, 5], [15, 5], [15, 15], [5, 15]], dtype=float)
    m = polygons_to_mask([sq], (20, 20))
    assert m.sum() == 100 == polygon_area(sq)
    expected = np.zeros((20, 20), bool)
    expected[5:15, 5:15] = True  # rows/cols 5..14: left/top edges in, right/bottom edges out
    np.testing.assert_array_equal(m, expected)
    np.testing.assert_array_equal(m, brute_force_mask([sq], (20, 20)))


def test_square_with_fractional_corners_matches_brute_force():
    sq = np.array([[2.3, 3.7], [17.6, 3.7], [17.6, 12.2], [2.3, 12.2]])
    m = polygons_to_mask([sq], (20, 20))
    assert m.sum() == 15 * 9  # centres x in 3..17, y in 4..12
    np.testing.assert_array_equal(m, brute_force_mask([sq], (20, 20)))


@pytest.mark.parametrize("seed", range(8))
def test_random_star_polygons_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = (48, 56)
    poly = star_polygon(rng, rng.uniform(15, 40, 2), rng.uniform(8, 30), int(rng.integers(5, 40)))
    m = polygons_to_mask([poly], shape)
    assert m.any()
    np.testing.assert_array_equal(m, brute_force_mask([poly], shape))


@pytest.mark.parametrize("seed", range(4))
def test_integer_vertex_polygons_match_brute_force(seed):
    # Integer vertices put many pixel centres exactly on edges and vertices on scanlines.
    rng = np.random.default_rng(100 + seed)
    shape = (30, 30)
    polys = [np.round(star_polygon(rng, (15, 15), 14, 12)) for _ in range(2)]
    np.testing.assert_array_equal(polygons_to_mask(polys, shape), brute_force_mask(polys, shape))


def test_hole_and_island_even_odd():
    rng = np.random.default_rng(7)
    shape = (64, 64)
    outer = circle((32.2, 31.7), 28, 60) + rng.normal(0, 0.5, (60, 2))
    hole = star_polygon(rng, (32, 32), 16, 25, r_min_frac=0.8)
    island = star_polygon(rng, (32, 32), 6, 12, r_min_frac=0.6)
    polys = [outer, hole[::-1], island]  # orientation must not matter
    m = polygons_to_mask(polys, shape)
    np.testing.assert_array_equal(m, brute_force_mask(polys, shape))
    assert m[32, 32]  # island centre filled again
    assert not m[32, 32 + 11]  # inside the hole ring (between r=6 and r=12.8)
    assert m[32, 32 + 22]  # in the outer ring
    only_outer = polygons_to_mask([outer], shape)
    assert m.sum() < only_outer.sum()


def test_disjoint_polygons_are_islands():
    rng = np.random.default_rng(11)
    shape = (40, 80)
    a = star_polygon(rng, (18, 20), 14, 20)
    b = star_polygon(rng, (60, 20), 14, 20)
    m = polygons_to_mask([a, b], shape)
    np.testing.assert_array_equal(m, brute_force_mask([a, b], shape))
    np.testing.assert_array_equal(m, polygons_to_mask([a], shape) | polygons_to_mask([b], shape))
    assert ndimage.label(m)[1] >= 2


def test_shared_edge_no_double_coverage():
    # Two triangles splitting a square along its diagonal tile it without overlap or gap.
    t1 = np.array([[3.0, 3.0], [13.0, 3.0], [13.0, 13.0]])
    t2 = np.array([[3.0, 3.0], [13.0, 13.0], [3.0, 13.0]])
    m1, m2 = polygons_to_mask([t1], (16, 16)), polygons_to_mask([t2], (16, 16))
    assert not np.any(m1 & m2)
    sq = polygons_to_mask([np.array([[3, 3], [13, 3], [13, 13], [3, 13]], float)], (16, 16))
    np.testing.assert_array_equal(m1 | m2, sq)


def test_closed_and_open_input_identical_and_degenerates_ignored():
    rng = np.random.default_rng(3)
    p = star_polygon(rng, (20, 20), 15, 17)
    shape = (40, 40)
    m_open = polygons_to_mask([p], shape)
    m_closed = polygons_to_mask([np.vstack([p, p[:1]])], shape)
    np.testing.assert_array_equal(m_open, m_closed)
    degenerate = [
        np.zeros((0, 2)),
        np.array([[5.0, 5.0]]),
        np.array([[5.0, 5.0], [30.0, 30.0]]),
        np.array([[5.0, 5.0], [30.0, 30.0], [5.0, 5.0]]),  # closed 2-vertex "polygon"
        np.array([[5.0, 5.0], [30.0, 30.0], [30.0, 30.0], [5.0, 5.0]]),
    ]
    np.testing.assert_array_equal(polygons_to_mask([p, *degenerate], shape), m_open)
    assert not polygons_to_mask(degenerate, shape).any()
    assert not polygons_to_mask([], shape).any()


def test_points_outside_grid_are_clipped():
    shape = (20, 30)
    big = np.array([[-50.0, -40.0], [100.0, -35.0], [90.0, 70.0], [-60.0, 60.0]])
    m = polygons_to_mask([big], shape)
    assert m.all()
    partial = np.array([[-10.5, 4.2], [12.3, -8.1], [45.0, 9.9], [20.2, 33.3]])
    np.testing.assert_array_equal(polygons_to_mask([partial], shape), brute_force_mask([partial], shape))
    far = np.array([[100.0, 100.0], [120.0, 100.0], [110.0, 130.0]])
    assert not polygons_to_mask([far], shape).any()


def test_large_circle_pixel_count_matches_area():
    poly = circle((64.3, 63.6), 40.0, 400)
    m = polygons_to_mask([poly], (128, 128))
    area = polygon_area(poly)
    assert abs(m.sum() - area) / area < 0.01
    assert abs(area - np.pi * 40**2) / (np.pi * 40**2) < 0.001


def test_rejects_bad_polygon_shape():
    with pytest.raises(ValueError):
        polygons_to_mask([np.zeros((4, 3))], (10, 10))


# ----------------------------------------------------------------------------- polygon_area
def test_polygon_area():
    sq = np.array([[0, 0], [2, 0], [2, 3], [0, 3]], float)
    assert polygon_area(sq) == 6.0
    assert polygon_area(sq[::-1]) == 6.0
    assert polygon_area(np.vstack([sq, sq[:1]])) == 6.0
    assert polygon_area(sq[:2]) == 0.0


# ----------------------------------------------------------------------------- mask_to_polygons
def even_odd_area(polys: list[np.ndarray]) -> float:
    """Area of the even-odd (XOR) combination of the polygons, computed independently by shapely; every polygon
    must be simple and no two may cross or touch."""
    geom = None
    for p in polys:
        poly = Polygon(p)
        assert poly.is_valid, "self-intersecting contour"
        geom = poly if geom is None else geom.symmetric_difference(poly)
    for p, q in itertools.combinations(polys, 2):
        assert not LinearRing(p).intersects(LinearRing(q)), "contours cross or touch"
    return 0.0 if geom is None else geom.area


def assert_round_trip(mask: np.ndarray, **options) -> list[np.ndarray]:
    """Exact round trip; each contour's area = the pixel centres it encloses; even-odd area = pixel count."""
    polys = mask_to_polygons(mask, **options)
    reach = 0.5 + max(0.0, options.get("simplify_tolerance", 0.0) - 0.3)   # default: within half a pixel of the grid
    for p in polys:
        assert p.ndim == 2 and p.shape[1] == 2 and len(p) >= 3
        assert not np.array_equal(p[0], p[-1])
        assert p[:, 0].min() > -0.5 - reach and p[:, 0].max() < mask.shape[1] - 0.5 + reach
        assert p[:, 1].min() > -0.5 - reach and p[:, 1].max() < mask.shape[0] - 0.5 + reach
        assert polygon_area(p) == pytest.approx(polygons_to_mask([p], mask.shape).sum(), abs=1e-9)
    np.testing.assert_array_equal(polygons_to_mask(polys, mask.shape), mask.astype(bool))
    assert even_odd_area(polys) == pytest.approx(int(np.count_nonzero(mask)), abs=1e-8)
    return polys


OPTIONS = [{}, {"smooth": False, "simplify_tolerance": 0}, {"smooth": False, "simplify_tolerance": 0.5},
           {"simplify_tolerance": 0}, {"simplify_tolerance": 1.0}]
OPTION_IDS = ["default", "staircase", "staircase-simplified", "smooth-unsimplified", "smooth-tolerance-1"]


@pytest.mark.parametrize("seed", range(30))
def test_round_trip_random_smoothed_masks(seed):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(40, 40)), sigma=1.5)
    mask = field > np.median(field)
    assert_round_trip(mask)


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("seed", range(6))
def test_round_trip_and_area_every_option(seed, options):
    rng = np.random.default_rng(500 + seed)
    field = ndimage.gaussian_filter(rng.normal(size=(48, 48)), sigma=rng.uniform(0.7, 4))
    assert_round_trip(field > np.quantile(field, rng.uniform(0.3, 0.8)), **options)


@pytest.mark.parametrize("seed", range(30))
def test_round_trip_raw_noise(seed):
    rng = np.random.default_rng(1000 + seed)
    shape = (40, 40) if seed % 2 == 0 else (23, 37)
    mask = rng.random(shape) < (0.5 if seed < 20 else 0.2 + 0.03 * (seed - 20))
    assert_round_trip(mask, **OPTIONS[seed % len(OPTIONS)])


def test_round_trip_single_pixels_and_borders():
    for r, c in [(0, 0), (0, 9), (9, 0), (9, 9), (4, 5)]:
        m = np.zeros((10, 10), bool)
        m[r, c] = True
        (poly,) = assert_round_trip(m)
        assert polygon_area(poly) == pytest.approx(1.0)              # a single pixel keeps its whole area
    m = np.zeros((12, 15), bool)
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = True  # frame touching all four borders
    assert len(assert_round_trip(m)) == 2
    assert_round_trip(np.ones((7, 9), bool))
    assert mask_to_polygons(np.zeros((7, 9), bool)) == []
    assert_round_trip(np.ones((1, 1), bool))
    assert_round_trip(np.array([[1, 0, 1, 1, 0, 1]], dtype=np.uint8))  # single row, non-bool input


def test_one_pixel_wide_lines_keep_their_area():
    m = np.zeros((20, 20), bool)
    m[3, 2:17] = True                                   # horizontal line
    m[6:18, 4] = True                                   # vertical line
    m[np.arange(8, 18), np.arange(8, 18)] = True        # diagonal: pixels touching at corners, one contour each
    for options in OPTIONS:
        polys = assert_round_trip(m, **options)
        assert len(polys) == 2 + 10


def test_round_trip_diagonal_neighbours_and_checkerboard():
    diag = np.eye(6, dtype=bool) | np.eye(6, dtype=bool)[::-1]
    assert_round_trip(diag)
    saddle = np.array([[1, 0], [0, 1]], bool)
    assert len(assert_round_trip(saddle)) == 2          # pixels touching at a corner are separate contours
    assert_round_trip(~saddle)
    checker = (np.add.outer(np.arange(8), np.arange(8)) % 2).astype(bool)
    assert_round_trip(checker)
    assert_round_trip(~checker)
    # pixels meeting at corners around a hole of diagonal pixels
    m = np.zeros((9, 9), bool)
    m[2:7, 2:7] = True
    m[3, 3] = m[4, 4] = m[5, 5] = m[3, 5] = m[5, 3] = False
    for options in OPTIONS:
        assert_round_trip(m, **options)


def test_round_trip_ring_with_hole_and_island():
    yy, xx = np.mgrid[0:50, 0:50]
    d = np.hypot(yy - 24.5, xx - 25)
    mask = (d < 20) & ~((d >= 10) & (d < 15)) | (d < 4)
    polys = assert_round_trip(mask)
    assert len(polys) == 3  # outer boundary, hole boundary, island boundary
    areas = sorted(polygons_to_mask([p], mask.shape).sum() for p in polys)
    assert sorted(polygon_area(p) for p in polys) == pytest.approx(areas)   # the hole grows into the ring too


def test_staircase_is_the_midpoint_contour_grown_half_a_pixel():
    """smooth=False, tolerance 0: the midpoint staircase, each contour grown by the half pixel marching squares
    cuts off it, and kept >= 0.1 px from every pixel centre (the margin the module docstring proves)."""
    rng = np.random.default_rng(4)
    mask = rng.random((30, 30)) < 0.45
    Y, X = np.mgrid[0:30, 0:30]
    centres = np.c_[X.ravel(), Y.ravel()].astype(float)
    for p in assert_round_trip(mask, smooth=False, simplify_tolerance=0):
        a, b = p, np.roll(p, -1, axis=0)
        ab = b - a
        t = np.clip(np.einsum("pk,ek->pe", centres, ab) - np.einsum("ek,ek->e", a, ab), 0, None)
        t = np.minimum(t / np.einsum("ek,ek->e", ab, ab), 1)
        d = np.hypot(*(centres[:, None] - a[None] - t[..., None] * ab[None]).transpose(2, 0, 1))
        assert d.min() >= 0.1


def test_smooth_contours_are_smooth_and_have_fewer_points():
    """A digitised ellipse: the default contour turns about as little as the ellipse (a staircase turns at every
    step), with a fraction of the staircase's vertices; area and pixels exact."""
    yy, xx = np.mgrid[0:80, 0:80]
    disk = np.hypot(yy - 39.6, (xx - 40.2) * 1.3) <= 30

    def turning(p):   # total absolute turning, in full turns
        e = np.roll(p, -1, axis=0) - p
        a = np.arctan2(e[:, 1], e[:, 0])
        return float(np.abs((np.diff(np.r_[a, a[:1]]) + np.pi) % (2 * np.pi) - np.pi).sum() / (2 * np.pi))

    (smooth,) = assert_round_trip(disk)
    (stairs,) = assert_round_trip(disk, smooth=False, simplify_tolerance=0)
    assert turning(smooth) < 1.5 and turning(stairs) > 8
    assert len(smooth) < 0.6 * len(stairs)
    (coarse,) = assert_round_trip(disk, simplify_tolerance=1.0)         # larger tolerances stay exact
    assert len(coarse) <= len(smooth)


def test_rejects_bad_mask_and_tolerance():
    with pytest.raises(ValueError):
        mask_to_polygons(np.zeros((3, 3, 3), bool))
    with pytest.raises(ValueError):
        mask_to_polygons(np.ones((3, 3), bool), simplify_tolerance=-1)


def test_phantom_structures_keep_their_area_on_every_slice():
    """Every structure of a small phantom, slice by slice: exact pixels, area = pixel count (1-2 cc nodal CTVs and
    the esophagus lost 3-21 % to the midpoint contours); under half the points of the marching-squares contour
    (one per pixel edge crossed) that was written before."""
    from skimage.measure import find_contours

    from nnunet_breast.synth.cohort import make_case

    case = make_case("breast", 1, seed=0, size="small", labels="full")
    before = after = 0
    for name, mask in case.masks.items():
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            polys = assert_round_trip(mask[k])
            after += sum(map(len, polys))
            before += sum(len(c) - 1 for c in find_contours(np.pad(mask[k], 1).astype(float), 0.5, "low"))
    assert after < 0.5 * before
