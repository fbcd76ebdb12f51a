"""Trainers (roles) of the two-stage clip model (Location Net / Segmentation Net, both Res-SE-U-Nets).

The clip datasets name their CT channel ``noNorm``, so nnU-Net hands the network **raw Hounsfield units**; the
network's first module (:class:`~nnunet_breast.networks.input_layer.ClipInputLayer`) computes the paper's inputs
itself: the HU window [-200, 200] mapped to [-1, 1], the binary image HU >= 300 and, for the segmentation net, the
stage-1 probability map passed through unchanged.

Network
    :class:`ResSEUNet3d`, built by ``networks.plans.build_clip_net``. When the configuration names it (what
    ``nnunet-breast plan --model clips`` writes, input variant included) its kwargs are used; otherwise (e.g. stock
    ``3d_fullres``) the net is built from that configuration's strides and kernel sizes.  Each trainer declares its
    input variant (``inputs``, from ``networks.plans.CLIP_INPUTS``); the main trainers' variant is the one the plans
    carry, the ablations' differs, so an ablation trainer can never silently train the other variant.  The dataset
    must have ``1 + passthrough_channels`` channels, otherwise ``ClipChannelMismatchError`` is raised.
    Prediction goes through the same class method, so a checkpoint always meets its network.

Augmentation (raw HU)
    nnU-Net's pipeline minus its intensity transforms (Gaussian noise, blur, multiplicative brightness, contrast,
    gamma, simulated low resolution): they would move tissue across the HU >= 300 threshold and change what HU
    means.  Added (``transforms.py``): ``CTIntensityScalingTransform``, a multiplication of the CT channel (channel
    0 only; the probability map is left alone) by a factor drawn from [0.9, 1.1], with probability 0.15. This is the
    paper's "random shift intensity 0.9-1.1" read literally: a multiplicative factor on raw HU, i.e. around 0 HU
    (water), so -1000 HU air becomes -900 .. -1100 and a 300 HU clip border becomes 270 .. 330.  Kept: nnU-Net's
    spatial transform (rotation, scaling), mirroring on all allowed axes (the paper's axial/sagittal/coronal flips).

    Padding: nnU-Net's ``SpatialTransform`` pads the image with 0 (``padding_mode_image="zeros"``), which is water in
    HU, not air.  The trainers replace it by ``HUPaddedSpatialTransform`` (same parameters), which pads channel 0
    with -1000 HU (air) and every further channel (the probability map) with 0.  What remains: nnU-Net's data loader
    (``nnUNetDataLoader``, before augmentation) pads patches that reach beyond a case with 0 as well; that only
    happens for cases smaller than the patch (plus nnU-Net's rotation margin), and those voxels stay 0 HU (water,
    window value 0, binary 0).

Optimisation (paper)
    Adam, initial LR 1e-4, linear warm-up over the first 5 % of the epochs (the paper: 50 of 1000) then cosine
    annealing to 0 (``lr_schedule.LinearWarmupCosineLRScheduler``, stepped per epoch by nnU-Net's
    ``on_train_epoch_start``).
    The paper names no weight decay; we use Adam's default 0 (``weight_decay`` class attribute; nnU-Net's 3e-5 is a
    one-line change).  Batch size comes from the plans (the paper used 2, as nnU-Net's 3d_fullres plans usually
    do).  Loss, deep supervision, sampling and gradient clipping stay nnU-Net's. On a bf16-capable CPU the steps
    run under bf16 autocast (:class:`~nnunet_breast.trainers.cpu.CPUAutocast`: half the fp32 time per iteration of
    the demo's clip net); the HU window and threshold of the input layer stay fp32 (elementwise ops).
"""
from __future__ import annotations

import warnings

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_breast.networks.plans import CLIP_INPUTS, build_clip_net
from nnunet_breast.trainers.cpu import CPUAutocast
from nnunet_breast.trainers.lr_schedule import LinearWarmupCosineLRScheduler
from nnunet_breast.trainers.transforms import AIR_HU, ClipRegionTargetTransform, raw_hu_training_pipeline


class ClipTrainerBase(CPUAutocast, nnUNetTrainer):
    """Res-SE-U-Net on raw HU with the clip paper's optimisation and raw-HU-safe augmentation (module docstring)."""

    inputs: dict = CLIP_INPUTS["location"]   # input variant (networks.plans.CLIP_INPUTS); roles set theirs
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
        return build_clip_net(configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision,
                              cls.inputs, cls.feature_base, cls.feature_cap, owner=cls.__name__)

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

    inputs = CLIP_INPUTS["location"]


class nnUNetTrainerClipLocationNoBinary(ClipRegionTarget, ClipTrainerBase):
    """Ablation: Location Net without the binary channel (window only)."""

    inputs = dict(CLIP_INPUTS["location"], binary_threshold_hu=None)


class nnUNetTrainerClipSegmentation(ClipTrainerBase):
    """Segmentation Net: window + metal window + the stage-1 probability map (2-channel dataset: CT 'noNorm', map).

    The metal channel is our addition (``networks.plans.METAL_WINDOW``);
    :class:`nnUNetTrainerClipSegmentationPaperInputs` is the paper's net (window + map)."""

    inputs = CLIP_INPUTS["segmentation"]


class nnUNetTrainerClipSegmentationPaperInputs(nnUNetTrainerClipSegmentation):
    """Ablation: the paper's Segmentation Net inputs, window + map (no metal channel)."""

    inputs = dict(CLIP_INPUTS["segmentation"], metal_window=None)


class nnUNetTrainerClipSegmentationNoMap(nnUNetTrainerClipSegmentation):
    """Ablation: Segmentation Net without the stage-1 map: window + metal window (1-channel dataset)."""

    inputs = dict(CLIP_INPUTS["segmentation"], passthrough_channels=0)


class nnUNetTrainerClipSingleStage(ClipTrainerBase):
    """Single-stage baseline (paper Table 2): the location net's inputs (window + binary HU >= 300) plus the metal
    window of the segmentation net, trained on the clip labels themselves and run on the whole CT at the fine spacing
    (configuration ``3d_clip_fullres``), so the cascade is compared with the strongest one-net setup."""

    inputs = CLIP_INPUTS["single_stage"]
