"""Clip trainers (nnunet_breast.trainers: clips, variants, transforms, lr_schedule) against real nnU-Net code:
network, augmentation, optimiser, schedule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_breast import trainers as clips
from nnunet_breast.networks.plans import RES_SE_UNET_CLASS as NETWORK_CLASS_NAME
from nnunet_breast.networks.plans import ClipChannelMismatchError, clip_arch_kwargs
from nnunet_breast.networks.res_se_unet import ResSEUNet3d
from nnunet_breast.trainers.cpu import CPUAutocast
from nnunet_breast.trainers.lr_schedule import LinearWarmupCosineLRScheduler
from nnunet_breast.trainers.transforms import (
    AIR_HU,
    ClipRegionTargetTransform,
    CTIntensityScalingTransform,
    HUPaddedSpatialTransform,
    transform_name,
)
from nnunet_breast.trainers.transforms import INTENSITY_TRANSFORMS as RAW_HU_UNSAFE_TRANSFORMS

PATCH = [32, 64, 64]
STRIDES = {4: [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
           5: [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]}

# trainer -> (dataset channels, expected input-layer out channels, binary, passthrough, metal window)
M = (300.0, 3000.0)
VARIANTS = {
    clips.nnUNetTrainerClipLocation: (1, 2, 300.0, 0, None),
    clips.nnUNetTrainerClipLocationNoBinary: (1, 1, None, 0, None),
    clips.nnUNetTrainerClipSegmentation: (2, 3, None, 1, M),
    clips.nnUNetTrainerClipSegmentationPaperInputs: (2, 2, None, 1, None),
    clips.nnUNetTrainerClipSegmentationNoMap: (1, 2, None, 0, M),
    clips.nnUNetTrainerClipSingleStage: (1, 3, 300.0, 0, M),
    clips.nnUNetTrainerClipLocation_5epochs: (1, 2, 300.0, 0, None),
    clips.nnUNetTrainerClipSegmentation_5epochs: (2, 3, None, 1, M),
    clips.nnUNetTrainerClipLocationTiny_2epochs: (1, 2, 300.0, 0, None),
    clips.nnUNetTrainerClipSegmentationTiny_2epochs: (2, 3, None, 1, M),
}


def _stock_arch(n_stages: int) -> dict:
    """A stock nnU-Net PlainConvUNet configuration (what nnUNetv2_plan_experiment writes)."""
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n_stages, "features_per_stage": [min(32 * 2 ** i, 320) for i in range(n_stages)],
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * n_stages,
            "strides": STRIDES[n_stages], "n_conv_per_stage": [2] * n_stages,
            "n_conv_per_stage_decoder": [2] * (n_stages - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def make_plans(n_channels: int = 1) -> dict:
    cfg = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": PATCH, "median_image_size_in_voxels": [40, 80, 80], "spacing": [2.0, 1.0, 1.0],
        "normalization_schemes": ["NoNormalization"] * n_channels, "use_mask_for_norm": [False] * n_channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "batch_dice": False,
    }
    clip_cfg = dict(cfg, architecture={
        "network_class_name": NETWORK_CLASS_NAME,
        "arch_kwargs": clip_arch_kwargs(STRIDES[5], [[3, 3, 3]] * 5, feature_base=16, feature_cap=64, se_at="all"),
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]})
    return {
        "continue_training": False,     # run_training.py adds it; nnUNetTrainer.__init__ pops it
        "dataset_name": "Dataset777_Clips", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [2.0, 1.0, 1.0], "original_median_shape_after_transp": [40, 80, 80],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": dict(cfg, architecture=_stock_arch(5)),
                           "3d_4stages": dict(cfg, architecture=_stock_arch(4)),
                           "clip_resse": clip_cfg},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 3000.0, "mean": 0.0, "median": 0.0, "min": -1000.0, "percentile_00_5": -1000.0,
                     "percentile_99_5": 1500.0, "std": 300.0} for c in range(n_channels)},
    }


def make_dataset_json(n_channels: int = 1) -> dict:
    names = {"0": "noNorm", "1": "noNorm"} if n_channels == 2 else {"0": "noNorm"}
    return {"channel_names": names, "labels": {"background": 0, "clip": 1}, "numTraining": 3,
            "file_ending": ".nii.gz"}


def build(trainer, n_channels: int, configuration: str = "3d_fullres", deep_supervision: bool = True):
    pm = PlansManager(make_plans(n_channels))
    return trainer.build_network_architecture(pm, pm.get_configuration(configuration), n_channels, 2,
                                              deep_supervision)


# ---------------------------------------------------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trainer", list(VARIANTS), ids=lambda t: t.__name__)
@pytest.mark.parametrize("configuration,n_stages", [("3d_fullres", 5), ("3d_4stages", 4)])
def test_network_per_variant(trainer, configuration, n_stages):
    n_ch, out_ch, binary, passthrough, metal = VARIANTS[trainer]
    net = build(trainer, n_ch, configuration)
    assert isinstance(net, ResSEUNet3d)
    assert net.input_layer.in_channels == n_ch and net.input_layer.out_channels == out_ch
    assert net.input_layer.binary_threshold_hu == binary and net.input_layer.passthrough_channels == passthrough
    assert net.input_layer.metal_window == metal
    assert net.n_stages == n_stages
    assert [len(s.blocks) for s in net.encoder.stages] == [1] + [2] * (n_stages - 1)
    feats = [s.output_channels for s in net.encoder.stages] if hasattr(net.encoder.stages[0], "output_channels") \
        else net.encoder.output_channels
    if "Tiny" in trainer.__name__:
        assert list(feats) == [min(8 * 2 ** i, 32) for i in range(n_stages)]
    else:
        assert list(feats) == [min(32 * 2 ** i, 320) for i in range(n_stages)]
    small = (16, 32, 32)      # divisible by every stride product here; the planned 32x64x64 patch only costs time
    x = torch.full((1, n_ch, *small), -1000.0)
    x[:, 0, 4:12, 8:24, 8:24] = 400.0
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, (list, tuple)) and len(out) == n_stages - 1   # deep supervision: one per decoder stage
    assert tuple(out[0].shape) == (1, 2, *small)
    assert torch.isfinite(out[0]).all()
    strides = np.cumprod(np.array(STRIDES[n_stages]), axis=0)
    for o, s in zip(out[1:], strides[1:]):
        assert tuple(o.shape[2:]) == tuple(np.array(small) // s)


def test_deep_supervision_off_gives_one_full_resolution_output():
    net = build(clips.nnUNetTrainerClipLocation, 1, deep_supervision=False)
    with torch.no_grad():
        out = net(torch.full((1, 1, 16, 32, 32), -1000.0))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (1, 2, 16, 32, 32)


def test_configuration_naming_resseunet_keeps_its_kwargs_but_trainer_sets_input():
    net = build(clips.nnUNetTrainerClipLocationNoBinary, 1, "clip_resse")
    assert net.se_at == "all" and len(net.se_stages) == 5                   # from the configuration
    assert net.encoder.output_channels == [16, 32, 64, 64, 64]
    assert net.input_layer.binary_threshold_hu is None                      # from the trainer (ablation)
    net = build(clips.nnUNetTrainerClipSegmentation, 2, "clip_resse")
    assert net.input_layer.passthrough_channels == 1 and net.input_layer.out_channels == 3
    tiny = build(clips.nnUNetTrainerClipLocationTiny_2epochs, 1, "clip_resse")
    assert tiny.encoder.output_channels == [8, 16, 32, 32, 32] and tiny.input_layer.out_channels == 2


@pytest.mark.parametrize("trainer,n_channels", [(clips.nnUNetTrainerClipSegmentation, 1),
                                                (clips.nnUNetTrainerClipLocation, 2),
                                                (clips.nnUNetTrainerClipSegmentationNoMap, 2)])
def test_wrong_channel_count_raises(trainer, n_channels):
    with pytest.raises(ClipChannelMismatchError, match=trainer.__name__):
        build(trainer, n_channels)
    assert issubclass(ClipChannelMismatchError, ValueError)


def test_class_names_do_not_clash_with_nnunet():
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    for trainer in VARIANTS:
        found = recursive_find_python_class(f"{nnunetv2.__path__[0]}/training/nnUNetTrainer", trainer.__name__,
                                            "nnunetv2.training.nnUNetTrainer")
        assert found is None, trainer.__name__


# ---------------------------------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------------------------------
def _names(pipeline):
    return [transform_name(t) for t in pipeline.transforms]


def _training_pipeline(trainer_cls=clips.nnUNetTrainerClipSingleStage, dummy_2d=False):
    """Arguments exactly as nnUNetTrainer.get_dataloaders passes them (3d, deep supervision, no regions)."""
    rotation = (-30. / 360 * 2. * np.pi, 30. / 360 * 2. * np.pi)
    ds_scales = list(list(i) for i in 1 / np.cumprod(np.vstack(STRIDES[5]), axis=0))[:-1]
    return trainer_cls.get_training_transforms(
        PATCH, rotation, ds_scales, (0, 1, 2), dummy_2d, use_mask_for_norm=[False], is_cascaded=False,
        foreground_labels=[1], regions=None, ignore_label=None)


@pytest.mark.parametrize("dummy_2d", [False, True])
def test_training_pipeline_is_raw_hu_safe(dummy_2d):
    pipeline = _training_pipeline(dummy_2d=dummy_2d)
    names = _names(pipeline)
    assert not set(names) & set(RAW_HU_UNSAFE_TRANSFORMS), names
    assert "HUPaddedSpatialTransform" in names and "MirrorTransform" in names
    assert "CTIntensityScalingTransform" in names
    scaling = [t for t in pipeline.transforms if transform_name(t) == "CTIntensityScalingTransform"][0]
    assert isinstance(scaling, RandomTransform) and scaling.apply_probability == pytest.approx(0.15)
    assert tuple(scaling.transform.scale_range) == (0.9, 1.1) and scaling.transform.channels == (0,)
    # order: spatial, (intensity), mirror
    assert names.index("HUPaddedSpatialTransform") < names.index("CTIntensityScalingTransform") \
        < names.index("MirrorTransform")
    mirror = [t for t in pipeline.transforms if isinstance(t, MirrorTransform)][0]
    assert tuple(mirror.allowed_axes) == (0, 1, 2)
    # nnU-Net's own pipeline does hold the transforms we drop (guards against a vacuous test after an upgrade)
    stock = nnUNetTrainer.get_training_transforms(
        PATCH, (-0.5, 0.5), None, (0, 1, 2), dummy_2d, use_mask_for_norm=[False], foreground_labels=[1])
    assert set(RAW_HU_UNSAFE_TRANSFORMS) <= set(_names(stock))
    # same spatial parameters as nnU-Net's
    sp = [t for t in pipeline.transforms if isinstance(t, HUPaddedSpatialTransform)][0]
    sp_stock = [t for t in stock.transforms if type(t) is SpatialTransform][0]
    for attr in ("p_rotation", "p_scaling", "scaling", "p_elastic_deform", "border_mode_seg", "padding_value_seg"):
        assert getattr(sp, attr) == getattr(sp_stock, attr), attr


def test_training_pipeline_runs_on_a_sample():
    pipeline = _training_pipeline()
    torch.manual_seed(0)
    image = torch.full((1, 40, 80, 80), -1000.0)
    image[0, 10:30, 20:60, 20:60] = 40.0
    seg = torch.zeros((1, 40, 80, 80), dtype=torch.int16)
    seg[0, 15:20, 30:40, 30:40] = 1
    out = pipeline(image=image, segmentation=seg)
    assert tuple(out["image"].shape) == (1, *PATCH)
    assert isinstance(out["segmentation"], list) and tuple(out["segmentation"][0].shape) == (1, *PATCH)


def test_intensity_scaling_channel0_only():
    torch.manual_seed(1)
    hu = torch.tensor([-1000.0, -200.0, 0.0, 300.0, 1500.0]).view(1, 5, 1, 1).expand(1, 5, 4, 4).clone()
    prob = torch.rand(1, 5, 4, 4)
    t = CTIntensityScalingTransform()
    factors = []
    for _ in range(50):
        image = torch.cat([hu, prob]).clone()
        out = t(image=image)["image"]
        ratio = out[0] / torch.where(hu[0] == 0, torch.ones_like(hu[0]), hu[0])
        nz = hu[0] != 0
        assert torch.allclose(ratio[nz], ratio[nz][0])          # one factor for the whole channel
        factor = float(ratio[nz][0])
        factors.append(factor)
        torch.testing.assert_close(out[0], hu[0] * factor)      # HU scaled around water, nothing else
        assert torch.all(out[0][~nz] == 0)                       # water stays water
        assert torch.equal(out[1], prob[0])                      # the probability map is untouched
    assert min(factors) >= 0.9 - 1e-6 and max(factors) <= 1.1 + 1e-6
    assert max(factors) - min(factors) > 0.05                    # it is random


def test_hu_padded_spatial_transform_pads_air_and_zero_map():
    sp = SpatialTransform(PATCH, patch_center_dist_from_border=0, random_crop=False, p_rotation=1,
                          rotation=(0.5, 0.5), p_scaling=1, scaling=(1.4, 1.4), p_synchronize_scaling_across_axes=1)
    padded = HUPaddedSpatialTransform.from_spatial_transform(sp)
    assert padded.image_padding_values == (AIR_HU,)
    image = torch.stack([torch.full(PATCH, 50.0), torch.full(PATCH, 0.5)])     # soft tissue + map 0.5
    torch.manual_seed(0)
    out_stock = sp(image=image.clone())["image"]
    torch.manual_seed(0)
    out = padded(image=image.clone())["image"]
    outside = out_stock[1] < 0.25                         # zoomed out + rotated: the corners are padding
    assert outside.any()
    assert torch.allclose(out_stock[0][outside], torch.zeros(()), atol=25)          # stock: water
    assert (out[0][out_stock[1] < 0.01] < -950).all()                                # ours: air
    w = out_stock[1] / 0.5                                # image weight of every voxel (exact: linear resampling)
    torch.testing.assert_close(out[0], 50.0 * w + AIR_HU * (1 - w), atol=1e-2, rtol=1e-4)
    assert torch.allclose(out[1], out_stock[1], atol=1e-5)                           # map padded with 0 as before
    # no-deformation path (crop + pad) also pads air
    sp2 = SpatialTransform([48, 64, 64], patch_center_dist_from_border=0, random_crop=False)
    out2 = HUPaddedSpatialTransform.from_spatial_transform(sp2)(image=image.clone())["image"]
    assert out2.shape[1] == 48 and (out2[0, :8] == AIR_HU).all() and (out2[1, :8] == 0).all()


# ---------------------------------------------------------------------------------------------------------------------
# optimiser and schedule
# ---------------------------------------------------------------------------------------------------------------------
def test_lr_schedule_warmup_then_cosine():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-4)
    sched = LinearWarmupCosineLRScheduler(opt, 1e-4, 1000)
    assert sched.warmup_steps == 50
    lrs = []
    for epoch in range(1000):
        sched.step(epoch)
        lrs.append(opt.param_groups[0]["lr"])
        assert sched.get_last_lr() == [lrs[-1]]
    lrs = np.array(lrs)
    np.testing.assert_allclose(lrs[:50], 1e-4 * np.arange(1, 51) / 50)        # linear warm-up
    assert lrs[49] == pytest.approx(1e-4) and lrs[50] == pytest.approx(1e-4)
    assert np.all(np.diff(lrs[50:]) <= 0)                                       # monotone decay
    assert lrs[525] == pytest.approx(0.5e-4, rel=1e-2)                          # cosine mid-point
    t = (700 - 50) / 950
    assert lrs[700] == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi * t)))
    assert lrs[-1] < 1e-4 * 1e-4                                                # ~0 at the last epoch
    # short schedules still work
    for n in (1, 2, 5):
        s = LinearWarmupCosineLRScheduler(torch.optim.Adam([p], lr=1e-4), 1e-4, n)
        vals = [s.lr_at(e) for e in range(n)]
        assert all(0 <= v <= 1e-4 + 1e-12 for v in vals) and vals[0] > 0


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    return tmp_path


@pytest.mark.parametrize("trainer_cls,n_channels,epochs", [
    (clips.nnUNetTrainerClipLocation, 1, 1000), (clips.nnUNetTrainerClipSegmentation_5epochs, 2, 5),
    (clips.nnUNetTrainerClipLocationTiny_2epochs, 1, 2)])
def test_trainer_optimizer_and_schedule(nnunet_env, trainer_cls, n_channels, epochs):
    trainer = trainer_cls(make_plans(n_channels), "3d_fullres", 0, make_dataset_json(n_channels),
                          device=torch.device("cpu"))
    assert trainer.num_epochs == epochs and trainer.initial_lr == 1e-4 and trainer.weight_decay == 0.0
    trainer.network = trainer_cls.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, n_channels, 2, True)
    opt, sched = trainer.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and isinstance(sched, LinearWarmupCosineLRScheduler)
    assert sched.max_steps == epochs
    trainer.optimizer, trainer.lr_scheduler = opt, sched
    sched.step(0)   # what on_train_epoch_start does at epoch 0
    assert opt.param_groups[0]["lr"] == pytest.approx(sched.lr_at(0)) and opt.param_groups[0]["lr"] > 0
    sched.step(epochs - 1)
    if epochs >= 5:
        assert opt.param_groups[0]["lr"] < 0.5e-4
    else:       # 2 epochs: 1 warm-up epoch + 1 epoch at the start of the cosine
        assert opt.param_groups[0]["lr"] <= 1e-4


def test_trainer_warns_on_normalised_ct(nnunet_env):
    plans = make_plans(1)
    plans["configurations"]["3d_fullres"]["normalization_schemes"] = ["CTNormalization"]
    with pytest.warns(UserWarning, match="raw HU"):
        clips.nnUNetTrainerClipLocation(plans, "3d_fullres", 0, make_dataset_json(1), device=torch.device("cpu"))


def test_trainer_initialize_in_process(nnunet_env):
    """nnU-Net's own initialize(): determines channels from the dataset, builds our net, optimiser and loss."""
    data = nnunet_env / "nnUNet_preprocessed" / "Dataset777_Clips" / "nnUNetPlans_3d_fullres"
    data.mkdir(parents=True)
    (data / "case_000.b2nd").write_bytes(b"")      # initialize() only infers the dataset class from file endings
    trainer = clips.nnUNetTrainerClipSegmentationTiny_2epochs(make_plans(2), "3d_fullres", 0, make_dataset_json(2),
                                                              device=torch.device("cpu"))
    trainer.initialize()
    assert isinstance(trainer.network, ResSEUNet3d) and trainer.network.input_layer.in_channels == 2
    assert trainer.network.encoder.output_channels == [8, 16, 32, 32, 32]
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    assert isinstance(trainer.lr_scheduler, LinearWarmupCosineLRScheduler)
    assert trainer.num_epochs == 2 and trainer.num_iterations_per_epoch == 2
    # the training pipeline exactly as get_dataloaders() builds it
    patch_size = trainer.configuration_manager.patch_size
    rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    pipeline = trainer.get_training_transforms(
        patch_size, rotation, trainer._get_deep_supervision_scales(), mirror_axes, dummy_2d,
        use_mask_for_norm=trainer.configuration_manager.use_mask_for_norm, is_cascaded=trainer.is_cascaded,
        foreground_labels=trainer.label_manager.foreground_labels,
        regions=trainer.label_manager.foreground_regions if trainer.label_manager.has_regions else None,
        ignore_label=trainer.label_manager.ignore_label)
    names = _names(pipeline)
    assert not set(names) & set(RAW_HU_UNSAFE_TRANSFORMS)
    assert {"HUPaddedSpatialTransform", "CTIntensityScalingTransform"} <= set(names)
    # a 2-channel sample (CT + probability map) goes through the pipeline and the network
    image = torch.full((2, 40, 80, 80), 0.0)
    image[0] = -1000.0
    image[0, 10:30, 20:60, 20:60] = 40.0
    image[1, 15:20, 30:40, 30:40] = 0.9
    seg = (image[1:] > 0.5).to(torch.int16)
    out = pipeline(image=image, segmentation=seg)
    assert tuple(out["image"].shape) == (2, *patch_size)
    assert out["image"][1].min() >= 0 and out["image"][1].max() <= 0.9 + 1e-4      # the map is never scaled
    trainer.network.eval()
    with torch.no_grad():
        pred = trainer.network(out["image"][None])
    assert tuple(pred[0].shape) == (1, 2, *patch_size)


def test_demo_trainer_starts_from_a_background_prior(nnunet_env):
    """DemoCPU trainers: output biases at a 1 % foreground prior, so a short run does not paint noise; every patch
    centred on a clip; bf16 autocast on a capable CPU."""
    data = nnunet_env / "nnUNet_preprocessed" / "Dataset777_Clips" / "nnUNetPlans_3d_fullres"
    data.mkdir(parents=True)
    (data / "case_000.b2nd").write_bytes(b"")
    trainer = clips.nnUNetTrainerClipSingleStageDemoCPU(make_plans(1), "3d_fullres", 0, make_dataset_json(1),
                                                        device=torch.device("cpu"))
    trainer.initialize()
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch) == (4, 50)
    assert trainer.oversample_foreground_percent == 1.0 and trainer.initial_lr == pytest.approx(3e-3)
    assert isinstance(trainer, CPUAutocast)
    trainer.network.eval()
    with torch.no_grad():
        out = trainer.network(torch.full((1, 1, 32, 32, 32), -1000.0))
    probs = torch.softmax(out[0] if isinstance(out, (list, tuple)) else out, 1)
    assert float(probs[:, 1].max()) < 0.1        # an untrained default-initialised net sits near 0.5
    head = trainer.network.decoder.seg_layers[-1]
    assert float(head.bias[0]) == 0.0 and float(head.bias[1]) == pytest.approx(math.log(0.01 / 0.99))


# ---------------------------------------------------------------------------------------------------------------------
# location nets: trained on the clip region
# ---------------------------------------------------------------------------------------------------------------------
def test_clip_region_target_is_a_ball_in_mm_on_anisotropic_grids():
    seg = torch.zeros((1, 9, 21, 21), dtype=torch.int16)
    seg[0, 4, 10, 10] = 1
    seg[0, 0, 0, 0] = -1                                         # an ignore voxel far away
    image = torch.randn((1, 9, 21, 21))
    out = ClipRegionTargetTransform(10.0, (4.0, 1.0, 1.0))(image=image.clone(), segmentation=seg.clone())
    assert torch.equal(out["image"], image)                      # the image is untouched
    grown = out["segmentation"][0]
    z, y, x = np.nonzero(grown.numpy() == 1)
    dist = np.sqrt(((z - 4) * 4.0) ** 2 + (y - 10) ** 2 + (x - 10) ** 2)
    assert dist.max() <= 10.0 + 1e-6
    zz, yy, xx = np.meshgrid(np.arange(9), np.arange(21), np.arange(21), indexing="ij")
    inside = np.sqrt(((zz - 4) * 4.0) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2) <= 10.0
    assert (grown.numpy() == 1).sum() == inside.sum()            # every voxel of the ball, nothing else
    assert {int(v) for v in z} == {2, 3, 4, 5, 6}                # 10 mm is 2.5 slices of 4 mm
    assert int(grown[0, 0, 0]) == -1                             # ignore label kept outside the region
    with pytest.raises(ValueError, match="3D segmentation"):
        ClipRegionTargetTransform(10.0, (4.0, 4.0, 4.0))(image=image[:, 0], segmentation=seg[:, 0])


@pytest.mark.parametrize("trainer_cls,region", [
    (clips.nnUNetTrainerClipLocationShortCPU, True), (clips.nnUNetTrainerClipLocationNoBinary, True),
    (clips.nnUNetTrainerClipSingleStageShortCPU, False), (clips.nnUNetTrainerClipSegmentation, False)])
def test_only_location_nets_train_on_the_clip_region(nnunet_env, trainer_cls, region):
    n_channels = 1 + trainer_cls.inputs["passthrough_channels"]
    trainer = trainer_cls(make_plans(n_channels), "3d_fullres", 0, make_dataset_json(n_channels),
                          device=torch.device("cpu"))
    rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    ds_scales = trainer._get_deep_supervision_scales()
    train = trainer.get_training_transforms(trainer.configuration_manager.patch_size, rotation, ds_scales,
                                            mirror_axes, dummy_2d, use_mask_for_norm=[False], is_cascaded=False,
                                            foreground_labels=[1], regions=None, ignore_label=None)
    val = trainer.get_validation_transforms(ds_scales, is_cascaded=False, foreground_labels=[1], regions=None,
                                            ignore_label=None)
    for pipeline in (train, val):
        first = pipeline.transforms[0]
        assert isinstance(first, ClipRegionTargetTransform) == region
        assert sum(isinstance(t, ClipRegionTargetTransform) for t in pipeline.transforms) == int(region)
    if region:
        assert first.spacing == tuple(trainer.configuration_manager.spacing) and first.radius_mm == 10.0
        # a one-voxel clip label becomes a region of many voxels after the whole validation pipeline
        seg = torch.zeros((1, 32, 64, 64), dtype=torch.int16)
        seg[0, 16, 32, 32] = 1
        out = val(image=torch.zeros((1, 32, 64, 64)), segmentation=seg)
        assert int((out["segmentation"][0] > 0).sum()) > 50


def test_short_cpu_clip_trainers_use_adam_1e3(nnunet_env):
    trainer = clips.nnUNetTrainerClipSegmentationShortCPU(make_plans(2), "3d_fullres", 0, make_dataset_json(2),
                                                          device=torch.device("cpu"))
    assert trainer.initial_lr == 1e-3 and (trainer.num_epochs, trainer.num_iterations_per_epoch) == (10, 50)
    assert clips.nnUNetTrainerClipSegmentation.adam_lr == 1e-4                  # the paper's, unchanged
