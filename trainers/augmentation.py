"""nnU-Net's intensity augmentations, by name, for trainers that must leave intensities alone.

The paper recipe (spatial augmentation only) and the clip trainers (raw HU, where noise or gamma would move
tissue across the HU >= 300 threshold) both drop these from nnU-Net's training pipeline.
"""
from __future__ import annotations

INTENSITY_TRANSFORMS = ("GaussianNoiseTransform", "GaussianBlurTransform", "MultiplicativeBrightnessTransform",
                        "ContrastTransform", "SimulateLowResolutionTransform", "GammaTransform")


def transform_name(transform) -> str:
    """Class name of a transform, looking through batchgeneratorsv2's RandomTransform wrapper."""
    inner = getattr(transform, "transform", None)
    return type(inner if inner is not None else transform).__name__
