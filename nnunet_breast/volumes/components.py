"""Connected components of a mask: the one place where voxels are grouped into objects.

:func:`label_components` labels a mask. Its default is full connectivity (26 neighbours in 3D, 8 in 2D),
which is how a surgical clip, a speck of a prediction or a clip of the reference is counted everywhere
(clip detection, the clip table, the tumour bed, island removal); ``connectivity=1`` gives face neighbours
only (6 in 3D), which the body mask uses. :func:`components` adds the centroids in mm.

Small disconnected islands of a predicted mask are noise to a planner and thousands of contours to a
TPS: written to an RTSTRUCT each speck becomes a contour, and a structure with thousands of them is both
useless and slow to load. :func:`remove_islands` drops components below a volume (26-connectivity); the
biggest component is always kept, so a small structure never vanishes. It labels only the mask's
:func:`bounding_box`; :func:`pasted` puts an array computed on a box back onto the whole grid.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["label_components", "components", "remove_islands", "bounding_box", "pasted"]


def label_components(mask: np.ndarray, min_voxels: int = 1, connectivity: int | None = None):
    """Label the connected components of ``mask``; returns ``(labels, sizes)``.

    ``connectivity`` is the largest number of axes along which two neighbours may differ (as in
    :func:`scipy.ndimage.generate_binary_structure`); ``None`` means ``mask.ndim``, full connectivity.
    Components smaller than ``min_voxels`` are discarded. ``labels`` numbers the kept components 1..n in
    scan order and ``sizes`` is the (n,) array of their voxel counts.
    """
    mask = np.asarray(mask, bool)
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim if connectivity is None else connectivity)
    labels, n = ndimage.label(mask, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    if min_voxels > 1 and n:
        keep = sizes >= min_voxels
        remap = np.zeros(n + 1, labels.dtype)
        remap[1:][keep] = np.arange(1, int(keep.sum()) + 1)
        labels, sizes = remap[labels], sizes[keep]
    return labels, sizes


def components(mask: np.ndarray, spacing_zyx, origin_zyx=None, min_voxels: int = 1):
    """:func:`label_components` (full connectivity) with the centroids in mm.

    Returns ``(labels, centroids_mm, sizes)``: ``labels`` numbers the kept components 1..n, their
    centroids (voxel centre of mass times the spacing, plus the origin; direction taken as identity) are
    an (n, ndim) array and their voxel counts an (n,) array. Spacing and origin are ``(z, y, x)`` mm.
    """
    mask = np.asarray(mask, bool)
    nd = mask.ndim
    labels, sizes = label_components(mask, min_voxels)
    n = len(sizes)
    spacing = np.asarray(spacing_zyx, np.float64)
    origin = np.zeros(nd) if origin_zyx is None else np.asarray(origin_zyx, np.float64)
    if n == 0:
        return labels, np.zeros((0, nd)), sizes
    com = np.array(ndimage.center_of_mass(mask, labels, np.arange(1, n + 1)), np.float64).reshape(n, nd)
    return labels, com * spacing + origin, sizes


def remove_islands(mask: np.ndarray, spacing_zyx, min_volume_mm3: float, keep_largest: bool = True) -> np.ndarray:
    """``mask`` without components smaller than ``min_volume_mm3`` (bool [z, y, x])."""
    mask = np.asarray(mask, bool)
    if min_volume_mm3 <= 0:
        return mask
    box = bounding_box(mask)        # a structure fills a small part of a planning CT: label that part only
    if box is None:
        return mask
    out = np.zeros_like(mask)
    out[box] = _without_islands(mask[box], spacing_zyx, min_volume_mm3, keep_largest)
    return out


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel of ``mask``; None when it has none. Each axis after
    the first scans only the slab the earlier ones left."""
    box, sub = [], np.asarray(mask)
    for axis in range(sub.ndim):
        hit = np.flatnonzero(sub.any(axis=tuple(a for a in range(sub.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
        sub = sub[(slice(None),) * axis + (box[-1],)]
    return tuple(box)


def pasted(inside: np.ndarray, box: tuple, shape, fill=0) -> np.ndarray:
    """``inside`` (covering ``box``, slices of the last ``len(shape)`` axes) on the whole ``shape`` grid, ``fill``
    (broadcast over the grid) elsewhere."""
    out = np.empty((*inside.shape[:inside.ndim - len(shape)], *shape), inside.dtype)
    out[...] = fill
    out[(Ellipsis, *box)] = inside
    return out


def _without_islands(mask: np.ndarray, spacing_zyx, min_volume_mm3: float, keep_largest: bool) -> np.ndarray:
    labels, counts = label_components(mask)
    sizes = np.concatenate([[0], counts]) * float(np.prod(spacing_zyx))
    keep = sizes >= min_volume_mm3
    if keep_largest:
        keep[int(np.argmax(sizes))] = True
    keep[0] = False
    return keep[labels]
