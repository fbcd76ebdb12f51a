"""One entry per predicted clip: what a physicist checks before using clips for a boost volume."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_breast.volumes.components import label_components


def clip_table(mask: np.ndarray, image: sitk.Image, min_voxels: int = 1) -> list[dict]:
    """Connected components (26-connectivity) of ``mask`` [z, y, x] on ``image``'s grid, largest first.

    Centroids are in patient coordinates (mm, DICOM LPS, through the image's own direction and origin);
    ``max_hu`` is read from ``image`` (HU).
    """
    mask = np.asarray(mask, bool)
    hu = sitk.GetArrayViewFromImage(image)
    if mask.shape != hu.shape:
        raise ValueError(f"clip mask shape {mask.shape} differs from the CT's {hu.shape}")
    labels, sizes = label_components(mask, min_voxels)
    if len(sizes) == 0:
        return []
    index = np.arange(1, len(sizes) + 1)
    coms = ndimage.center_of_mass(mask, labels, index)
    maxima = ndimage.maximum(hu, labels, index)
    voxel_mm3 = float(np.prod(image.GetSpacing()))
    rows = []
    for size, com, hmax in zip(sizes, coms, maxima):
        centre = image.TransformContinuousIndexToPhysicalPoint([float(c) for c in com[::-1]])
        rows.append({"centroid_mm": [round(float(c), 2) for c in centre], "volume_mm3": round(float(size) * voxel_mm3, 2),
                     "voxels": int(size), "max_hu": round(float(hmax), 1)})
    rows.sort(key=lambda r: -r["voxels"])
    for i, r in enumerate(rows, start=1):
        r["clip"] = i
    return [{"clip": r.pop("clip"), **r} for r in rows]
