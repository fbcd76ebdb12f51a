"""Training rules for clinical exports: no left-right mirroring for lateral structures, partial labels."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunet_breast import trainers
from nnunet_breast.errors import UserError
from nnunet_breast.trainers.laterality import lateral_structures, left_right_axes
from nnunet_breast.trainers.partial_labels import (
    PartialLabelRegionLoss,
    channel_mask,
    exclusion_ramp,
    is_partial,
    opposite_sides,
)

IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)
PRONE = (-1, 0, 0, 0, -1, 0, 0, 0, 1)                  # head first prone: x and y negated
DECUBITUS = (0, 1, 0, -1, 0, 0, 0, 0, 1)               # image columns run along the patient's y, rows along x
STRUCTURES = ["CTVp_breast_L", "CTVp_breast_R", "Heart"]


# ---------------------------------------------------------------------------------------------------------------------
# which axis is left-right
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction,transpose,expected", [
    (IDENTITY, [0, 1, 2], {2}),          # SimpleITK x = numpy axis 2
    (PRONE, [0, 1, 2], {2}),             # negated cosines: same axis
    (DECUBITUS, [0, 1, 2], {1}),         # SimpleITK axis 1 runs along the patient's x
    (IDENTITY, [2, 0, 1], {0}),          # nnU-Net moved numpy axis 2 to the front
    (IDENTITY, [1, 2, 0], {1}),
])
def test_left_right_axis_comes_from_direction_and_transpose(direction, transpose, expected):
    assert left_right_axes([direction], transpose) == expected


def test_cases_in_different_orientations_exclude_every_left_right_axis():
    assert left_right_axes([IDENTITY, DECUBITUS], [0, 1, 2]) == {1, 2}


def test_only_structures_with_a_side_are_lateral():
    assert lateral_structures({"labels": {"background": 0, "Heart": 1, "Lung_L": 2}}) == ["Lung_L"]
    assert lateral_structures({"labels": {"background": 0, "Clips": 1}}) == []


def _plans(n_structures: int) -> dict:
    cfg = {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
           "patch_size": [32, 64, 64], "median_image_size_in_voxels": [40, 80, 80], "spacing": [2.0, 1.0, 1.0],
           "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
           "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
           "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
           "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
           "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
           "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
           "batch_dice": False,
           "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                            "arch_kwargs": {"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]]}, "_kw_requires_import": []}}
    return {"continue_training": False, "dataset_name": "Dataset777_Breast", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [2.0, 1.0, 1.0], "original_median_shape_after_transp": [40, 80, 80],
            "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {"3d_fullres": cfg}, "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {"0": {"max": 3000.0, "mean": 0.0, "median": 0.0,
                                                                  "min": -1000.0, "percentile_00_5": -1000.0,
                                                                  "percentile_99_5": 1500.0, "std": 300.0}}}


def _dataset_json(structures, annotated=None) -> dict:
    # overlapping regions (ids 1..n single structures, n+1 = all of them) -> region-based training, as ours
    n = len(structures)
    labels = {"background": 0, **{s: [i + 1, n + 1] for i, s in enumerate(structures)}}
    out = {"channel_names": {"0": "CT"}, "labels": labels, "regions_class_order": list(range(1, n + 1)),
           "numTraining": 2, "file_ending": ".nii.gz", "nnunet_breast": {"cohort": "breast"}}
    if annotated is not None:
        out["nnunet_breast"]["annotated"] = annotated
    return out


@pytest.fixture
def preprocessed(tmp_path, monkeypatch):
    """nnU-Net folders with two preprocessed cases' properties in the given orientation."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    folder = tmp_path / "nnUNet_preprocessed" / "Dataset777_Breast" / "nnUNetPlans_3d_fullres"
    folder.mkdir(parents=True)

    def write(direction=IDENTITY, cases=("a", "b")):
        for case in cases:
            with open(folder / f"{case}.pkl", "wb") as f:
                pickle.dump({"sitk_stuff": {"spacing": (1.0, 1.0, 2.0), "origin": (0.0, 0.0, 0.0),
                                            "direction": direction}}, f)
            (folder / f"{case}.npz").write_bytes(b"")          # nnU-Net's identifier listing reads *.npz
        return folder
    return write


@pytest.mark.parametrize("trainer_cls", [trainers.nnUNetTrainerEffNetB0, trainers.nnUNetTrainerEffNetB0Paper,
                                         trainers.nnUNetTrainerEffNetB0_5epochs, trainers.nnUNetTrainerNoLRMirroring,
                                         trainers.nnUNetTrainerNoLRMirroring_10epochs])
@pytest.mark.parametrize("direction,axis", [(IDENTITY, 2), (DECUBITUS, 1)])
def test_breast_trainers_do_not_mirror_left_right(preprocessed, trainer_cls, direction, axis):
    preprocessed(direction)
    trainer = trainer_cls(_plans(3), "3d_fullres", 0, _dataset_json(STRUCTURES), device=torch.device("cpu"))
    rotation, _, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    expected = tuple(a for a in (0, 1, 2) if a != axis)
    assert mirror_axes == expected and trainer.inference_allowed_mirroring_axes == expected
    assert max(abs(r) for r in rotation) <= np.deg2rad(30) + 1e-9       # no 180-degree turn either


def test_midline_only_dataset_keeps_every_mirror_axis(preprocessed):
    preprocessed(IDENTITY)
    trainer = trainers.nnUNetTrainerEffNetB0(_plans(2), "3d_fullres", 0, _dataset_json(["Heart", "Esophagus"]),
                                             device=torch.device("cpu"))
    assert trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[3] == (0, 1, 2)


# ---------------------------------------------------------------------------------------------------------------------
# partial labels: the loss
# ---------------------------------------------------------------------------------------------------------------------
def _batch(seed=0, b=2, c=3, shape=(6, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((b, c, *shape), generator=g, requires_grad=True)
    y = (torch.rand((b, c, *shape), generator=g) > 0.7).float()
    return x, y


@pytest.mark.parametrize("batch_dice", [False, True])
def test_fully_annotated_loss_equals_nnunets_region_loss(batch_dice):
    x, y = _batch()
    ours = PartialLabelRegionLoss(batch_dice)(x, y)
    nnunet = DC_and_BCE_loss({}, {"batch_dice": batch_dice, "do_bg": True, "smooth": 1e-5, "ddp": False},
                             dice_class=MemoryEfficientSoftDiceLoss)(x, y)
    torch.testing.assert_close(ours, nnunet, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_dice", [False, True])
def test_unannotated_structures_add_nothing_and_get_no_gradient(batch_dice):
    x, y = _batch()
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])      # case 0 lacks structure 1
    loss = PartialLabelRegionLoss(batch_dice)
    loss.channel_mask = mask
    value = loss(x, y)
    value.backward()
    assert torch.count_nonzero(x.grad[0, 1]) == 0                 # exactly zero gradient
    assert torch.count_nonzero(x.grad[0, 0]) > 0 and torch.count_nonzero(x.grad[1, 1]) > 0
    # the value does not depend on what the network predicts for the unannotated structure
    x2 = x.detach().clone()
    x2[0, 1] = torch.randn_like(x2[0, 1]) * 10
    torch.testing.assert_close(loss(x2, y), value.detach())
    # nor on what the (background-filled) target says there
    y2 = y.clone()
    y2[0, 1] = 1.0 - y2[0, 1]
    torch.testing.assert_close(loss(x.detach(), y2), value.detach())


def test_annotated_but_empty_structure_still_trains_as_background():
    x, y = _batch()
    y[0, 1] = 0.0
    loss = PartialLabelRegionLoss(False)
    loss.channel_mask = torch.ones((2, 3))
    loss(x, y).backward()
    assert torch.all(x.grad[0, 1] > 0)                            # pushed down everywhere


def test_deep_supervision_scales_are_all_masked():
    inner = PartialLabelRegionLoss(False)
    inner.channel_mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    ds = DeepSupervisionWrapper(inner, [0.6, 0.4])
    (x1, y1), (x2, y2) = _batch(0), _batch(1, shape=(3, 4, 4))
    ds([x1, x2], [y1, y2]).backward()
    assert torch.count_nonzero(x1.grad[0, 1]) == 0 and torch.count_nonzero(x2.grad[0, 1]) == 0


def test_opposite_sides_from_the_catalog():
    assert opposite_sides(STRUCTURES).tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert opposite_sides(["CTVn_L2_L", "Lung_R", "MyOwnStructure"]).tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("batch_dice", [False, True])
def test_known_negatives_teach_an_unannotated_structure_only_where_the_other_side_is_annotated(batch_dice):
    """Case 0 annotates the right breast (channel 1) and heart, not the left breast (channel 0): the left-breast
    output learns background on the right breast's voxels and nothing anywhere else."""
    x, y = _batch()
    y[0, 0] = 0.0                                                   # not contoured: written as background
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    loss = PartialLabelRegionLoss(batch_dice)
    loss.channel_mask, loss.exclusive = mask, opposite_sides(STRUCTURES)
    loss(x, y).backward()
    right = y[0, 1] > 0
    assert torch.all(x.grad[0, 0][right] > 0)                       # pushed towards background there
    assert torch.count_nonzero(x.grad[0, 0][~right]) == 0           # and untouched elsewhere
    # the heart (no side) excludes nothing: without a right-side structure the channel learns nothing
    y2 = y.clone()
    y2[0, 1] = 0.0
    x.grad = None
    loss(x, y2).backward()
    assert torch.count_nonzero(x.grad[0, 0]) == 0
    # fully annotated: still nnU-Net's loss
    full = PartialLabelRegionLoss(batch_dice)
    full.channel_mask, full.exclusive = torch.ones((2, 3)), opposite_sides(STRUCTURES)
    torch.testing.assert_close(full(x, y), PartialLabelRegionLoss(batch_dice)(x, y))


def test_exclusion_keeps_its_weight_however_much_background_the_patch_holds():
    """The exclusion term is a Dice of the unannotated output with its known negatives: painting them costs about
    1 whether the patch is mostly those voxels or mostly something else (as BCE voxels alone their weight falls
    with the patch's size)."""
    def penalty(shape, exclusion_weight):
        y = torch.zeros((1, 3, *shape))
        y[0, 1, :2, :2, :2] = 1.0                                   # the right breast, annotated
        loss = PartialLabelRegionLoss(False)
        loss.channel_mask, loss.exclusive = torch.tensor([[0.0, 1.0, 1.0]]), opposite_sides(STRUCTURES)
        loss.exclusion_weight = exclusion_weight
        x = torch.full((1, 3, *shape), -10.0)
        x[0, 1] = torch.where(y[0, 1] > 0, 10.0, -10.0)               # the annotated outputs right
        painted = x.clone()
        painted[0, 0] = torch.where(y[0, 1] > 0, 10.0, -10.0)         # the left output on the right breast
        return float(loss(painted, y) - loss(x, y))

    small, large = (4, 4, 4), (16, 16, 16)                          # the known negatives: 1/8 and 1/512 of it
    bce_small, bce_large = penalty(small, 0.0), penalty(large, 0.0)
    exclusion_small, exclusion_large = penalty(small, 1.0) - bce_small, penalty(large, 1.0) - bce_large
    assert exclusion_small > 0.95 and exclusion_large > 0.95 and abs(exclusion_small - exclusion_large) < 0.01
    assert 0 < bce_large < bce_small / 10                             # BCE only: diluted by the background


def test_the_exclusion_term_ramps_up_over_the_first_epochs():
    """A structure is learnt first, its side then: the exclusion term starts at 0 and reaches its weight at 30 % of
    the epochs; the loss's term scales with the ramp, the known negatives' BCE does not."""
    assert [round(exclusion_ramp(e, 14, 0.3), 3) for e in (0, 2, 4, 5, 13)] == [0.0, 0.476, 0.952, 1.0, 1.0]
    assert exclusion_ramp(0, 14, 0.0) == 1.0
    y = torch.zeros((1, 3, 4, 4, 4))
    y[0, 1, :2, :2, :2] = 1.0                                       # the right breast, annotated
    x = torch.where(y > 0, 10.0, -10.0)
    x[0, 0] = torch.where(y[0, 1] > 0, 10.0, -10.0)                   # the unannotated left output on it
    loss = PartialLabelRegionLoss(False)
    loss.channel_mask, loss.exclusive = torch.tensor([[0.0, 1.0, 1.0]]), opposite_sides(STRUCTURES)
    values = []
    for ramp in (0.0, 0.5, 1.0):
        loss.exclusion_ramp = ramp
        values.append(float(loss(x, y)))
    assert values[2] - values[0] > 0.95                                # the whole term at the end of the ramp
    assert values[1] - values[0] == pytest.approx((values[2] - values[0]) / 2, rel=1e-4)


def test_known_negatives_at_every_deep_supervision_scale():
    inner = PartialLabelRegionLoss(False)
    inner.channel_mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    inner.exclusive = opposite_sides(STRUCTURES)
    ds = DeepSupervisionWrapper(inner, [0.6, 0.4])
    (x1, y1), (x2, y2) = _batch(0), _batch(1, shape=(3, 4, 4))
    ds([x1, x2], [y1, y2]).backward()
    for x, y in ((x1, y1), (x2, y2)):
        assert torch.equal(x.grad[0, 0] != 0, y[0, 1] > 0)


def test_channel_mask_from_the_annotation_record():
    record = {"a": ["CTVp_breast_L", "Heart"], "b": STRUCTURES}
    assert is_partial(record, STRUCTURES) and not is_partial({"b": STRUCTURES}, STRUCTURES)
    assert not is_partial(None, STRUCTURES)
    assert channel_mask(record, ["b", "a"], STRUCTURES).tolist() == [[1, 1, 1], [1, 0, 1]]
    with pytest.raises(UserError, match="case c is missing"):
        channel_mask(record, ["c"], STRUCTURES)


# ---------------------------------------------------------------------------------------------------------------------
# partial labels: the trainer
# ---------------------------------------------------------------------------------------------------------------------
def _initialised_loss(trainer_cls, annotated):
    trainer = trainer_cls(_plans(3), "3d_fullres", 0, _dataset_json(STRUCTURES, annotated), device=torch.device("cpu"))
    trainer.enable_deep_supervision = True
    return trainer, trainer._build_loss()


def test_trainer_uses_the_partial_label_loss_only_for_partial_datasets(preprocessed):
    preprocessed(IDENTITY)
    trainer, loss = _initialised_loss(trainers.nnUNetTrainerEffNetB0,
                                      {"a": ["CTVp_breast_L", "Heart"], "b": STRUCTURES})
    assert isinstance(loss, DeepSupervisionWrapper) and isinstance(loss.loss, PartialLabelRegionLoss)
    trainer.loss = loss
    trainer._set_channel_mask({"keys": ["b", "a"]})
    assert loss.loss.channel_mask.tolist() == [[1, 1, 1], [1, 0, 1]]
    assert loss.loss.exclusive.tolist() == opposite_sides(STRUCTURES).tolist()
    _, full = _initialised_loss(trainers.nnUNetTrainerNoLRMirroring, {"a": STRUCTURES, "b": STRUCTURES})
    assert isinstance(full.loss, DC_and_BCE_loss)                          # nnU-Net's own
    _, legacy = _initialised_loss(trainers.nnUNetTrainerEffNetB0, None)    # no record: fully annotated
    assert isinstance(legacy.loss, DC_and_BCE_loss)


def test_trainer_refuses_a_record_that_misses_a_case(preprocessed):
    preprocessed(IDENTITY, cases=("a", "b", "c"))
    with pytest.raises(UserError, match="case c is missing"):
        _initialised_loss(trainers.nnUNetTrainerEffNetB0, {"a": ["Heart"], "b": STRUCTURES})
