"""Tests for nnunet_breast.evaluation.metrics and .clip_detection.

Expected values are derived by hand in the comments, following the test ideas published with DeepMind's
surface-distance library (single voxels, shifted cubes, 2D squares, empty masks), or computed by an
independent brute force: an explicit surfel list and pairwise point-to-point distances, with no distance
transform.

Geometry used throughout: a surfel sits at the centre of its 2x2x2 block, i.e. at half-integer voxel
coordinates. A single voxel at index p has 8 surfels, at p + (+-1/2, +-1/2, +-1/2), one for each block it
is a corner of.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from skimage import measure

from nnunet_breast.evaluation import surface as M
from nnunet_breast.evaluation.clip_detection import detect_clips
from nnunet_breast.evaluation.metrics import (EMPTY_POLICY, StructureMetrics, evaluate_case, is_evaluated,
                                              structure_metrics, summarize)
from nnunet_breast.evaluation.surface import compute_surface_distances, surfel_area_table

CORNERS = [(dz, dy, dx) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]   # bit = 4dz + 2dy + dx


def code_of(block: np.ndarray) -> int:
    return sum(1 << b for b, o in enumerate(CORNERS) if block[o])


def block_of(code: int) -> np.ndarray:
    blk = np.zeros((2, 2, 2), bool)
    for b, o in enumerate(CORNERS):
        blk[o] = bool(code >> b & 1)
    return blk


# ------------------------------------------------------------------------------------------------
# The area table
# ------------------------------------------------------------------------------------------------

def test_area_table_hand_values():
    sz, sy, sx = 3.0, 1.0, 2.0
    t = surfel_area_table((sz, sy, sx))
    assert t.shape == (256,) and t[0] == 0 and t[255] == 0
    # one corner: triangle through the three edge midpoints (sz/2,0,0), (0,sy/2,0), (0,0,sx/2);
    # area = |cross| / 2 = sqrt((sy sx)^2 + (sz sx)^2 + (sz sy)^2) / 8 = sqrt(4 + 36 + 9) / 8 = 7/8
    for bit in range(8):
        assert t[1 << bit] == pytest.approx(7 / 8, rel=1e-12)
    # four corners of the dz=0 face (bits 0-3): a plane at dz=1/2 of area sy*sx
    assert t[0b00001111] == pytest.approx(sy * sx, rel=1e-12)
    # two corners along x (bits 0, 1): a rectangle sx long and sqrt((sz/2)^2 + (sy/2)^2) wide
    assert t[0b00000011] == pytest.approx(sx * math.hypot(sz, sy) / 2, rel=1e-12)
    # two corners along z (bits 0, 4)
    assert t[0b00010001] == pytest.approx(sz * math.hypot(sy, sx) / 2, rel=1e-12)
    # complement symmetry: a configuration and its inverse bound the same surface
    assert np.allclose(t, t[::-1], rtol=1e-12, atol=0)
    # every mixed configuration carries a positive area
    assert np.all(t[1:255] > 0)


def test_area_table_unit_spacing_values():
    # values of DeepMind's table at unit spacing (one corner sqrt(3)/8, edge pair sqrt(2)/2, face 1,
    # two separated corners sqrt(3)/4, four corners on a diagonal plane sqrt(2), ...); 13 distinct values
    t = surfel_area_table((1, 1, 1))
    assert t[1] == pytest.approx(math.sqrt(3) / 8)
    assert t[0b11] == pytest.approx(math.sqrt(2) / 2)
    assert t[0b1111] == pytest.approx(1.0)
    assert t[0b1001] == pytest.approx(math.sqrt(3) / 4)           # face diagonal: two corner triangles
    assert t[0b10000001] == pytest.approx(math.sqrt(3) / 4)       # body diagonal: two corner triangles
    assert len(set(np.round(t, 9))) == 13


def test_area_table_symmetric_under_cube_symmetries():
    # rotating/reflecting a block together with its spacing must not change its area
    s = (2.5, 0.7, 1.3)
    t = surfel_area_table(s)
    for perm in itertools.permutations(range(3)):
        tp = surfel_area_table(tuple(s[p] for p in perm))
        for flips in itertools.product((False, True), repeat=3):
            for code in range(256):
                b = np.transpose(block_of(code), perm)
                for ax, f in enumerate(flips):
                    if f:
                        b = np.flip(b, ax)
                assert tp[code_of(b)] == pytest.approx(t[code], rel=1e-12, abs=1e-15)


def test_2d_length_table():
    sy, sx = 1.5, 0.5
    t = surfel_area_table((sy, sx))
    diag = math.hypot(sy, sx) / 2
    assert t.shape == (16,) and t[0] == 0 and t[15] == 0
    for c in (1, 2, 4, 8, 14, 13, 11, 7):
        assert t[c] == pytest.approx(diag)
    assert t[0b0011] == pytest.approx(sx)      # bits 0,1 = (0,0),(0,1): horizontal pair -> horizontal edge
    assert t[0b0101] == pytest.approx(sy)      # (0,0),(1,0): vertical pair -> vertical edge
    assert t[0b0110] == pytest.approx(2 * diag) and t[0b1001] == pytest.approx(2 * diag)   # saddles


def test_box_surface_area_hand_formula_and_marching_cubes():
    # a box of a x b x c voxels has (b-1)(c-1) face blocks per z-face (area sy sx), c-1 edge blocks per
    # x-edge (area sx sqrt(sz^2 + sy^2) / 2) and 8 corner blocks (area sqrt(...)/8)
    sz, sy, sx = 2.5, 0.7, 1.3
    a, b, c = 4, 5, 2
    m = np.zeros((7, 8, 9), bool)
    m[1:1 + a, 2:2 + b, 3:3 + c] = True
    faces = 2 * ((b - 1) * (c - 1) * sy * sx + (a - 1) * (c - 1) * sz * sx + (a - 1) * (b - 1) * sz * sy)
    edges = 4 * ((c - 1) * sx * math.hypot(sz, sy) + (b - 1) * sy * math.hypot(sz, sx)
                 + (a - 1) * sz * math.hypot(sy, sx)) / 2
    corners = 8 * math.sqrt((sy * sx) ** 2 + (sz * sx) ** 2 + (sz * sy) ** 2) / 8
    sd = compute_surface_distances(m, m, (sz, sy, sx))
    assert sd.area_ref == pytest.approx(faces + edges + corners, rel=1e-12)
    # independent path: marching cubes over the whole (padded) volume, with skimage's own spacing
    v, f, _, _ = measure.marching_cubes(np.pad(m, 1).astype(np.float32), 0.5, spacing=(sz, sy, sx),
                                        method="lorensen")
    assert sd.area_ref == pytest.approx(measure.mesh_surface_area(v, f), rel=1e-6)


def test_single_voxel_total_area():
    # 8 corner surfels of 7/8 mm^2 each (see above): 7 mm^2 exactly with spacing (3, 1, 2)
    m = np.zeros((3, 3, 3), bool)
    m[1, 1, 1] = True
    sd = compute_surface_distances(m, m, (3, 1, 2))
    assert len(sd.areas_ref) == 8
    assert sd.area_ref == pytest.approx(7.0, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# Hand-computed distances
# ------------------------------------------------------------------------------------------------

def test_single_voxels_three_apart_anisotropic():
    # spacing (z, y, x) = (3, 1, 2); A at x=2, B at x=5 (3 voxels = 6 mm apart, same z, y).
    # A's surfels sit at x = 1.5 and 2.5 (4 each), B's at x = 4.5 and 5.5, with matching z, y offsets.
    # From x=2.5 the nearest B surfel is at x=4.5: 2 voxels = 4 mm; from x=1.5: 3 voxels = 6 mm.
    # So each direction holds 4 surfels at 4 mm and 4 at 6 mm, all of equal area (7/8 mm^2):
    #   HD = 6, HD95 = 6 (the nearest half covers only 50 % of the area), HD50 = 4, ASD = 5 each way.
    a = np.zeros((5, 5, 9), bool)
    b = np.zeros_like(a)
    a[2, 2, 2] = True
    b[2, 2, 5] = True
    sp = (3.0, 1.0, 2.0)
    sd = compute_surface_distances(a, b, sp)
    assert sd.distances_ref_to_pred.tolist() == [4.0] * 4 + [6.0] * 4
    assert sd.distances_pred_to_ref.tolist() == [4.0] * 4 + [6.0] * 4
    assert np.allclose(sd.areas_ref, 7 / 8)
    m = structure_metrics(a, b, sp)
    assert (m.hd, m.hd95, m.assd, m.asd_ref_to_pred, m.asd_pred_to_ref) == (6.0, 6.0, 5.0, 5.0, 5.0)
    assert m.dsc == 0.0 and m.empty == ""
    assert structure_metrics(a, b, sp, percentile=50).hd95 == 4.0
    assert sd.hausdorff(50) == 4.0 and sd.hausdorff(50.01) == 6.0
    # surface Dice: tolerance 4 mm keeps half of each surface, 6 mm all, below 4 mm nothing
    assert structure_metrics(a, b, sp, tolerance_mm=4.0).surface_dice == pytest.approx(0.5)
    assert structure_metrics(a, b, sp, tolerance_mm=6.0).surface_dice == pytest.approx(1.0)
    assert structure_metrics(a, b, sp, tolerance_mm=3.99).surface_dice == 0.0


def test_single_voxels_diagonal():
    # B offset by (1, 1, 1) voxels with spacing (3, 1, 2). Surfel offsets per axis are +-1/2.
    # A's surfel at (+1/2,+1/2,+1/2) coincides with B's (-1/2,-1/2,-1/2): 0 mm. In general a surfel of A
    # with k axes at -1/2 is 1 voxel along those axes from the nearest B surfel, on each axis independently.
    # The far corner (-,-,-) is 1 voxel off on all three axes: sqrt(3^2 + 1^2 + 2^2) = sqrt(14).
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros_like(a)
    a[1, 1, 1] = True
    b[2, 2, 2] = True
    sd = compute_surface_distances(a, b, (3, 1, 2))
    expected = sorted(math.sqrt(sum((s * o) ** 2 for s, o in zip((3, 1, 2), off)))
                      for off in itertools.product((0, 1), repeat=3))
    assert np.allclose(sd.distances_ref_to_pred, expected, rtol=1e-12)
    m = structure_metrics(a, b, (3, 1, 2))
    assert m.hd == pytest.approx(math.sqrt(14), rel=1e-12)
    assert m.hd95 == pytest.approx(math.sqrt(14), rel=1e-12)
    assert m.assd == pytest.approx(np.mean(expected), rel=1e-12)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_shifted_cube_hd_equals_shift(axis, k):
    # B = A shifted by k voxels along `axis`. Every surfel p of A has the surfel p + k e of B at k*s mm,
    # and the trailing face of A lies k voxels behind every surfel of B along that axis: HD = k * s_axis
    # in both directions. Every distance is <= HD, so surface Dice at tolerance HD is 1.
    sp = (2.5, 0.8, 1.3)
    a = np.zeros((12, 12, 12), bool)
    a[3:8, 3:8, 3:8] = True
    b = np.roll(a, k, axis=axis)
    m = structure_metrics(a, b, sp, tolerance_mm=k * sp[axis])
    assert m.hd == pytest.approx(k * sp[axis], rel=1e-12)
    sd = compute_surface_distances(a, b, sp)
    assert sd.distances_ref_to_pred[-1] == pytest.approx(k * sp[axis], rel=1e-12)
    assert sd.distances_pred_to_ref[-1] == pytest.approx(k * sp[axis], rel=1e-12)
    assert m.hd95 <= m.hd
    assert m.surface_dice == pytest.approx(1.0)
    assert m.dsc == pytest.approx((5 - k) / 5)


def test_2d_squares_shifted():
    # 4x4 squares at rows 2-5; A at cols 2-5, B at cols 4-7 (shift 2 cols); spacing (y, x) = (1.5, 0.5).
    # A's contour: 4 corner blocks (one pixel inside, length r = hypot(0.75, 0.25) = sqrt(0.625)),
    # 3 blocks on each horizontal side (length sx = 0.5), 3 on each vertical side (length sy = 1.5).
    # Total length L = 4r + 6*0.5 + 6*1.5 = 12 + 4r. Distances A -> B (B's blocks span cols 3.5-7.5):
    #   corners at col 1.5: 1.0 mm (2 cols); corners at col 5.5: 0 (on B's horizontal sides)
    #   horizontal sides: col 2.5 -> 0.5 mm (x2), cols 3.5, 4.5 -> 0 (x4)
    #   left side (col 1.5) -> B's left side at col 3.5: 1.0 mm (x3); right side (col 5.5, inside B)
    #   -> B's left side 2 cols away: 1.0 mm (x3), everything else on B is farther.
    # ASD = (2r*1 + 2*0.5*0.5 + 6*1.5*1) / L = (9.5 + 2r) / (12 + 4r); mirror symmetry: same both ways.
    # HD = 1.0; the 1.0 mm group covers (2r + 9)/L > 5 % of the length, so HD95 = 1.0 too.
    # Surface Dice at 0.5 mm: within = 2r + 6*0.5 -> (3 + 2r)/(12 + 4r); below 0.5 mm: (2 + 2r)/(12 + 4r).
    a = np.zeros((8, 10), bool)
    b = np.zeros_like(a)
    a[2:6, 2:6] = True
    b[2:6, 4:8] = True
    sp = (1.5, 0.5)
    r = math.sqrt(0.625)
    sd = compute_surface_distances(a, b, sp)
    assert sd.area_ref == pytest.approx(12 + 4 * r, rel=1e-12)
    m = structure_metrics(a, b, sp, tolerance_mm=0.5)
    assert m.dsc == 0.5
    assert m.hd == 1.0 and m.hd95 == 1.0
    assert m.asd_ref_to_pred == pytest.approx((9.5 + 2 * r) / (12 + 4 * r), rel=1e-12)
    assert m.asd_pred_to_ref == pytest.approx(m.asd_ref_to_pred, rel=1e-12)
    assert m.assd == pytest.approx(m.asd_ref_to_pred, rel=1e-12)
    assert m.surface_dice == pytest.approx((3 + 2 * r) / (12 + 4 * r), rel=1e-12)
    assert sd.surface_dice(0.49) == pytest.approx((2 + 2 * r) / (12 + 4 * r), rel=1e-12)
    assert math.isnan(m.volume_ref_cc)          # a plane has no volume
    # the same squares as one-slice 3D masks: the in-plane shift still sets HD; DSC unchanged
    m3 = structure_metrics(a[None], b[None], (3.0, 1.5, 0.5))
    assert m3.hd == 1.0 and m3.dsc == 0.5
    assert m3.volume_ref_cc == pytest.approx(16 * 3.0 * 1.5 * 0.5 / 1000)


def test_identical_masks():
    rng = np.random.default_rng(1)
    m = ndi_blob(rng, (10, 12, 14))
    r = structure_metrics(m, m.copy(), (3.0, 0.9, 0.9))
    assert r.dsc == 1.0 and r.surface_dice == 1.0
    assert r.hd == r.hd95 == r.assd == r.asd_ref_to_pred == r.asd_pred_to_ref == 0.0
    assert r.volume_diff_cc == 0.0 and r.empty == ""


def test_crop_and_array_border_do_not_matter():
    # masks touching the array border give the same result as when embedded in a larger empty array
    rng = np.random.default_rng(5)
    a = rng.random((6, 7, 8)) < 0.4
    b = rng.random((6, 7, 8)) < 0.4
    sp = (2.0, 1.1, 0.6)
    big_a = np.zeros((16, 17, 18), bool)
    big_b = np.zeros_like(big_a)
    big_a[4:10, 3:10, 6:14] = a
    big_b[4:10, 3:10, 6:14] = b
    m1, m2 = structure_metrics(a, b, sp), structure_metrics(big_a, big_b, sp)
    for f in ("dsc", "hd95", "hd", "assd", "surface_dice", "volume_ref_cc"):
        assert getattr(m1, f) == pytest.approx(getattr(m2, f), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# Brute force: explicit surfel list + pairwise distances, no distance transform
# ------------------------------------------------------------------------------------------------

def ndi_blob(rng, shape, thresh=0.55):
    """A smooth random blob: smoothed noise above its `thresh` quantile."""
    from scipy import ndimage
    field = ndimage.gaussian_filter(rng.random(shape), 1.0)
    return field > np.quantile(field, thresh)


def brute_surfels(mask: np.ndarray, spacing):
    """Every 2x2x2 block of the padded mask, one at a time: positions (mm) and areas of mixed blocks."""
    table = surfel_area_table(spacing)
    p = np.pad(mask, 1)
    pts, areas = [], []
    for i in range(p.shape[0] - 1):
        for j in range(p.shape[1] - 1):
            for k in range(p.shape[2] - 1):
                code = code_of(p[i:i + 2, j:j + 2, k:k + 2])
                if 0 < code < 255:
                    # block (i, j, k) spans padded voxels i, i+1 = original voxels i-1, i: centre i - 1/2
                    pts.append([(i - 0.5) * spacing[0], (j - 0.5) * spacing[1], (k - 0.5) * spacing[2]])
                    areas.append(table[code])
    return np.array(pts), np.array(areas)


def brute_directed(pa, pb):
    return np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(axis=1)


def brute_percentile(d, w, q):
    """Smallest distance value whose share of area (distance <= value) reaches q %."""
    for v in np.unique(d):
        if w[d <= v].sum() >= q / 100 * w.sum() * (1 - 1e-9):
            return v
    raise AssertionError


@pytest.mark.parametrize("seed", range(20))
def test_random_masks_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = (8, 8, 8)
    if seed % 2:                                    # speckle: every ambiguous configuration shows up
        a, b = rng.random(shape) < 0.3, rng.random(shape) < 0.3
    else:                                           # smooth blobs, partly overlapping
        a, b = ndi_blob(rng, shape), ndi_blob(rng, shape)
    sp = tuple(rng.uniform(0.5, 3.0, 3))
    tol = float(rng.uniform(0.5, 3.0))
    pa, wa = brute_surfels(a, sp)
    pb, wb = brute_surfels(b, sp)
    dab, dba = brute_directed(pa, pb), brute_directed(pb, pa)

    sd = compute_surface_distances(a, b, sp)
    assert np.allclose(sd.distances_ref_to_pred, np.sort(dab), rtol=1e-12, atol=1e-12)
    assert np.allclose(sd.distances_pred_to_ref, np.sort(dba), rtol=1e-12, atol=1e-12)
    assert sd.area_ref == pytest.approx(wa.sum(), rel=1e-12)
    assert sd.area_pred == pytest.approx(wb.sum(), rel=1e-12)

    m = structure_metrics(a, b, sp, tolerance_mm=tol)
    assert m.hd == pytest.approx(max(dab.max(), dba.max()), rel=1e-12)
    assert m.hd95 == pytest.approx(max(brute_percentile(dab, wa, 95), brute_percentile(dba, wb, 95)), rel=1e-12)
    asd_ab, asd_ba = (dab * wa).sum() / wa.sum(), (dba * wb).sum() / wb.sum()
    assert m.asd_ref_to_pred == pytest.approx(asd_ab, rel=1e-12)
    assert m.asd_pred_to_ref == pytest.approx(asd_ba, rel=1e-12)
    assert m.assd == pytest.approx((asd_ab + asd_ba) / 2, rel=1e-12)
    sdice = (wa[dab <= tol].sum() + wb[dba <= tol].sum()) / (wa.sum() + wb.sum())
    assert m.surface_dice == pytest.approx(sdice, rel=1e-12)
    assert m.dsc == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), rel=1e-12)
    vox = sp[0] * sp[1] * sp[2] / 1000
    assert m.volume_ref_cc == pytest.approx(a.sum() * vox, rel=1e-12)
    assert m.volume_diff_cc == pytest.approx((b.sum() - a.sum()) * vox, rel=1e-12, abs=1e-15)


# ------------------------------------------------------------------------------------------------
# Empty masks, volumes, validation, aggregation
# ------------------------------------------------------------------------------------------------

def test_empty_policy():
    assert "NaN" in EMPTY_POLICY and "not evaluated" in EMPTY_POLICY.lower() and "treated" in EMPTY_POLICY
    z = np.zeros((4, 5, 6), bool)
    m = z.copy()
    m[1:3, 1:3, 1:3] = True
    sp = (2.0, 1.0, 1.0)
    # empty reference: not contoured in this case -> not evaluated, every score NaN (never DSC 1 or 0)
    both = structure_metrics(z, z, sp)
    assert both.empty == "both" and not both.evaluated
    assert math.isnan(both.dsc) and math.isnan(both.surface_dice)
    assert both.volume_ref_cc == 0.0 and both.volume_pred_cc == 0.0
    ref_empty = structure_metrics(z, m, sp)
    assert ref_empty.empty == "ref" and not ref_empty.evaluated
    assert math.isnan(ref_empty.dsc) and math.isnan(ref_empty.surface_dice)
    assert ref_empty.volume_pred_cc == pytest.approx(8 * 2.0 / 1000)          # the prediction's volume stays
    assert ref_empty.volume_diff_cc == pytest.approx(8 * 2.0 / 1000)
    # reference present, prediction empty: scored as a miss
    pred_empty = structure_metrics(m, z, sp)
    assert pred_empty.empty == "pred" and pred_empty.evaluated
    assert pred_empty.dsc == 0.0 and pred_empty.surface_dice == 0.0
    assert pred_empty.volume_ref_cc == pytest.approx(8 * 2.0 / 1000)
    for r in (both, ref_empty, pred_empty):
        for f in ("hd95", "hd", "assd", "asd_ref_to_pred", "asd_pred_to_ref"):
            assert math.isnan(getattr(r, f)), f
    assert both.as_dict()["evaluated"] is False and pred_empty.as_dict()["evaluated"] is True
    assert structure_metrics(m, m, sp).evaluated
    # the raw distances: the empty side has no surfels, the other side is infinitely far
    sd = compute_surface_distances(m, z, sp)
    assert len(sd.areas_pred) == 0 and np.all(np.isinf(sd.distances_ref_to_pred))
    assert math.isnan(sd.hausdorff(95)) and math.isnan(sd.average_distances()[0])
    assert sd.surface_dice(2.0) == 0.0
    assert math.isnan(compute_surface_distances(z, z, sp).surface_dice(2.0))


def test_is_evaluated_reads_metrics_csv_rows():
    assert is_evaluated({"evaluated": "True", "empty": ""}) and not is_evaluated({"evaluated": "False", "empty": "ref"})
    assert is_evaluated({"evaluated": True}) and not is_evaluated({"evaluated": False})
    # a metrics.csv from before the column: derived from `empty` (its both-empty rows held DSC 1)
    assert is_evaluated({"empty": "pred", "dsc": "0.0"}) and is_evaluated({"empty": ""})
    assert not is_evaluated({"empty": "both", "dsc": "1.0"}) and not is_evaluated({"empty": "ref"})
    with pytest.raises(ValueError):
        is_evaluated({"evaluated": "maybe"})


def test_volumes_use_spacing():
    ref = np.zeros((12, 12, 24), bool)
    pred = np.zeros_like(ref)
    ref[1:11, 1:11, 1:11] = True               # 1000 voxels
    pred[1:11, 1:11, 1:21] = True              # 2000 voxels
    m = structure_metrics(ref, pred, (2.0, 1.0, 0.5))     # 1 mm^3 per voxel
    assert m.volume_ref_cc == pytest.approx(1.0)
    assert m.volume_pred_cc == pytest.approx(2.0)
    assert m.volume_diff_cc == pytest.approx(1.0)
    assert m.dsc == pytest.approx(2 * 1000 / 3000)


def test_validation():
    a = np.zeros((3, 4, 5), bool)
    with pytest.raises(ValueError):
        structure_metrics(a, np.zeros((3, 4, 6), bool), (1, 1, 1))
    with pytest.raises(ValueError):
        structure_metrics(a, a, (1, 1))
    with pytest.raises(ValueError):
        structure_metrics(a, a, (1, 0, 1))
    with pytest.raises(ValueError):
        structure_metrics(np.zeros(5, bool), np.zeros(5, bool), (1,))


def test_evaluate_case_and_summarize():
    shape = (6, 8, 8)
    a = np.zeros(shape, bool)
    a[1:4, 2:5, 2:5] = True
    b = np.roll(a, 1, axis=2)
    sp = (3.0, 1.0, 1.0)
    res = evaluate_case({"Heart": a, "Lung_L": a, "Esophagus": np.zeros(shape, bool)},
                        {"Heart": b, "Esophagus": np.zeros(shape, bool)}, sp)
    assert list(res) == ["Heart", "Lung_L", "Esophagus"]
    assert res["Heart"].hd == 1.0
    assert res["Lung_L"].empty == "pred" and res["Esophagus"].empty == "both"
    assert isinstance(res["Heart"], StructureMetrics) and res["Heart"].as_dict()["empty"] == ""


def test_summarize_leaves_not_evaluated_rows_out():
    """One structure over five cases of a single-side clinical export: contoured in three, not in two."""
    shape, sp = (6, 8, 8), (3.0, 1.0, 1.0)
    a = np.zeros(shape, bool)
    a[1:4, 2:5, 2:5] = True                                   # 27 voxels, 0.081 cc
    z = np.zeros(shape, bool)
    rows = [structure_metrics(a, a, sp),                       # DSC 1
            structure_metrics(a, np.roll(a, 1, axis=2), sp),   # DSC 2/3, HD 1 mm
            structure_metrics(a, z, sp),                       # missed: DSC 0, distances NaN
            structure_metrics(z, z, sp),                       # not contoured, not predicted
            structure_metrics(z, a, sp)]                       # not contoured, predicted
    s = summarize(rows)
    assert (s["n"], s["n_evaluated"], s["n_not_evaluated"]) == (5, 3, 2)
    assert (s["n_not_evaluated_predicted"], s["n_pred_empty"]) == (1, 1)
    assert s["dsc_n"] == 3 and s["dsc_mean"] == pytest.approx((1 + 2 / 3 + 0) / 3)   # no DSC 1 for case 4
    assert s["surface_dice_n"] == 3
    assert s["hd_n"] == 2 and s["hd_mean"] == pytest.approx(0.5)
    # every statistic over the evaluated cases: the not-contoured cases' 0 cc do not lower the volume
    assert s["volume_ref_cc_n"] == 3 and s["volume_ref_cc_mean"] == pytest.approx(0.081)
    assert s["volume_pred_cc_n"] == 3 and s["volume_pred_cc_mean"] == pytest.approx(0.054)
    assert rows[4].volume_pred_cc == pytest.approx(0.081)      # ...while the row keeps the prediction's volume
    # nothing evaluated: NaN statistics, counted, no warning
    none = summarize(rows[3:])
    assert (none["n_evaluated"], none["n_not_evaluated"], none["dsc_n"]) == (0, 2, 0)
    assert math.isnan(none["dsc_mean"]) and math.isnan(none["volume_pred_cc_mean"])


def test_weighted_percentile_edges():
    d = np.array([1.0, 2.0, 3.0, 4.0])
    w = np.ones(4)
    assert M.weighted_percentile(d, w, 0) == 1.0
    assert M.weighted_percentile(d, w, 25) == 1.0     # exactly 25 % reached at 1.0 despite round-off
    assert M.weighted_percentile(d, w, 26) == 2.0
    assert M.weighted_percentile(d, w, 100) == 4.0
    assert math.isnan(M.weighted_percentile(np.zeros(0), np.zeros(0), 95))
    with pytest.raises(ValueError):
        M.weighted_percentile(d, w, 101)


# ------------------------------------------------------------------------------------------------
# Clip detection
# ------------------------------------------------------------------------------------------------

def _clip(mask, z, y, x):
    mask[z:z + 2, y:y + 2, x:x + 3] = True


def test_clip_detection_counts_and_errors():
    # spacing (z, y, x) = (2, 1, 1): a one-slice shift moves a clip by exactly 2 mm
    sp = (2.0, 1.0, 1.0)
    ref = np.zeros((20, 40, 40), bool)
    pred = np.zeros_like(ref)
    _clip(ref, 3, 5, 5)
    _clip(ref, 10, 20, 20)
    _clip(ref, 15, 30, 8)
    _clip(pred, 3, 5, 5)            # hit, exact
    _clip(pred, 11, 20, 20)         # hit, one slice deeper: 2 mm
    _clip(pred, 5, 32, 32)          # false positive far from every clip; the third clip is missed
    det = detect_clips(ref, pred, sp)
    assert det.counts == (2, 1, 1)
    assert sorted(det.centroid_errors_mm) == pytest.approx([0.0, 2.0])
    assert det.missed_indices == [2] and len(det.false_positive_indices) == 1
    assert len(det.ref_centroids_mm) == 3 and len(det.pred_centroids_mm) == 3
    # centroid of a 2x2x3 clip at (3, 5, 5): voxel (3.5, 5.5, 6) -> mm (7, 5.5, 6)
    assert det.ref_centroids_mm[0] == pytest.approx((7.0, 5.5, 6.0))
    assert det.sensitivity == pytest.approx(2 / 3) and det.precision == pytest.approx(2 / 3)
    # an origin moves the centroids, not the matching
    det2 = detect_clips(ref, pred, sp, origin_zyx=(-300.0, 10.0, -20.0))
    assert det2.counts == (2, 1, 1)
    assert det2.ref_centroids_mm[0] == pytest.approx((-293.0, 15.5, -14.0))
    assert sorted(det2.centroid_errors_mm) == pytest.approx([0.0, 2.0])


def test_clip_detection_tolerance_and_one_to_one():
    sp = (1.0, 1.0, 1.0)
    ref = np.zeros((10, 30, 40), bool)
    ref[4:6, 4:6, 4:6] = True
    near = np.zeros_like(ref)
    near[4:6, 4:6, 8:10] = True     # no overlap, 4 mm away: within 5 mm
    far = np.zeros_like(ref)
    far[4:6, 4:6, 10:12] = True     # 6 mm away: no match
    d = detect_clips(ref, near, sp)
    assert d.counts == (1, 0, 0) and d.matches[0].overlap is False
    assert d.matches[0].error_mm == pytest.approx(4.0)
    assert detect_clips(ref, far, sp).counts == (0, 1, 1)
    assert detect_clips(ref, far, sp, tolerance_mm=6.0).counts == (1, 0, 0)
    # one predicted blob between two clips (within tolerance of both) matches only one of them
    two = np.zeros_like(ref)
    two[4:6, 4:6, 4:6] = True
    two[4:6, 4:6, 12:14] = True
    mid = np.zeros_like(ref)
    mid[4:6, 4:6, 8:10] = True
    assert detect_clips(two, mid, sp).counts == (1, 1, 0)
    # 26-connectivity: voxels touching only at a corner are one clip
    diag = np.zeros_like(ref)
    diag[2, 2, 2] = diag[3, 3, 3] = True
    assert detect_clips(diag, diag, sp).counts == (1, 0, 0)
    # empty inputs
    z = np.zeros_like(ref)
    assert detect_clips(z, z, sp).counts == (0, 0, 0)
    assert detect_clips(ref, z, sp).counts == (0, 1, 0)
    assert detect_clips(z, ref, sp).counts == (0, 0, 1)


def test_clip_score_is_metrics_plus_detection():
    from nnunet_breast.evaluation.clip_scores import CLIP_SCORE_COLUMNS, score_clip_mask, summarise_clip_scores

    sp = (2.0, 1.0, 1.0)
    ref, pred = np.zeros((2, 20, 40, 40), bool)
    for z, y, x in ((3, 5, 5), (10, 20, 20)):
        _clip(ref, z, y, x)
    for z, y, x in ((3, 5, 5), (11, 20, 20), (5, 32, 32)):   # exact, one slice deeper (2 mm), a false clip
        _clip(pred, z, y, x)
    s = score_clip_mask("c1", ref, pred, sp)
    m = structure_metrics(ref, pred, sp)
    assert list(s.as_dict()) == CLIP_SCORE_COLUMNS
    assert (s.dsc, s.hd95_mm, s.assd_mm) == (m.dsc, m.hd95, m.assd)
    assert (s.clips_found, s.clips_missed, s.clips_false) == (2, 0, 1)
    assert s.centroid_error_mm_mean == pytest.approx(1.0)
    assert score_clip_mask("c1", ref, pred, sp, metrics=m) == s
    assert math.isnan(score_clip_mask("c2", ref, np.zeros_like(ref), sp).centroid_error_mm_mean)
    total = summarise_clip_scores([s, score_clip_mask("c2", ref, np.zeros_like(ref), sp)])
    assert (total["clips_found"], total["clips_missed"], total["clips_false"]) == (2, 2, 1)
    assert total["dsc_mean"] == pytest.approx(m.dsc / 2) and total["hd95_mm_mean"] == pytest.approx(m.hd95)
    assert (total["n_cases"], total["n_not_evaluated"]) == (2, 0)


def test_clip_score_without_reference_clip_counts_false_clips():
    """A clip-cohort CT without clips: DSC not evaluated (NaN), but every predicted clip is a false clip."""
    from nnunet_breast.evaluation.clip_scores import score_clip_mask, summarise_clip_scores

    sp = (2.0, 1.0, 1.0)
    ref, pred, none = np.zeros((3, 20, 40, 40), bool)
    _clip(ref, 3, 5, 5)
    _clip(pred, 3, 5, 5)
    for z, y, x in ((3, 5, 5), (10, 20, 20)):
        _clip(none, z, y, x)
    no_ref = score_clip_mask("c0", np.zeros_like(ref), none, sp)
    assert (no_ref.clips_found, no_ref.clips_missed, no_ref.clips_false) == (0, 0, 2)
    assert math.isnan(no_ref.dsc) and math.isnan(no_ref.hd95_mm) and math.isnan(no_ref.assd_mm)
    quiet = score_clip_mask("c1", np.zeros_like(ref), np.zeros_like(ref), sp)    # nothing either side
    assert quiet.clips_false == 0 and math.isnan(quiet.dsc)
    hit = score_clip_mask("c2", ref, pred, sp)
    total = summarise_clip_scores([no_ref, quiet, hit])
    assert (total["n_cases"], total["n_not_evaluated"]) == (3, 2)
    assert total["clips_false"] == 2 and total["clips_found"] == 1
    assert total["dsc_mean"] == 1.0 and total["hd95_mm_mean"] == 0.0        # the NaN DSCs left out


def test_label_components_connectivity_and_min_voxels():
    from nnunet_breast.volumes.components import label_components

    mask = np.zeros((5, 5, 5), bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True          # corner neighbours
    mask[4, 4, 0:3] = True                        # a 3-voxel rod
    labels, sizes = label_components(mask)
    assert sizes.tolist() == [2, 3] and labels.max() == 2
    labels, sizes = label_components(mask, connectivity=1)
    assert sizes.tolist() == [1, 1, 3]
    labels, sizes = label_components(mask, min_voxels=3)
    assert sizes.tolist() == [3] and labels[1, 1, 1] == 0 and labels[4, 4, 0] == 1
    plane = np.eye(3, dtype=bool)                 # 2D: 8-connectivity by default
    assert label_components(plane)[1].tolist() == [3]
