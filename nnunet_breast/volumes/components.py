"""Small disconnected islands of a predicted mask: noise to a planner, thousands of contours to a TPS.

An under-trained or confused model leaves speckle; written to an RTSTRUCT each speck becomes a contour,
and a structure with thousands of them is both useless and slow to load. Components below a volume are
dropped (26-connectivity); the biggest component is always kept, so a small structure never vanishes.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def remove_islands(mask: np.ndarray, spacing_zyx, min_volume_mm3: float, keep_largest: bool = True) -> np.ndarray:
    """``mask`` without components smaller than ``min_volume_mm3`` (bool [z, y, x])."""
    mask = np.asarray(mask, bool)
    if min_volume_mm3 <= 0 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1) * float(np.prod(spacing_zyx))
    sizes[0] = 0
    keep = sizes >= min_volume_mm3
    if keep_largest:
        keep[int(np.argmax(sizes))] = True
    keep[0] = False
    return keep[labels]
