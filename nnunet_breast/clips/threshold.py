"""Threshold baseline (the clip paper's Table 2): HU >= threshold inside the body mask, small blobs dropped.

Titanium saturates the 12-bit CT range (~3071 HU) while cortical bone stays below ~1500-1900 HU, so a
high threshold finds clips, and also anything else metallic or dense: skin markers (BBs), calcifications,
dense bone. That is the weakness the learned models are compared against.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from nnunet_breast.clips import DEFAULT_THRESHOLD_HU, MIN_CLIP_MM3
from nnunet_breast.volumes.body import body_mask
from nnunet_breast.volumes.components import remove_islands


def threshold_clips(image: sitk.Image, threshold_hu: float = DEFAULT_THRESHOLD_HU,
                    min_volume_mm3: float = MIN_CLIP_MM3, body: np.ndarray | None = None) -> np.ndarray:
    """Bool [z, y, x] clip mask of a CT in HU (``body`` is computed when not given)."""
    hu = sitk.GetArrayFromImage(image)
    if body is None:
        body = body_mask(hu, image.GetSpacing())
    return remove_islands((hu >= threshold_hu) & body, image.GetSpacing()[::-1], min_volume_mm3, keep_largest=False)
