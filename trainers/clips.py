"""Trainers for the two-stage clip model (Location Net / Segmentation Net, both Res-SE-U-Nets).

The clip datasets name their CT channel ``noNorm``, so nnU-Net hands the network **raw Hounsfield units**; the
network's first module (:class:`~nnunet_breast.networks.input_layer.ClipInputLayer`) computes the paper's inputs
itself: the HU window [-200, 200] mapped to [-1, 1], the binary image HU >= 300 and, for the segmentation net, the
stage-1 probability map passed through unchanged.

Network
    :class:`ResSEUNet3d`. When the configuration already names it (``nnunet_breast.networks.res_se_unet.ResSEUNet3d``)
    its kwargs are used; otherwise (e.g. stock ``3d_fullres``) the net is built from that configuration's strides and
    kernel sizes: ``n_stages = len(strides)``, features ``min(base * 2**i, cap)`` (32 / 320 by default), residual
    blocks ``[1, 2, 2, 2, 2, 2, ...]`` (the paper's 11 blocks at 6 stages) and one decoder conv per stage.  In both
    cases the *trainer* decides the input variant (class attributes ``binary_threshold_hu`` and
    ``passthrough_channels``), so an ablation trainer can never silently train the other variant.  The dataset must
    have ``1 + passthrough_channels`` channels, otherwise :class:`ClipChannelMismatchError` is raised.
    Prediction goes through the same class method, so a checkpoint always meets its network.

Augmentation (raw HU)
    nnU-Net's pipeline minus its intensity transforms (Gaussian noise, blur, multiplicative brightness, contrast,
    gamma, simulated low resolution): they would move tissue across the HU >= 300 threshold and change what HU
    means.  Added: :class:`CTIntensityScalingTransform`, a multiplication of the CT channel (channel 0 only; the
    probability map is left alone) by a factor drawn from [0.9, 1.1], with probability 0.15.  This is the paper's
    "random shift intensity 0.9-1.1" read literally: a multiplicative factor on raw HU, i.e. around 0 HU (water), so
    -1000 HU air becomes -900 .. -1100 and a 300 HU clip border becomes 270 .. 330.  Kept: nnU-Net's spatial
    transform (rotation, scaling), mirroring on all allowed axes (the paper's axial/sagittal/coronal flips).

    Padding: nnU-Net's ``SpatialTransform`` pads the image with 0 (``padding_mode_image="zeros"``), which is water in
    HU, not air.  The trainers replace it by :class:`HUPaddedSpatialTransform` (same parameters), which pads channel 0
    with -1000 HU (air) and every further channel (the probability map) with 0.  What remains: nnU-Net's data loader
    (``nnUNetDataLoader``, before augmentation) pads patches that reach beyond a case with 0 as well; that only
    happens for cases smaller than the patch (plus nnU-Net's rotation margin), and those voxels stay 0 HU (water,
    window value 0, binary 0).

Optimisation (paper)
    Adam, initial LR 1e-4, linear warm-up over the first 5 % of the epochs (the paper: 50 of 1000) then cosine
    annealing to 0 (:class:`LinearWarmupCosineLRScheduler`, stepped per epoch by nnU-Net's ``on_train_epoch_start``).
    The paper names no weight decay; we use Adam's default 0 (``weight_decay`` class attribute; nnU-Net's 3e-5 is a
    one-line change).  Batch size comes from the plans (the paper used 2, as nnU-Net's 3d_fullres plans usually
    do).  Loss, deep supervision, sampling and gradient clipping stay nnU-Net's.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
from batchgeneratorsv2.helpers.scalar_type import RandomScalar, sample_scalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from torch.optim.lr_scheduler import _LRScheduler

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_breast.networks.res_se_unet import ARCH_KWARGS_REQ_IMPORT, NETWORK_CLASS_NAME
from nnunet_breast.trainers.augmentation import INTENSITY_TRANSFORMS, transform_name
from nnunet_breast.trainers.tiny import DemoCPUSchedule, QuickDemoCPUSchedule, ShortCPUSchedule, TinyCPUSchedule

__all__ = ["ClipTrainerBase", "ClipChannelMismatchError", "CTIntensityScalingTransform", "HUPaddedSpatialTransform",
           "LinearWarmupCosineLRScheduler", "ClipRegionTarget", "ClipRegionTargetTransform", "clip_arch_kwargs",
           "clip_network_from_configuration", "RAW_HU_UNSAFE_TRANSFORMS", "AIR_HU", "METAL_WINDOW"]     # + every nnUNetTrainerClip* class (see trainers/__init__.py)

AIR_HU = -1000.0
#: HU window of the fine nets' metal channel (not in the paper; see ClipInputLayer): where a clip's label edge lies
METAL_WINDOW = (300.0, 3000.0)

#: nnU-Net intensity augmentations that must not touch raw HU (class names, looked up through RandomTransform)
RAW_HU_UNSAFE_TRANSFORMS = INTENSITY_TRANSFORMS


class ClipChannelMismatchError(ValueError):
    """The dataset's channel count does not fit the trainer's input variant."""


# ---------------------------------------------------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------------------------------------------------
def _blocks_per_stage(n_stages: int) -> list[int]:
    """The paper's ``[1, 2, 2, 2, 2, 2]`` (11 residual blocks at 6 stages), truncated or extended with 2s."""
    return [1] + [2] * (n_stages - 1)


def clip_arch_kwargs(strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]],
                     feature_base: int = 32, feature_cap: int = 320, **clip_kwargs) -> dict:
    """JSON-style ResSEUNet3d kwargs (import paths as strings) for a planned configuration's strides/kernels.

    2D configurations (2-element strides) get ``Conv2d``/``InstanceNorm2d``.
    """
    n_stages = len(strides)
    dim = len(strides[0])
    if dim not in (2, 3):
        raise ValueError(f"strides must be 2D or 3D per stage, got {strides!r}")
    kwargs = {
        "n_stages": n_stages,
        "features_per_stage": [min(feature_base * 2 ** i, feature_cap) for i in range(n_stages)],
        "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
        "kernel_sizes": [list(k) for k in kernel_sizes],
        "strides": [list(s) for s in strides],
        "n_blocks_per_stage": _blocks_per_stage(n_stages),
        "n_conv_per_stage_decoder": [1] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
        "window": [-200.0, 200.0],
        "binary_threshold_hu": 300.0,
        "passthrough_channels": 0,
        "metal_window": None,
        "se_ratio": 0.25,
        "se_at": "bottleneck",
    }
    kwargs.update(clip_kwargs)
    return kwargs


def clip_network_from_configuration(configuration_manager, num_input_channels: int, num_output_channels: int,
                                    enable_deep_supervision: bool, binary_threshold_hu: float | None = 300.0,
                                    passthrough_channels: int = 0, feature_base: int | None = None,
                                    feature_cap: int | None = None, trainer_name: str = "clip trainer",
                                    metal_window: Sequence[float] | None = None):
    """ResSEUNet3d for a configuration (see the module docstring); the input variant is always the caller's."""
    expected = 1 + int(passthrough_channels)
    if int(num_input_channels) != expected:
        variant = (f"binary HU>={binary_threshold_hu:g} channel" if binary_threshold_hu is not None else "no binary")
        raise ClipChannelMismatchError(
            f"{trainer_name}: the dataset has {num_input_channels} input channel(s) but this trainer's network takes "
            f"{expected} (raw HU 'noNorm' CT + {passthrough_channels} passthrough channel(s); {variant}). Use a "
            "CT-only (1-channel) dataset for the location net and the *NoMap ablation, and a CT + stage-1 "
            "probability map (2-channel) dataset for the segmentation net with map.")
    arch = configuration_manager.configuration["architecture"]
    clip = {"binary_threshold_hu": None if binary_threshold_hu is None else float(binary_threshold_hu),
            "passthrough_channels": int(passthrough_channels),
            "metal_window": None if metal_window is None else [float(v) for v in metal_window]}
    if arch["network_class_name"] == NETWORK_CLASS_NAME:
        kwargs = dict(arch["arch_kwargs"], **clip)
        required = list(arch.get("_kw_requires_import", ARCH_KWARGS_REQ_IMPORT))
        if feature_base is not None or feature_cap is not None:
            base, cap = feature_base or 32, feature_cap or 320
            kwargs["features_per_stage"] = [min(base * 2 ** i, cap) for i in range(kwargs["n_stages"])]
    else:
        a = arch["arch_kwargs"]
        kwargs = clip_arch_kwargs(a["strides"], a["kernel_sizes"], feature_base or 32, feature_cap or 320, **clip)
        required = list(ARCH_KWARGS_REQ_IMPORT)
    return get_network_from_plans(NETWORK_CLASS_NAME, kwargs, required, num_input_channels, num_output_channels,
                                  allow_init=True, deep_supervision=enable_deep_supervision)


# ---------------------------------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------------------------------
class CTIntensityScalingTransform(ImageOnlyTransform):
    """Multiply the CT channel(s) (default channel 0 only) by one factor drawn from ``scale_range``.

    The factor scales raw HU around 0 HU (water): the paper's "random shift intensity in 0.9-1.1". Other channels
    (e.g. the stage-1 probability map) are untouched.
    """

    def __init__(self, scale_range: RandomScalar = (0.9, 1.1), channels: Sequence[int] = (0,)):
        super().__init__()
        self.scale_range = scale_range
        self.channels = tuple(int(c) for c in channels)

    def get_parameters(self, **data_dict) -> dict:
        return {"factor": float(sample_scalar(self.scale_range, image=data_dict["image"], channel=None))}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        for c in self.channels:
            if c < img.shape[0]:
                img[c].mul_(params["factor"])
        return img


class HUPaddedSpatialTransform(SpatialTransform):
    """nnU-Net's ``SpatialTransform`` with one constant padding value per image channel.

    Channel ``i < len(image_padding_values)`` is padded with ``image_padding_values[i]``, further channels with 0.
    Default: channel 0 (raw HU) with air (-1000), the probability map with 0. Implemented as in batchgeneratorsv2's
    own 'constant' mode: resampling is linear, so padding ``img - v`` with 0 and adding ``v`` back pads with ``v``.
    """

    def __init__(self, *args, image_padding_values: Sequence[float] = (AIR_HU,), **kwargs):
        super().__init__(*args, **kwargs)
        self.image_padding_values = tuple(float(v) for v in image_padding_values)

    @classmethod
    def from_spatial_transform(cls, spatial: SpatialTransform, image_padding_values: Sequence[float] = (AIR_HU,)):
        """Same parameters as ``spatial`` (nnU-Net's), image padded per channel; image padding mode set to zeros."""
        new = cls.__new__(cls)
        new.__dict__.update(spatial.__dict__)
        new._grid_cache = {}
        new.padding_mode_image = "zeros"
        new.padding_value_image = 0
        new.image_padding_values = tuple(float(v) for v in image_padding_values)
        return new

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        if not any(self.image_padding_values):
            return super()._apply_to_image(img, **params)
        shift = torch.zeros(img.shape[0], dtype=img.dtype, device=img.device)
        n = min(len(self.image_padding_values), img.shape[0])
        shift[:n] = torch.tensor(self.image_padding_values[:n], dtype=img.dtype)
        shift = shift.view(-1, *[1] * (img.ndim - 1))
        return super()._apply_to_image(img - shift, **params) + shift


def raw_hu_training_pipeline(pipeline, scaling_probability: float = 0.15, scale_range=(0.9, 1.1),
                             image_padding_values: Sequence[float] | None = (AIR_HU,)):
    """Edit nnU-Net's training ``ComposeTransforms`` in place for raw HU (see the module docstring); returns it."""
    transforms = []
    scaling_added = False
    for t in pipeline.transforms:
        name = transform_name(t)
        if name in RAW_HU_UNSAFE_TRANSFORMS:
            if not scaling_added:   # where nnU-Net's intensity block was: after the spatial transform
                transforms.append(RandomTransform(CTIntensityScalingTransform(scale_range, channels=(0,)),
                                                  apply_probability=scaling_probability))
                scaling_added = True
            continue
        if image_padding_values is not None and type(t) is SpatialTransform:
            t = HUPaddedSpatialTransform.from_spatial_transform(t, image_padding_values)
        transforms.append(t)
    if not scaling_added:
        transforms.insert(1 if transforms else 0, RandomTransform(CTIntensityScalingTransform(scale_range, (0,)),
                                                                  apply_probability=scaling_probability))
    pipeline.transforms = transforms
    return pipeline


class ClipRegionTargetTransform(BasicTransform):
    """Clip label -> *clip region*: the foreground grown by a ball of ``radius_mm`` (location net target).

    At the location net's 4 mm spacing a 2 mm thick clip keeps 0-2 voxels of its label, a few voxels per case out
    of ~30^3: cross-entropy + Dice on that learns "background everywhere" in any short schedule. The location net
    only has to find *where* the clips are (its map sets the stage-2 ROI and is stage 2's second input), so it is
    trained on the clips grown by ``radius_mm``. Voxels the ball reaches become label 1; ignore labels (< 0)
    outside the grown region stay as they are. The image is untouched.
    """

    def __init__(self, radius_mm: float, spacing_zyx: Sequence[float]):
        super().__init__()
        self.radius_mm = float(radius_mm)
        self.spacing = tuple(float(s) for s in spacing_zyx)
        r = [int(math.floor(self.radius_mm / s)) for s in self.spacing]
        grids = torch.meshgrid(*[torch.arange(-k, k + 1, dtype=torch.float32) * s for k, s in zip(r, self.spacing)],
                               indexing="ij")
        self.kernel = (sum(g ** 2 for g in grids) <= self.radius_mm ** 2 + 1e-6).float()[None, None]
        self.padding = tuple(r)

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        return img

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        if segmentation.ndim != 4:
            raise ValueError("ClipRegionTargetTransform needs a 3D segmentation (C, z, y, x), got shape "
                             f"{tuple(segmentation.shape)}")
        fg = (segmentation > 0).float()[:, None]
        grown = torch.nn.functional.conv3d(fg, self.kernel.to(fg.device), padding=self.padding)[:, 0] > 0.5
        return torch.where(grown & (segmentation <= 0), torch.ones_like(segmentation), segmentation)


# ---------------------------------------------------------------------------------------------------------------------
# LR schedule
# ---------------------------------------------------------------------------------------------------------------------
class LinearWarmupCosineLRScheduler(_LRScheduler):
    """Linear warm-up over ``warmup_fraction`` of ``max_steps`` (epochs), then cosine annealing to ``min_lr``.

    ``lr(e) = initial * (e + 1) / W`` for ``e < W`` (W = max(1, round(fraction * max_steps))), then
    ``min + (initial - min) * (1 + cos(pi * (e - W) / (max_steps - W))) / 2``: ``initial`` at ``e = W``, close to
    ``min_lr`` at the last epoch ``max_steps - 1``. ``step(current_epoch)`` as nnU-Net's ``PolyLRScheduler``.
    """

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_fraction: float = 0.05,
                 min_lr: float = 0.0, current_step: int | None = None):
        self.optimizer = optimizer
        self.initial_lr = float(initial_lr)
        self.max_steps = int(max_steps)
        self.min_lr = float(min_lr)
        self.warmup_steps = min(max(1, int(round(warmup_fraction * self.max_steps))), max(1, self.max_steps - 1)) \
            if warmup_fraction > 0 else 0
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.initial_lr * (step + 1) / self.warmup_steps
        span = max(1, self.max_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.initial_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def get_lr(self):   # used once by _LRScheduler.__init__
        return [self.lr_at(max(0, self.last_epoch))] * len(self.optimizer.param_groups)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        new_lr = self.lr_at(int(current_step))
        for group in self.optimizer.param_groups:
            group["lr"] = new_lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return self._last_lr


# ---------------------------------------------------------------------------------------------------------------------
# trainers
# ---------------------------------------------------------------------------------------------------------------------
class ClipTrainerBase(nnUNetTrainer):
    """Res-SE-U-Net on raw HU with the clip paper's optimisation and raw-HU-safe augmentation (module docstring)."""

    binary_threshold_hu: float | None = 300.0
    passthrough_channels: int = 0
    metal_window: tuple[float, float] | None = None     # the paper's inputs; the fine nets set METAL_WINDOW
    feature_base: int | None = None     # None: 32 (or the configuration's features when it names ResSEUNet3d)
    feature_cap: int | None = None      # None: 320
    adam_lr: float = 1e-4
    adam_weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    intensity_scaling_probability: float = 0.15
    intensity_scale_range: tuple = (0.9, 1.1)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = self.adam_lr
        self.weight_decay = self.adam_weight_decay
        schemes = list(self.configuration_manager.normalization_schemes)
        if schemes and schemes[0] != "NoNormalization":
            warnings.warn(f"{type(self).__name__}: channel 0 is normalised with {schemes[0]}, but the clip networks "
                          "expect raw HU (name the CT channel 'noNorm' in dataset.json)")

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        return clip_network_from_configuration(
            configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision,
            binary_threshold_hu=cls.binary_threshold_hu, passthrough_channels=cls.passthrough_channels,
            feature_base=cls.feature_base, feature_cap=cls.feature_cap, trainer_name=cls.__name__,
            metal_window=cls.metal_window)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        scheduler = LinearWarmupCosineLRScheduler(optimizer, self.initial_lr, self.num_epochs,
                                                  warmup_fraction=self.warmup_fraction)
        return optimizer, scheduler

    @staticmethod
    def get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None) -> BasicTransform:
        pipeline = nnUNetTrainer.get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm=use_mask_for_norm, is_cascaded=is_cascaded, foreground_labels=foreground_labels,
            regions=regions, ignore_label=ignore_label)
        return raw_hu_training_pipeline(pipeline, ClipTrainerBase.intensity_scaling_probability,
                                        ClipTrainerBase.intensity_scale_range, (AIR_HU,))


class ClipRegionTarget:
    """Mixin for the location nets: train on the *clip region* (:class:`ClipRegionTargetTransform`), not the clips.

    ``region_radius_mm`` is class data (10 mm: the region around 5-8 mm clips stays a few voxels wide at 4 mm).
    The transform is added first in the training and validation pipelines, so it acts on the case before cropping,
    rotation and deep-supervision downsampling. nnU-Net's final validation still scores the predictions against the
    clip labels: a low Dice there is expected; the stage-1 outputs that matter are the ``--npz`` maps.
    """

    region_radius_mm: float = 10.0

    def _region_target(self) -> ClipRegionTargetTransform:
        return ClipRegionTargetTransform(self.region_radius_mm, self.configuration_manager.spacing)

    def get_training_transforms(self, *args, **kwargs) -> BasicTransform:
        pipeline = super().get_training_transforms(*args, **kwargs)
        pipeline.transforms.insert(0, self._region_target())
        return pipeline

    def get_validation_transforms(self, *args, **kwargs) -> BasicTransform:
        pipeline = super().get_validation_transforms(*args, **kwargs)
        pipeline.transforms.insert(0, self._region_target())
        return pipeline


class nnUNetTrainerClipLocation(ClipRegionTarget, ClipTrainerBase):
    """Location Net: window + binary HU >= 300 channel, CT-only dataset, trained on the clip region."""

    binary_threshold_hu = 300.0
    passthrough_channels = 0


class nnUNetTrainerClipLocationNoBinary(ClipRegionTarget, ClipTrainerBase):
    """Ablation: Location Net without the binary channel (window only)."""

    binary_threshold_hu = None
    passthrough_channels = 0


class nnUNetTrainerClipSegmentation(ClipTrainerBase):
    """Segmentation Net: window + metal window + the stage-1 probability map (2-channel dataset: CT 'noNorm', map).

    The metal channel is our addition (see :data:`METAL_WINDOW`); :class:`nnUNetTrainerClipSegmentationPaperInputs`
    is the paper's net (window + map)."""

    binary_threshold_hu = None
    passthrough_channels = 1
    metal_window = METAL_WINDOW


class nnUNetTrainerClipSegmentationPaperInputs(nnUNetTrainerClipSegmentation):
    """Ablation: the paper's Segmentation Net inputs, window + map (no metal channel)."""

    metal_window = None


class nnUNetTrainerClipSegmentationNoMap(nnUNetTrainerClipSegmentation):
    """Ablation: Segmentation Net without the stage-1 map: window + metal window (1-channel dataset)."""

    passthrough_channels = 0


class nnUNetTrainerClipLocation_5epochs(nnUNetTrainerClipLocation):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 5


class nnUNetTrainerClipSegmentation_5epochs(nnUNetTrainerClipSegmentation):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 5


class nnUNetTrainerClipLocationTiny_2epochs(TinyCPUSchedule, nnUNetTrainerClipLocation):
    """Location Net with features 8, 16, 32, 32, ... on the tiny CPU schedule: tests and the demo."""

    feature_base = 8
    feature_cap = 32


class nnUNetTrainerClipSegmentationTiny_2epochs(TinyCPUSchedule, nnUNetTrainerClipSegmentation):
    """Segmentation Net with features 8, 16, 32, 32, ... on the tiny CPU schedule: tests and the demo."""

    feature_base = 8
    feature_cap = 32


class nnUNetTrainerClipSegmentationPaperInputsTiny_2epochs(TinyCPUSchedule, nnUNetTrainerClipSegmentationPaperInputs):
    feature_base = 8
    feature_cap = 32


class nnUNetTrainerClipSingleStage(ClipTrainerBase):
    """Single-stage baseline (paper Table 2): the location net's inputs (window + binary HU >= 300) plus the metal
    window of the segmentation net, trained on the clip labels themselves and run on the whole CT at the fine spacing
    (configuration ``3d_clip_fullres``), so the cascade is compared with the strongest one-net setup."""

    binary_threshold_hu = 300.0
    passthrough_channels = 0
    metal_window = METAL_WINDOW


class nnUNetTrainerClipSingleStageTiny_2epochs(TinyCPUSchedule, nnUNetTrainerClipSingleStage):
    feature_base = 8
    feature_cap = 32


class _ShortCPU(ShortCPUSchedule):
    """The clip benchmark's CPU schedule: 10 epochs x 50 iterations, features 16..128, Adam at 1e-3 (the paper's
    1e-4 belongs to its 1000 epochs; 500 iterations at 1e-4 leave the nets near their initialisation)."""

    schedule = (10, 50, 2)
    feature_base = 16
    feature_cap = 128
    adam_lr = 1e-3


class nnUNetTrainerClipLocationShortCPU(_ShortCPU, nnUNetTrainerClipLocation):
    pass


class nnUNetTrainerClipSegmentationShortCPU(_ShortCPU, nnUNetTrainerClipSegmentation):
    pass


class nnUNetTrainerClipSingleStageShortCPU(_ShortCPU, nnUNetTrainerClipSingleStage):
    pass


class nnUNetTrainerClipSegmentationPaperInputsShortCPU(_ShortCPU, nnUNetTrainerClipSegmentationPaperInputs):
    pass


class _LongCPU(_ShortCPU):
    """3x the ShortCPU schedule (30 epochs x 50 iterations) for the fine nets: same widths and LR."""

    schedule = (30, 50, 2)


class nnUNetTrainerClipSegmentationLongCPU(_LongCPU, nnUNetTrainerClipSegmentation):
    pass


class nnUNetTrainerClipSingleStageLongCPU(_LongCPU, nnUNetTrainerClipSingleStage):
    pass


class nnUNetTrainerClipSingleStage_5epochs(nnUNetTrainerClipSingleStage):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 5


class _DemoCPU:
    """Features 8..64 and Adam at 1e-3 for the CPU demo (see :class:`_ShortCPU`)."""

    feature_base = 8
    feature_cap = 64
    adam_lr = 1e-3


class nnUNetTrainerClipLocationDemoCPU(DemoCPUSchedule, _DemoCPU, nnUNetTrainerClipLocation):
    pass


class nnUNetTrainerClipSegmentationDemoCPU(DemoCPUSchedule, _DemoCPU, nnUNetTrainerClipSegmentation):
    pass


class nnUNetTrainerClipSingleStageDemoCPU(DemoCPUSchedule, _DemoCPU, nnUNetTrainerClipSingleStage):
    pass


class nnUNetTrainerClipLocationQuickCPU(QuickDemoCPUSchedule, _DemoCPU, nnUNetTrainerClipLocation):
    pass


class nnUNetTrainerClipSegmentationQuickCPU(QuickDemoCPUSchedule, _DemoCPU, nnUNetTrainerClipSegmentation):
    pass


class nnUNetTrainerClipSingleStageQuickCPU(QuickDemoCPUSchedule, _DemoCPU, nnUNetTrainerClipSingleStage):
    pass
