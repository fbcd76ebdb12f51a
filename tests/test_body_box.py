"""The body box outside which prediction's fast path runs no patch: it holds the whole body plus the margin of
air, and most of a wide field of view's air is left out."""
import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_breast.synth.cohort import make_case
from nnunet_breast.volumes.body import BODY_MARGIN_MM, BOX_GRID_MM, body_box, body_mask


@pytest.fixture(scope="module")
def ct():
    """A small phantom in a scanner's wide field of view (air around it, as on a planning CT)."""
    case = make_case("breast", 0, seed=3, size="small")
    image = sitk.GetImageFromArray(np.pad(case.hu, ((0, 0), (40, 40), (40, 40)), constant_values=-1000))
    image.SetSpacing(case.grid.spacing)
    image.SetOrigin([o - 40 * sp for o, sp in zip(case.grid.origin[:2], case.grid.spacing[:2])] + [case.grid.origin[2]])
    return image


def test_box_holds_the_body_and_the_margin_and_cuts_air(ct):
    hu = sitk.GetArrayFromImage(ct)
    body = body_mask(hu, ct.GetSpacing())
    box = body_box(hu, ct.GetSpacing())
    inside = np.zeros_like(body)
    inside[box] = True
    assert body.any() and not (body & ~inside).any()                   # no body voxel outside the box
    assert inside.sum() < 0.5 * inside.size                            # most of the air around the patient goes
    spacing_zyx = np.array(ct.GetSpacing()[::-1])
    for axis in (1, 2):     # in-plane: the margin of air is there, and at most 2 steps of the box's grid more
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(body.any(axis=other))
        lo, hi, n = box[axis].start, box[axis].stop, body.shape[axis]
        want, step = int(np.ceil(BODY_MARGIN_MM / spacing_zyx[axis])), round(BOX_GRID_MM / spacing_zyx[axis])
        assert step == 2                                               # 1.27 mm: the body is found on 2.54 mm
        assert max(0, idx[0] - want - 2 * step) <= lo <= max(0, idx[0] - want), (lo, idx[0], want)
        assert min(n, idx[-1] + 1 + want) <= hi <= min(n, idx[-1] + 1 + want + 2 * step), (hi, idx[-1], want)


def test_box_of_an_array_in_another_axis_order_is_the_same_box(ct):
    """nnU-Net's preprocessed arrays may be transposed (transpose_forward): the box follows the axes."""
    hu = sitk.GetArrayFromImage(ct)
    box = body_box(hu, ct.GetSpacing())
    assert body_box(hu.transpose(2, 1, 0), ct.GetSpacing()[::-1]) == box[::-1]


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_the_box_moves_with_the_patient_in_a_shifted_field_of_view(ct, shift):
    """The grid the body is found on starts at the body, not at the array's corner (step 2 here): the box of a
    field of view shifted by any number of voxels is the same box, shifted."""
    hu = sitk.GetArrayFromImage(ct)
    box = body_box(hu, ct.GetSpacing())
    moved = body_box(np.pad(hu, ((0, 0), (shift, 0), (0, shift)), constant_values=-1000), ct.GetSpacing())
    assert moved == (box[0], slice(box[1].start + shift, box[1].stop + shift), box[2])


def test_no_body_no_box():
    air = sitk.GetImageFromArray(np.full((8, 32, 32), -1000, np.float32))
    assert body_box(sitk.GetArrayFromImage(air), air.GetSpacing()) is None


def test_a_box_narrower_than_the_patch_is_widened_with_the_images_own_voxels():
    from nnunet_breast.inference.fast_path import widened

    box = (slice(10, 20), slice(0, 40), slice(90, 98))
    assert widened(box, (100, 50, 100), (16, 32, 32)) == (slice(7, 23), slice(0, 40), slice(68, 100))
    assert widened((slice(0, 16), slice(5, 15)), (16, 20), (16, 32))[1] == slice(0, 20)   # never beyond the image


@pytest.mark.parametrize("patch,spacing,target", [(256, 1.27, 1.1699999570846558), (56, 3.0, 3.0), (5, 0.5, 1.0),
                                                   (96, 0.9765625, 1.5), (40, 2.5, 3.0)])
def test_voxels_for_a_patch_resample_to_the_patch_and_one_fewer_does_not(patch, spacing, target):
    """The CT crop the fast path hands nnU-Net: its resampling (``round(n * spacing / target)``) gives at least a
    patch (no zero padding), and no more voxels than that need (an extra tile of the sliding window)."""
    from nnunet_breast.inference.fast_path import voxels_for_patch

    n = voxels_for_patch(patch, spacing, target)
    assert round(n * spacing / target) >= patch > round((n - 1) * spacing / target)

