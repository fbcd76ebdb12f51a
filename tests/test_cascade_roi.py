"""Stage-2 ROI of the clip cascade: keeps every clip, crop/paste are exact inverses, sane fallbacks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_breast.clips.roi import (
    Roi,
    crop_image,
    paste_back,
    resample_to_spacing,
    roi_from_coarse_probability,
    roi_from_probability,
)
from nnunet_breast.synth.cohort import make_case


@pytest.fixture(scope="module")
def clip_cases():
    return [make_case("clips", i, 0) for i in range(4)]


def _contains(roi: Roi, mask: np.ndarray) -> bool:
    inside = np.zeros(mask.shape, bool)
    inside[roi.slices()] = True
    return bool(mask[~inside].sum() == 0)


def _clip_voxels(case) -> list[tuple[int, int, int]]:
    """[z, y, x] index of each clip centre (identity direction grid)."""
    org, sp = np.array(case.grid.origin), np.array(case.grid.spacing)
    return [tuple(np.round((np.array(c["centre_mm"]) - org) / sp).astype(int)[::-1]) for c in case.clips]


def test_roi_contains_all_clips_and_min_size(clip_cases):
    for case in clip_cases:
        mask = case.masks["Clips"]
        assert mask.any()
        spacing_zyx = case.grid.spacing[::-1]
        roi = roi_from_probability(mask.astype(np.float32), spacing_zyx)
        assert roi.source == "prediction"
        assert _contains(roi, mask)
        for size, n in zip(roi.size, mask.shape):
            assert min(96, n) <= size <= n
        assert all(0 <= a < b <= n for a, b, n in zip(roi.start, roi.stop, mask.shape))


def test_margin_is_in_mm_per_axis():
    prob = np.zeros((60, 200, 200), np.float32)
    prob[30, 100, 100] = 1.0
    roi = roi_from_probability(prob, (5.0, 0.5, 1.0), margin_mm=10.0, min_size_vox=(1, 1, 1))
    # 10 mm = 2 slices at 5 mm, 20 rows at 0.5 mm, 10 columns at 1 mm
    assert roi.start == (28, 80, 90) and roi.stop == (33, 121, 111)


def test_min_size_shifts_inside_image_at_border():
    prob = np.zeros((40, 120, 130), np.float32)
    prob[0, 119, 0] = 0.9
    roi = roi_from_probability(prob, (3.0, 1.0, 1.0), margin_mm=0.0)
    assert roi.size == (40, 96, 96)          # z shorter than 96: whole axis
    assert roi.stop[1] == 120 and roi.start[2] == 0
    assert _contains(roi, prob >= 0.5)


def test_threshold_inclusive():
    prob = np.zeros((100, 100, 100), np.float32)
    prob[5, 5, 5] = 0.5
    prob[95, 95, 95] = 0.49
    roi = roi_from_probability(prob, (1, 1, 1), margin_mm=0, min_size_vox=(1, 1, 1), threshold=0.5)
    assert roi.start == (5, 5, 5) and roi.stop == (6, 6, 6)


def test_two_far_apart_clips_both_kept():
    prob = np.zeros((150, 200, 200), np.float32)
    zz, yy, xx = np.ogrid[:150, :200, :200]
    blob_a = (zz - 75) ** 2 + (yy - 100) ** 2 + (xx - 25) ** 2 <= 9
    blob_b = (zz - 75) ** 2 + (yy - 100) ** 2 + (xx - 175) ** 2 <= 9
    prob[blob_a] = 0.9
    prob[blob_b] = 0.8
    roi = roi_from_probability(prob, (2.0, 1.0, 1.0))
    assert roi.source == "prediction"
    assert _contains(roi, blob_a) and _contains(roi, blob_b)
    assert roi.size[2] > 96
    assert roi.size[0] == 96 and roi.size[1] == 96


def _random_image(rng, size_xyz, spacing, origin, direction=None) -> sitk.Image:
    arr = rng.integers(1, 1000, size=size_xyz[::-1]).astype(np.float32)   # no zeros: outside is detectable
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


ROT = tuple(np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]).ravel())


@pytest.mark.parametrize("spacing,origin,direction", [
    ((0.9, 1.3, 5.0), (-123.4, 56.7, -300.2), None),
    ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), None),
    ((2.5, 0.7, 3.0), (310.0, -0.25, 12.5), ROT),
])
def test_crop_paste_exact_inverse(spacing, origin, direction):
    rng = np.random.default_rng(0)
    img = _random_image(rng, (70, 60, 30), spacing, origin, direction)
    roi = Roi((4, 10, 17), (21, 55, 60), "prediction")
    crop = crop_image(img, roi)
    assert crop.GetSize() == roi.size[::-1]
    np.testing.assert_allclose(crop.GetOrigin(), img.TransformIndexToPhysicalPoint(roi.start[::-1]), atol=1e-9)
    assert crop.GetSpacing() == img.GetSpacing() and crop.GetDirection() == img.GetDirection()
    # a voxel has the same physical point in the crop and in the original
    for idx in [(0, 0, 0), (5, 7, 3), tuple(s - 1 for s in roi.size[::-1])]:
        full_idx = tuple(i + s for i, s in zip(idx, roi.start[::-1]))
        np.testing.assert_allclose(crop.TransformIndexToPhysicalPoint(idx),
                                   img.TransformIndexToPhysicalPoint(full_idx), atol=1e-9)
        assert crop[idx] == img[full_idx]

    back = paste_back(crop, roi, img)
    assert back.GetSize() == img.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), img.GetOrigin())
    np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing())
    np.testing.assert_allclose(back.GetDirection(), img.GetDirection())
    a_back, a_img = sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img)
    inside = np.zeros(a_img.shape, bool)
    inside[roi.slices()] = True
    np.testing.assert_array_equal(a_back[inside], a_img[inside])
    assert np.all(a_back[~inside] == 0)

    # numpy input (e.g. a stage-2 label map) gives the same result
    back_np = paste_back(sitk.GetArrayFromImage(crop), roi, img)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back_np), a_back)


def test_paste_back_rejects_wrong_geometry_and_size():
    rng = np.random.default_rng(1)
    img = _random_image(rng, (40, 40, 20), (0.9, 1.3, 5.0), (-123.4, 56.7, -300.2))
    roi = Roi((2, 3, 4), (10, 20, 30), "prediction")
    other = Roi((3, 3, 4), (11, 20, 30), "prediction")
    with pytest.raises(ValueError):
        paste_back(crop_image(img, other), roi, img)
    with pytest.raises(ValueError):
        paste_back(np.zeros((5, 5, 5)), roi, img)
    with pytest.raises(ValueError):
        crop_image(img, Roi((0, 0, 0), (21, 5, 5), "prediction"))


def test_paste_back_bool_mask():
    rng = np.random.default_rng(2)
    img = _random_image(rng, (30, 30, 10), (1.0, 1.0, 2.0), (5.0, 6.0, 7.0))
    roi = Roi((1, 2, 3), (5, 20, 25), "prediction")
    mask = np.ones(roi.size, bool)
    out = sitk.GetArrayFromImage(paste_back(mask, roi, img))
    assert out.sum() == np.prod(roi.size) and out[roi.slices()].all()


def test_fallback_breast_contains_clips(clip_cases):
    for case in clip_cases:
        prob = np.zeros(case.hu.shape, np.float32)
        spacing_zyx = case.grid.spacing[::-1]
        roi = roi_from_probability(prob, spacing_zyx, hu=case.hu, side=case.side)
        assert roi.source == "fallback_breast"
        assert all(s > 0 for s in roi.size)
        assert _contains(roi, case.masks["Clips"])
        for z, y, x in _clip_voxels(case):
            assert all(a <= v < b for v, a, b in zip((z, y, x), roi.start, roi.stop))


def test_fallback_breast_is_on_treated_side_without_min_size(clip_cases):
    """Without the minimum size (which covers the whole small image) the box is the treated breast."""
    for case in clip_cases:
        prob = np.zeros(case.hu.shape, np.float32)
        spacing_zyx = case.grid.spacing[::-1]
        rois = {s: roi_from_probability(prob, spacing_zyx, min_size_vox=(1, 1, 1), hu=case.hu, side=s)
                for s in "LR"}
        nx, ny = case.hu.shape[2], case.hu.shape[1]
        assert rois["L"].start[2] >= nx // 2 - 6      # patient left = +x = larger column index
        assert rois["R"].stop[2] <= nx // 2 + 6
        for roi in rois.values():
            assert roi.source == "fallback_breast"
            assert roi.stop[1] <= ny // 2 + 6         # anterior = smaller row index
        other = "R" if case.side == "L" else "L"
        assert _contains(rois[case.side], case.masks["Clips"])
        assert not _contains(rois[other], case.masks["Clips"])


def test_fallback_body_without_side(clip_cases):
    case = clip_cases[1]
    prob = np.zeros(case.hu.shape, np.float32)
    roi = roi_from_probability(prob, case.grid.spacing[::-1], hu=case.hu, side=None)
    assert roi.source == "fallback_body"
    assert all(s > 0 for s in roi.size)
    assert _contains(roi, case.masks["Clips"])


def test_fallback_without_ct_is_whole_image():
    prob = np.zeros((20, 30, 40), np.float32)
    roi = roi_from_probability(prob, (3.0, 1.0, 1.0))
    assert roi.source == "fallback_body"
    assert roi.start == (0, 0, 0) and roi.stop == (20, 30, 40)


def test_invalid_side_raises(clip_cases):
    case = clip_cases[0]
    with pytest.raises(ValueError):
        roi_from_probability(np.zeros(case.hu.shape), case.grid.spacing[::-1], hu=case.hu, side="X")


def test_json_round_trip():
    roi = Roi((1, 2, 3), (97, 98, 99), "fallback_breast")
    d = json.loads(json.dumps(roi.to_json()))
    assert d == {"start": [1, 2, 3], "stop": [97, 98, 99], "source": "fallback_breast"}
    assert Roi.from_json(d) == roi
    roi2 = Roi(tuple(np.int64(v) for v in (0, 0, 0)), (5, 6, 7), "prediction")
    assert Roi.from_json(roi2.to_json()) == roi2
    assert isinstance(roi2.start[0], int)


def test_roi_validation():
    with pytest.raises(ValueError):
        Roi((0, 0, 0), (0, 5, 5), "prediction")
    with pytest.raises(ValueError):
        Roi((0, 0, 0), (5, 5, 5), "guess")
    assert Roi((1, 2, 3), (4, 6, 8), "prediction").slices() == (slice(1, 4), slice(2, 6), slice(3, 8))


# ---------------------------------------------------------------------------------------------- coarse stage-1 maps
def _ct(size_xyz=(90, 70, 24), spacing=(0.9, 1.1, 3.0), origin=(-40.3, 12.7, -301.5), direction=None):
    img = sitk.Image([int(v) for v in size_xyz], sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


@pytest.mark.parametrize("direction", [None, (-1, 0, 0, 0, -1, 0, 0, 0, 1)], ids=["identity", "rotated"])
def test_resample_to_spacing_covers_the_extent(direction):
    ct = _ct(direction=direction)
    ct += 40.0                                                   # water-like everywhere
    coarse = resample_to_spacing(ct, (4.0, 4.0, 4.0))
    assert coarse.GetSpacing() == (4.0, 4.0, 4.0) and coarse.GetDirection() == ct.GetDirection()
    for axis in range(3):
        extent = ct.GetSize()[axis] * ct.GetSpacing()[axis]
        assert extent <= coarse.GetSize()[axis] * 4.0 < extent + 4.0
    # outer faces coincide at the start; values inside are the CT's, beyond its extent air
    first = ct.TransformContinuousIndexToPhysicalPoint([-0.5] * 3)
    np.testing.assert_allclose(coarse.TransformContinuousIndexToPhysicalPoint([-0.5] * 3), first, atol=1e-6)
    arr = sitk.GetArrayFromImage(coarse)
    assert np.allclose(arr[:-1, :-1, :-1], 40.0)
    assert set(np.unique(arr).tolist()) == {40.0, -1000.0}        # no blend of CT and fill


@pytest.mark.parametrize("direction", [None, (-1, 0, 0, 0, -1, 0, 0, 0, 1)], ids=["identity", "rotated"])
def test_coarse_roi_equals_roi_of_the_map_taken_onto_the_ct(direction):
    """A coarse map gives the ROI that the same map, nearest-neighbour resampled onto the CT, gives."""
    ct = _ct(direction=direction)
    coarse = resample_to_spacing(ct, (4.0, 4.0, 4.0)) * 0.0
    arr = sitk.GetArrayFromImage(coarse)
    arr[3:5, 6, 9:12] = 0.9                     # a flagged region ...
    arr[1, 2, 2] = 0.7                          # ... and a far flagged voxel
    prob = sitk.GetImageFromArray(arr)
    prob.CopyInformation(coarse)
    on_ct = sitk.GetArrayFromImage(sitk.Resample(prob, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0))
    for margin, min_size in ((0.0, (1, 1, 1)), (10.0, (96, 96, 96))):
        want = roi_from_probability(on_ct, ct.GetSpacing()[::-1], margin, min_size)
        got = roi_from_coarse_probability(prob, ct, margin, min_size)
        assert got == want and got.source == "prediction"


def test_coarse_roi_falls_back_when_nothing_is_flagged(clip_cases):
    case = clip_cases[0]
    ct = sitk.GetImageFromArray(case.hu)
    ct.SetSpacing(case.grid.spacing)
    ct.SetOrigin(case.grid.origin)
    empty = resample_to_spacing(ct, (4.0, 4.0, 4.0)) * 0.0
    roi = roi_from_coarse_probability(empty, ct, hu=case.hu, side=case.side)
    assert roi == roi_from_probability(np.zeros(case.hu.shape), case.grid.spacing[::-1], hu=case.hu, side=case.side)
    assert roi.source == "fallback_breast"
