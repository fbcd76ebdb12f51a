"""Threshold baseline (the clip paper's Table 2): HU >= threshold inside the body mask, small blobs dropped.

Titanium saturates the 12-bit CT range (~3071 HU) while cortical bone stays below ~1500-1900 HU, so a
high threshold finds clips, and also anything else metallic or dense: skin markers (BBs), calcifications,
dense bone. That is the weakness the learned models are compared against.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_breast.body import body_mask

DEFAULT_THRESHOLD_HU = 1500.0


def threshold_clips(image: sitk.Image, threshold_hu: float = DEFAULT_THRESHOLD_HU, min_volume_mm3: float = 2.0,
                    body: np.ndarray | None = None) -> np.ndarray:
    """Bool [z, y, x] clip mask of a CT in HU (``body`` is computed when not given)."""
    hu = sitk.GetArrayFromImage(image)
    if body is None:
        body = body_mask(hu, image.GetSpacing())
    mask = (hu >= threshold_hu) & body
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return mask
    voxel_mm3 = float(np.prod(image.GetSpacing()))
    sizes = np.bincount(labels.ravel(), minlength=n + 1) * voxel_mm3
    keep = sizes >= min_volume_mm3
    keep[0] = False
    return keep[labels]
