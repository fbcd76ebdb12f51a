"""Data-augmentation pieces of our trainers, on top of nnU-Net's own pipeline.

* nnU-Net's intensity augmentations by name (:data:`INTENSITY_TRANSFORMS`): the paper recipe (spatial
  augmentation only) and the clip trainers (raw HU, where noise or gamma would move tissue across the HU >= 300
  threshold) drop them.
* Raw-HU augmentation of the clip nets: :class:`CTIntensityScalingTransform` (the clip paper's "random shift
  intensity 0.9-1.1", a factor on raw HU around water) and :class:`HUPaddedSpatialTransform` (nnU-Net's spatial
  transform padding the CT with air, -1000 HU, instead of 0 HU = water); :func:`raw_hu_training_pipeline` edits
  nnU-Net's pipeline with both.
* :class:`ClipRegionTargetTransform`: the location nets' target, the clips grown by a ball.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from batchgeneratorsv2.helpers.scalar_type import RandomScalar, sample_scalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform

AIR_HU = -1000.0
INTENSITY_TRANSFORMS = ("GaussianNoiseTransform", "GaussianBlurTransform", "MultiplicativeBrightnessTransform",
                        "ContrastTransform", "SimulateLowResolutionTransform", "GammaTransform")


def transform_name(transform) -> str:
    """Class name of a transform, looking through batchgeneratorsv2's RandomTransform wrapper."""
    inner = getattr(transform, "transform", None)
    return type(inner if inner is not None else transform).__name__


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
        if name in INTENSITY_TRANSFORMS:
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
