"""Patient orientation of a CT grid: axial or not, and the same voxels in one array layout (LPS) for the models.

A CT's SimpleITK direction matrix holds, column by column, the patient directions (DICOM LPS: x to the
patient's left, y to posterior, z to the head) of the image's column, row and slice axes. A head-first supine
scan has the identity; prone, feet-first and decubitus scans, or a series stored with negated direction cosines,
hold the same patient with the array's axes flipped or swapped. Anything that means *patient* directions (left
and right, anterior, the slices' z) must therefore go through the direction, never through array indices.

* :func:`axial_problem` says why a grid is not axial (slices not perpendicular to the patient's head-feet
  axis: a sagittal, coronal or oblique reconstruction, or a tilt written into the orientation), or None.
* :func:`to_lps` / :func:`array_to_lps` / :func:`array_from_lps`: the same voxels permuted and flipped so that
  numpy axes (0, 1, 2) run to superior, posterior and left (the identity direction), and back. For axial
  grids whose rows and columns run along patient axes this is exact (no resampling); a grid rotated within
  the plane keeps the rotation left over. Models are trained and run on this layout, so a prone or feet-first
  CT looks to them like the head-first supine CTs they learnt from.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

AXIAL_TOL = 1e-4            # |z| of the row and column directions (the DICOM readers' cosine tolerance)

__all__ = ["AXIAL_TOL", "direction_matrix", "axial_problem", "describe", "to_lps", "array_to_lps",
           "array_from_lps", "grid_from_lps", "patient_axis_mm", "patient_x"]


def direction_matrix(direction) -> np.ndarray:
    """SimpleITK's 9 numbers (row-major) as a 3x3 matrix whose column j is image axis j in LPS."""
    return np.asarray(direction, float).reshape(3, 3)


def describe(direction) -> str:
    """Where the columns, rows and slices run, e.g. ``"columns to L, rows to P, slices to S"``."""
    d = direction_matrix(direction)
    names = ("L", "P", "S"), ("R", "A", "I")
    parts = []
    for j, axis in enumerate(("columns", "rows", "slices")):
        col = d[:, j]
        p = int(np.argmax(np.abs(col)))
        exact = abs(abs(col[p]) - 1) <= AXIAL_TOL
        parts.append(f"{axis} to {names[0 if col[p] > 0 else 1][p]}" + ("" if exact else
                     f" ({np.round(col, 3).tolist()})"))
    return ", ".join(parts)


def axial_problem(direction, tol: float = AXIAL_TOL) -> str | None:
    """None for an axial grid (rows and columns within the patient's transverse plane, slices along head-feet);
    otherwise a sentence saying what the grid is."""
    d = direction_matrix(direction)
    tilt = float(np.degrees(np.arcsin(min(1.0, float(np.hypot(d[2, 0], d[2, 1]))))))
    if abs(d[2, 0]) <= tol and abs(d[2, 1]) <= tol:
        return None
    kind = "sagittal or coronal" if tilt > 45 else "oblique or gantry-tilted"
    return (f"the image is {kind} ({describe(direction)}; the image plane is {tilt:.2f} degrees off the "
            f"patient's transverse plane): only axial CTs are supported (slices perpendicular to the head-feet "
            f"axis, any patient position); reconstruct the series axially")


def _axes(direction) -> tuple[list[int], list[bool]]:
    """For numpy axes (z, y, x) of the LPS layout: the source numpy axis each comes from, and whether it is
    reversed."""
    d = direction_matrix(direction)
    source, flip = [0, 0, 0], [False, False, False]
    taken = set()
    for j in np.argsort(-np.abs(d).max(axis=0)):                    # the most clear-cut image axes first
        order = np.argsort(-np.abs(d[:, j]))
        p = int(next(q for q in order if q not in taken))
        taken.add(p)
        source[2 - p], flip[2 - p] = 2 - int(j), bool(d[p, j] < 0)
    return source, flip


def array_to_lps(arr: np.ndarray, direction) -> np.ndarray:
    """``arr`` [z, y, x] of a grid with ``direction`` -> the same voxels in the LPS layout (a view)."""
    source, flip = _axes(direction)
    out = np.transpose(arr, source + list(range(3, np.ndim(arr))))
    return out[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]


def array_from_lps(arr: np.ndarray, direction) -> np.ndarray:
    """Inverse of :func:`array_to_lps`: LPS-layout voxels back onto the grid with ``direction`` (a view)."""
    source, flip = _axes(direction)
    arr = arr[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]
    return np.transpose(arr, list(np.argsort(source)) + list(range(3, np.ndim(arr))))


def to_lps(image: sitk.Image) -> sitk.Image:
    """``image`` with its voxels in the LPS layout (:func:`array_to_lps`; the same image when it already is);
    origin, spacing and direction follow, so every voxel keeps its patient position."""
    source, flip = _axes(image.GetDirection())
    if source == [0, 1, 2] and not any(flip):
        return image
    arr = sitk.GetArrayViewFromImage(image)
    out = sitk.GetImageFromArray(np.ascontiguousarray(array_to_lps(arr, image.GetDirection())),
                                 isVector=image.GetNumberOfComponentsPerPixel() > 1)
    d, size, spacing = direction_matrix(image.GetDirection()), image.GetSize(), image.GetSpacing()
    first = [0, 0, 0]                                               # source index (x, y, z) of the new [0, 0, 0]
    new_d, new_spacing = np.zeros((3, 3)), [0.0, 0.0, 0.0]
    for a in range(3):                                              # numpy axis a of the LPS layout
        j, sign = 2 - source[a], -1.0 if flip[a] else 1.0           # its SimpleITK axis in the source
        new_d[:, 2 - a] = sign * d[:, j]
        new_spacing[2 - a] = spacing[j]
        first[j] = size[j] - 1 if flip[a] else 0
    out.SetSpacing(new_spacing)
    out.SetDirection(new_d.ravel().tolist())
    out.SetOrigin(image.TransformIndexToPhysicalPoint(first))
    return out


def grid_from_lps(size_xyz, spacing_xyz, origin, direction) -> tuple[list[float], list[float]]:
    """(spacing, origin) of the grid with ``direction`` whose voxels are those of an LPS-layout grid (identity
    direction, ``size_xyz``, ``spacing_xyz``, ``origin``) in the order :func:`array_from_lps` gives them: the
    inverse of :func:`to_lps`, for writing a scan in another patient position."""
    source, flip = _axes(direction)
    spacing, first = [0.0, 0.0, 0.0], [0, 0, 0]
    for a in range(3):                                              # LPS numpy axis a = patient axis 2 - a
        p, j = 2 - a, 2 - source[a]                                 # ... stored along SimpleITK axis j
        spacing[j] = float(spacing_xyz[p])
        first[p] = int(size_xyz[p]) - 1 if flip[a] else 0
    return spacing, (np.asarray(origin, float) + np.asarray(first) * np.asarray(spacing_xyz, float)).tolist()


def patient_axis_mm(shape_zyx, spacing_xyz, direction, axis: int) -> np.ndarray:
    """Patient coordinate ``axis`` (0: x, 1: y, 2: z) of every voxel of a grid, relative to voxel [0, 0, 0], as a
    float32 array broadcastable to ``shape_zyx`` (an axial grid's x or y has no slice dimension)."""
    d = direction_matrix(direction)[axis] * np.asarray(spacing_xyz, float)   # mm per index step along i, j, k
    out = np.zeros((1, 1, 1), np.float32)
    for a, n in enumerate(shape_zyx):                                   # numpy axis a steps SimpleITK axis 2 - a
        if d[2 - a] != 0:
            shape = [1, 1, 1]
            shape[a] = n
            out = out + (np.float32(d[2 - a]) * np.arange(n, dtype=np.float32)).reshape(shape)
    return out


def patient_x(image: sitk.Image, index_zyx) -> float:
    """Patient x (mm, LPS: + is the patient's left) of a continuous voxel index [z, y, x] of ``image``: the side
    of a centroid, right for any patient position and storage order."""
    return image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index_zyx[::-1]])[0]
