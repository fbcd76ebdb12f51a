"""RTSTRUCT contours (mm) -> voxel masks on a CT grid.

CLOSED_PLANAR contours are filled with the even-odd rule over all contours of a plane (holes, islands),
a voxel counting when its centre is inside. Each contour must lie on a CT plane (within a tolerance):
a contour between slices means the RTSTRUCT was drawn on another series, which is an error, not something
to round away. POINT contours (clips are sometimes marked so) become spheres of a given radius.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from nnunet_breast.dicom.rtstruct import RoiContours
from nnunet_breast.errors import UserError
from nnunet_breast.structures.contours import polygons_to_mask


class ContourError(UserError):
    """A contour that cannot be placed on the CT grid."""


def world_to_index(points_mm: np.ndarray, image: sitk.Image) -> np.ndarray:
    """(N, 3) patient mm -> continuous (i, j, k) = (x, y, z) voxel indices of ``image``."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    rel = points_mm - np.asarray(image.GetOrigin())
    return (rel @ direction) / np.asarray(image.GetSpacing())


def rasterise_roi(roi: RoiContours, image: sitk.Image, plane_tolerance_mm: float = 0.25,
                  point_radius_mm: float = 2.0) -> np.ndarray:
    """Bool mask [z, y, x] of one ROI on the grid of ``image``."""
    nx, ny, nz = image.GetSize()
    dz = image.GetSpacing()[2]
    mask = np.zeros((nz, ny, nx), bool)
    planes: dict[int, list[np.ndarray]] = {}
    points = []
    for kind, pts in roi.contours:
        idx = world_to_index(pts, image)
        if kind == "POINT":
            points.append(pts[0])
            continue
        if kind != "CLOSED_PLANAR":
            raise ContourError(f"ROI {roi.name!r}: contour type {kind} is not supported (CLOSED_PLANAR or POINT)")
        k = int(np.round(idx[:, 2].mean()))
        off_mm = np.abs(idx[:, 2] - k).max() * dz
        if off_mm > plane_tolerance_mm:
            z = float(pts[:, 2].mean())
            raise ContourError(f"ROI {roi.name!r}: contour at z={z:.2f} mm lies {off_mm:.2f} mm off the nearest CT "
                               f"slice (tolerance {plane_tolerance_mm} mm); was it drawn on another series?")
        if not 0 <= k < nz:
            raise ContourError(f"ROI {roi.name!r}: contour at z={float(pts[0, 2]):.2f} mm is outside the CT")
        planes.setdefault(k, []).append(idx[:, :2])
    for k, polys in planes.items():
        mask[k] = polygons_to_mask(polys, (ny, nx))
    for p in points:
        mask |= sphere(image, p, point_radius_mm)
    return mask


def sphere(image: sitk.Image, centre_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """Voxels whose centre lies within ``radius_mm`` of ``centre_mm`` (at least the nearest voxel)."""
    nx, ny, nz = image.GetSize()
    sp = np.asarray(image.GetSpacing())
    c = world_to_index(np.asarray(centre_mm, float)[None], image)[0]
    r = np.ceil(radius_mm / sp).astype(int) + 1
    lo = np.maximum(np.floor(c).astype(int) - r, 0)
    hi = np.minimum(np.ceil(c).astype(int) + r + 1, (nx, ny, nz))
    mask = np.zeros((nz, ny, nx), bool)
    if np.any(hi <= lo):
        raise ContourError(f"POINT at {np.round(centre_mm, 2).tolist()} mm is outside the CT")
    ii, jj, kk = (np.arange(lo[a], hi[a]) for a in range(3))
    d2 = (((ii - c[0]) * sp[0]) ** 2)[None, None, :] + (((jj - c[1]) * sp[1]) ** 2)[None, :, None] \
        + (((kk - c[2]) * sp[2]) ** 2)[:, None, None]
    mask[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = d2 <= radius_mm ** 2
    nearest = tuple(int(np.clip(np.round(c[a]), 0, (nx, ny, nz)[a] - 1)) for a in (2, 1, 0))
    mask[nearest] = True
    return mask
