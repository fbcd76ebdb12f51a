"""Body mask as in the clip paper: drop air, open and close, keep the largest component (the couch goes);
the body's bounding box, outside which prediction runs no patch (inference/fast_path.py).

HU < -150 is air. The paper's threshold leaves the lungs and the trachea as holes, so each axial slice
is hole-filled afterwards (a body mask must contain the lungs). Arms that are not joined to the trunk go
with the couch, as with the paper's largest-component rule.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from nnunet_breast.volumes.components import bounding_box, label_components


def _ball(radius_mm: float, spacing_zyx) -> np.ndarray:
    r = [max(0, int(np.floor(radius_mm / s))) for s in spacing_zyx]
    zz, yy, xx = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    return ((zz * spacing_zyx[0]) ** 2 + (yy * spacing_zyx[1]) ** 2 + (xx * spacing_zyx[2]) ** 2) <= radius_mm ** 2


def body_mask(hu: np.ndarray, spacing_xyz, air_hu: float = -150.0, radius_mm: float = 3.0) -> np.ndarray:
    """Bool [z, y, x] body mask of a CT in HU; ``spacing_xyz`` in SimpleITK order."""
    spacing_zyx = tuple(spacing_xyz[::-1])
    tissue = hu >= air_hu
    ball = _ball(radius_mm, spacing_zyx)
    tissue = ndimage.binary_opening(tissue, ball)
    tissue = ndimage.binary_closing(tissue, ball, border_value=0)
    labels, sizes = label_components(tissue, connectivity=1)   # 6-connectivity (face neighbours)
    if len(sizes) == 0:
        return np.zeros_like(tissue)
    body = labels == int(np.argmax(sizes)) + 1
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


def air_outside_body(image, air_hu: float = -1000.0):
    """(CT with HU outside the body set to air, body mask): the clip paper's removal of air and couch,
    applied alike to training data (``convert clips``) and to new CTs (``predict-clips``)."""
    import SimpleITK as sitk

    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    body = body_mask(hu, image.GetSpacing())
    out = sitk.GetImageFromArray(np.where(body, hu, np.float32(air_hu)))
    out.CopyInformation(image)
    return out, body


#: air kept around the body's bounding box (mm): the patches at the skin see air beyond it, as in training
BODY_MARGIN_MM = 20.0

Box = tuple[slice, slice, slice]          # [z, y, x] slices of the whole grid


#: the body box is found on every k-th voxel, k the nearest to this spacing (mm): a box grown by centimetres needs
#: no finer grid, and the body mask of a planning CT's full grid costs seconds
BOX_GRID_MM = 2.5


def body_box(hu: np.ndarray, spacing_xyz, margin_mm: float = BODY_MARGIN_MM, air_hu: float = -150.0) -> Box | None:
    """Slices of the body's bounding box in an HU array (``spacing_xyz`` in SimpleITK order, as
    :func:`body_mask`; any axis order) grown by ``margin_mm`` and by one step of the :data:`BOX_GRID_MM` grid the
    body is found on (the body may reach that far past its last sampled voxel); None when no body is found.

    That grid starts, along each axis, at the first voxel of tissue (HU >= ``air_hu``), not at the array's corner:
    the same patient anywhere in a wider or shifted field of view gets the same box relative to the patient, so
    the fast path's patches, anchored on the box, move with the patient."""
    spacing_zyx = np.array(spacing_xyz[::-1], float)
    step = np.maximum(1, np.round(BOX_GRID_MM / spacing_zyx)).astype(int)
    tissue = bounding_box(hu >= air_hu)
    if tissue is None:
        return None
    first = [t.start % int(k) for t, k in zip(tissue, step)]
    body = body_mask(hu[tuple(slice(f, None, int(k)) for f, k in zip(first, step))], (spacing_zyx * step)[::-1],
                     air_hu)
    box = bounding_box(body)
    if box is None:
        return None
    pad = np.ceil(margin_mm / spacing_zyx).astype(int) + (step - 1)
    return tuple(slice(max(0, f + b.start * int(k) - int(p)), min(int(n), f + (b.stop - 1) * int(k) + 1 + int(p)))
                 for b, f, k, p, n in zip(box, first, step, pad, hu.shape))
