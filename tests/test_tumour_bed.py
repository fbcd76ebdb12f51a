"""Tumour-bed proposal from clips: hull volume, margin as a Minkowski sum, anisotropy, outliers, edge cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import Delaunay

from nnunet_breast.clips.tumour_bed import TumourBedProposal, propose_tumour_bed

A = 42.0      # outer side (mm) of the cube spanned by the clips
CLIP = 3.0    # each clip is a 3 mm cube
OFFSET = 30.0  # mm from the array corner to the cube


def minkowski_cube_ball(a: float, m: float) -> float:
    """Volume (mm^3) of a cube of side a grown by a ball of radius m."""
    return a ** 3 + 6 * a * a * m + 3 * math.pi * a * m * m + 4 / 3 * math.pi * m ** 3


def cube_clips(spacing, size_mm=100.0, a=A, offset=OFFSET, extra=()):
    """Eight 3 mm clips at the corners of a cube of outer side ``a`` mm, plus clips at ``extra`` (mm)."""
    shape = tuple(int(round(size_mm / s)) for s in spacing)
    m = np.zeros(shape, bool)
    corners = [(cz, cy, cx) for cz in (0, 1) for cy in (0, 1) for cx in (0, 1)]
    starts = [tuple(offset + c * (a - CLIP) for c in corner) for corner in corners] + list(extra)
    for lo in starts:
        m[tuple(slice(int(round(l / s)), int(round((l + CLIP) / s))) for l, s in zip(lo, spacing))] = True
    return m


def cc(mm3: float) -> float:
    return mm3 / 1000.0


def test_hull_of_cube_clips_is_the_cube():
    p = propose_tumour_bed(cube_clips((1, 1, 1)), (1, 1, 1), margin_mm=0)
    assert isinstance(p, TumourBedProposal)
    assert p.clips_used == 8 and p.clips_excluded == []
    assert p.volume_cc == pytest.approx(cc(A ** 3), rel=0.02)
    assert p.mask.dtype == bool and p.mask.sum() * 1e-3 == pytest.approx(p.volume_cc)


@pytest.mark.parametrize("margin", [5.0, 10.0])
def test_margin_is_minkowski_sum(margin):
    p = propose_tumour_bed(cube_clips((1, 1, 1)), (1, 1, 1), margin_mm=margin)
    assert p.margin_mm == margin
    assert p.volume_cc == pytest.approx(cc(minkowski_cube_ball(A, margin)), rel=0.03)


@pytest.mark.parametrize("spacing", [(3.0, 1.0, 1.0), (2.5, 0.8, 0.8)])
@pytest.mark.parametrize("margin", [0.0, 10.0])
def test_anisotropic_grid_gives_the_same_physical_volume(spacing, margin):
    iso = propose_tumour_bed(cube_clips((1, 1, 1)), (1, 1, 1), margin_mm=margin)
    aniso = propose_tumour_bed(cube_clips(spacing), spacing, margin_mm=margin)
    assert aniso.volume_cc == pytest.approx(iso.volume_cc, rel=0.04)
    assert aniso.volume_cc == pytest.approx(cc(minkowski_cube_ball(A, margin)), rel=0.04)


def test_margin_reaches_margin_mm_along_z_on_thick_slices():
    spacing = (3.0, 1.0, 1.0)
    clips = cube_clips(spacing)
    p = propose_tumour_bed(clips, spacing, margin_mm=9.0)
    z_clips = np.flatnonzero(clips.any(axis=(1, 2)))
    z_bed = np.flatnonzero(p.mask.any(axis=(1, 2)))
    # clip voxels span 3 mm slabs; 9 mm is exactly 3 slices beyond the clip slabs on each side
    assert z_bed[0] == z_clips[0] - 3 and z_bed[-1] == z_clips[-1] + 3


def test_hull_matches_delaunay_of_voxel_corners():
    rng = np.random.default_rng(3)
    spacing = np.array([2.5, 0.9, 1.1])
    shape = (20, 50, 45)
    m = np.zeros(shape, bool)
    for _ in range(5):
        c = rng.integers([4, 10, 10], [16, 40, 35])
        m[c[0], c[1]:c[1] + 2, c[2]:c[2] + 3] = True
    p = propose_tumour_bed(m, spacing, margin_mm=0, outlier_mm=None)
    idx = np.argwhere(m)
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    pts = ((idx[:, None, :] + corners[None] - 0.5) * spacing).reshape(-1, 3)
    centres = np.argwhere(np.ones(shape, bool)) * spacing
    ref = (Delaunay(pts).find_simplex(centres) >= 0).reshape(shape)
    assert np.array_equal(p.mask, ref)
    assert m[p.mask].sum() == m.sum()  # the hull holds every clip voxel


def test_within_cuts_everything_outside():
    clips = cube_clips((1, 1, 1))
    within = np.zeros_like(clips)
    within[:, :, :55] = True  # a "body" that ends half-way through the cube
    full = propose_tumour_bed(clips, (1, 1, 1), margin_mm=10)
    cut = propose_tumour_bed(clips, (1, 1, 1), margin_mm=10, within=within)
    assert not (cut.mask & ~within).any()
    assert np.array_equal(cut.mask, full.mask & within)
    assert 0 < cut.volume_cc < full.volume_cc
    assert "cut to" in cut.note


def test_outlier_clip_is_excluded_and_reported():
    base = propose_tumour_bed(cube_clips((1, 1, 1), size_mm=200), (1, 1, 1), margin_mm=5)
    far = (OFFSET + 100 + A, OFFSET, OFFSET)  # 100 mm beyond the cube in z
    clips = cube_clips((1, 1, 1), size_mm=200, extra=[far])
    p = propose_tumour_bed(clips, (1, 1, 1), margin_mm=5)
    assert p.clips_used == 8 and len(p.clips_excluded) == 1
    ex = p.clips_excluded[0]
    assert ex.centroid_mm[0] == pytest.approx(far[0] + 1.0)  # 3 mm clip from far[0]: centre at +1 voxel
    assert ex.distance_mm > 40
    assert "outlier" in p.note
    assert np.array_equal(p.mask, base.mask)

    everything = propose_tumour_bed(clips, (1, 1, 1), margin_mm=5, outlier_mm=None)
    assert everything.clips_used == 9 and everything.clips_excluded == []
    assert everything.volume_cc > 1.5 * base.volume_cc


def test_single_clip_gives_a_ball_of_the_margin():
    m = np.zeros((60, 60, 60), bool)
    m[30, 30, 30] = True
    p = propose_tumour_bed(m, (1, 1, 1), margin_mm=12)
    assert p.clips_used == 1
    # a 1 mm voxel grown by 12 mm: a ball of radius ~12.5 mm
    assert p.volume_cc == pytest.approx(cc(minkowski_cube_ball(1.0, 12.0)), rel=0.03)
    d = np.linalg.norm(np.argwhere(p.mask) - 30, axis=1)
    assert d.max() <= 12 * 1.01 + math.sqrt(3) / 2  # the ball is a polyhedron, within 1 % of the radius
    assert np.all(p.mask[np.linalg.norm(np.indices(m.shape).T - 30, axis=-1).T <= 12])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_degenerate_clip_sets_do_not_fail(n):
    # one voxel, two voxels on a line, three voxels in one plane: qhull would fail on the centres alone
    m = np.zeros((20, 20, 20), bool)
    for k in range(n):
        m[10, 10 + 4 * (k == 2), 5 + 5 * k] = True
    p = propose_tumour_bed(m, (1, 1, 1), margin_mm=0)
    assert p.clips_used == n
    assert (p.mask & m).sum() == n
    assert p.mask[10].sum() == p.mask.sum()  # stays in the clips' plane: each voxel is 1 mm thick


def test_two_clips_are_never_outliers():
    m = np.zeros((10, 10, 200), bool)
    m[5, 5, 2] = m[5, 5, 195] = True
    p = propose_tumour_bed(m, (1, 1, 1), margin_mm=2)
    assert p.clips_used == 2 and p.clips_excluded == []
    assert "no outlier check" in p.note


def test_empty_prediction_gives_empty_proposal_with_note():
    p = propose_tumour_bed(np.zeros((8, 9, 10), bool), (3, 1, 1))
    assert p.mask.shape == (8, 9, 10) and not p.mask.any() and p.empty
    assert p.clips_used == 0 and p.volume_cc == 0.0
    assert "no clips" in p.note


def test_too_few_clips_gives_empty_proposal():
    m = np.zeros((20, 20, 20), bool)
    m[5, 5, 5] = m[10, 10, 10] = True
    p = propose_tumour_bed(m, (1, 1, 1), min_clips=3)
    assert not p.mask.any() and p.clips_used == 2
    assert "3 required" in p.note


def test_min_voxels_drops_speckle():
    m = cube_clips((1, 1, 1))
    m[5, 5, 5] = True  # a one-voxel false positive far from the clips is also an outlier; disable that
    p = propose_tumour_bed(m, (1, 1, 1), margin_mm=0, outlier_mm=None, min_voxels=2)
    assert p.clips_used == 8 and not p.mask[5, 5, 5]


@pytest.mark.parametrize("kwargs", [
    {"margin_mm": -1.0},
    {"margin_mm": float("nan")},
    {"within": np.ones((4, 4, 4), bool)},
    {"outlier_mm": 0.0},
    {"min_clips": 0},
    {"min_clips": 1.5},
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        propose_tumour_bed(np.zeros((5, 5, 5), bool), (1, 1, 1), **kwargs)


@pytest.mark.parametrize("mask, spacing", [
    (np.zeros((5, 5), bool), (1, 1)),
    (np.zeros((2, 5, 5, 5), bool), (1, 1, 1)),
    (np.zeros((5, 5, 5), bool), (1, 1)),
    (np.zeros((5, 5, 5), bool), (1, 0, 1)),
])
def test_bad_shapes_raise(mask, spacing):
    with pytest.raises(ValueError):
        propose_tumour_bed(mask, spacing)
