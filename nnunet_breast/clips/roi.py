"""Region of interest for the second stage of the two-stage (cascade) clip segmentation.

Stage 1 (the location net) predicts a clip probability map on the whole CT; stage 2 segments the clips
inside a box around that prediction, at a finer grid. The clip paper takes a fixed 96^3 box around the
centroid of the prediction, which silently loses clips whenever a surgeon placed them more than ~48 voxels
from their centroid (e.g. a tumour bed plus a separate boost marker). Here the ROI is instead:

* the bounding box of every voxel with probability >= ``threshold``,
* plus a margin in mm (converted per axis, so anisotropic grids get the same physical margin),
* grown symmetrically to at least ``min_size_vox`` voxels per axis (the stage-2 patch needs that much
  context; the whole axis when the image is smaller), shifted rather than truncated at the image border,
* clipped to the image.

So the ROI always contains every predicted clip, however far apart. When stage 1 predicts nothing the ROI
falls back to where clips are expected to be, the treated breast, rather than to nothing:

* ``"fallback_breast"``: the bounding box of the body mask (:func:`nnunet_breast.volumes.body.body_mask`)
  restricted to its anterior half and to the half on the treated side, when ``side`` and ``hu`` are given.
  Anterior and left are patient directions (DICOM LPS: anterior is -y, the patient's left +x), taken through
  the image's direction: each body voxel's patient y and x against the middle of the body's extent along
  them, so a prone, feet-first or decubitus CT gets the same region as a head-first supine one;
* ``"fallback_body"``: the anterior half of the body when the side is unknown, or the whole image when no
  CT is given or no body is found.

:class:`RoiSettings` holds these parameters (minimum size in mm) for both ``cascade prepare`` (training crops)
and prediction, so the two cannot drift apart; :func:`clip_probability` reads stage 1's map for both.

Index/world conventions: arrays and ROI indices are [z, y, x] (numpy order of SimpleITK arrays); the
anatomical fallback works in patient coordinates through the direction (identity when none is given).
Cropping and pasting use the image's own geometry, so they are exact for any origin, spacing and direction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_breast.volumes.components import bounding_box

SOURCES = ("prediction", "fallback_breast", "fallback_body")


@dataclass(frozen=True)
class Roi:
    """A box of voxels, [z, y, x], ``start`` inclusive and ``stop`` exclusive, and how it was obtained.

    ``source`` is kept so that evaluation can report how often stage 1 missed every clip (the fallback
    cases) instead of those misses disappearing into the stage-2 score.
    """

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    source: str

    def __post_init__(self) -> None:
        start = tuple(int(v) for v in self.start)
        stop = tuple(int(v) for v in self.stop)
        if len(start) != 3 or len(stop) != 3:
            raise ValueError(f"Roi needs 3 start and 3 stop indices, got {self.start} / {self.stop}")
        if any(a < 0 or b <= a for a, b in zip(start, stop)):
            raise ValueError(f"empty or negative Roi: start {start}, stop {stop}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown Roi source {self.source!r}; choose from {SOURCES}")
        # normalise numpy integers / lists to plain int tuples (frozen: bypass __setattr__)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)

    @property
    def size(self) -> tuple[int, int, int]:
        """Number of voxels along z, y, x."""
        return tuple(b - a for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    def slices(self) -> tuple[slice, slice, slice]:
        """Numpy slices selecting the ROI from a [z, y, x] array."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    def to_json(self) -> dict:
        """Plain JSON-serialisable dict, so the ROI can be stored next to the stage-2 inputs."""
        return {"start": list(self.start), "stop": list(self.stop), "source": self.source}

    @classmethod
    def from_json(cls, d: dict) -> "Roi":
        return cls(tuple(d["start"]), tuple(d["stop"]), str(d["source"]))


@dataclass(frozen=True)
class RoiSettings:
    """How a probability map becomes an ROI. Here, not in prepare.py or predict.py, because both must use the
    same rule: ``cascade prepare`` stores it in the stage-2 dataset.json and prediction reads it back."""
    threshold: float = 0.5
    margin_mm: float = 10.0
    min_size_mm: float = 192.0          # 96 voxels x 2 mm (the paper's 96^3 at 2 mm)

    def min_size_vox(self, spacing_zyx) -> tuple[int, int, int]:
        return tuple(int(math.ceil(self.min_size_mm / s - 1e-6)) for s in spacing_zyx)  # type: ignore[return-value]

    def roi(self, prob: np.ndarray | sitk.Image, image: sitk.Image, hu: np.ndarray | None = None,
            side: str | None = None) -> Roi:
        """ROI on ``image``'s grid from a map on that grid (array) or on a coarser grid of its own (image)."""
        spacing = image.GetSpacing()[::-1]
        if isinstance(prob, sitk.Image):
            return roi_from_coarse_probability(prob, image, self.margin_mm, self.min_size_vox(spacing),
                                               self.threshold, hu=hu, side=side)
        return roi_from_probability(prob, spacing, self.margin_mm, self.min_size_vox(spacing), self.threshold,
                                    hu=hu, side=side, direction=image.GetDirection())

    def to_json(self) -> dict:
        return {"threshold": self.threshold, "margin_mm": self.margin_mm, "min_size_mm": self.min_size_mm}

    @classmethod
    def from_json(cls, d: dict) -> "RoiSettings":
        return cls(float(d["threshold"]), float(d["margin_mm"]), float(d["min_size_mm"]))


def clip_probability(npz_file: Path) -> np.ndarray:
    """Clip probability [z, y, x] from nnU-Net's saved probabilities (every foreground class summed)."""
    return np.load(npz_file)["probabilities"][1:].sum(0).astype(np.float32)

def _bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(start, stop) of the True voxels of a 3-D mask, or None when it has none."""
    box = bounding_box(mask)
    return None if box is None else (np.array([b.start for b in box]), np.array([b.stop for b in box]))


def _grow(start: np.ndarray, stop: np.ndarray, shape: Sequence[int], margin_vox: np.ndarray,
          min_size_vox: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Add the margin, grow to the minimum size around the box centre, keep inside the image.

    Growing is symmetric (the extra voxel of an odd difference goes to the stop side); a box that would
    leave the image is shifted back in rather than truncated, so it keeps its minimum size whenever the
    image is at least that big. The original box is always kept whole.
    """
    shape = np.asarray(shape, int)
    lo = np.maximum(start - margin_vox, 0)
    hi = np.minimum(stop + margin_vox, shape)
    target = np.minimum(np.asarray(min_size_vox, int), shape)
    for a in range(3):
        extra = int(target[a] - (hi[a] - lo[a]))
        if extra <= 0:
            continue
        lo_a = lo[a] - extra // 2
        hi_a = hi[a] + (extra - extra // 2)
        if lo_a < 0:
            hi_a -= lo_a
            lo_a = 0
        if hi_a > shape[a]:
            lo_a -= hi_a - shape[a]
            hi_a = shape[a]
        lo[a], hi[a] = max(lo_a, 0), hi_a
    return lo, hi


def _half(body: np.ndarray, spacing_zyx: Sequence[float], direction, axis: int, upper: bool) -> np.ndarray:
    """Body voxels on one side of the middle of the body's extent along patient ``axis`` (0: x, 1: y), the
    upper (larger coordinate) or lower side; voxels within 1e-3 mm of the middle count on both sides, so that
    a thin body never yields an empty half."""
    from nnunet_breast.volumes.orientation import patient_axis_mm

    coord = patient_axis_mm(body.shape, tuple(spacing_zyx)[::-1], direction, axis)
    inside = np.broadcast_to(coord, body.shape)[body]
    middle = (float(inside.min()) + float(inside.max())) / 2.0
    return body & ((coord >= middle - 1e-3) if upper else (coord <= middle + 1e-3))


def _fallback_region(hu: np.ndarray | None, spacing_zyx: Sequence[float], side: str | None,
                     direction=None) -> tuple[np.ndarray | None, str]:
    """Mask of where clips are expected when stage 1 found none, and the ROI source it stands for."""
    if hu is None:
        return None, "fallback_body"
    from nnunet_breast.volumes.body import body_mask

    body = body_mask(np.asarray(hu), tuple(spacing_zyx)[::-1])
    if not body.any():
        return None, "fallback_body"
    direction = np.eye(3).ravel() if direction is None else direction
    anterior = _half(body, spacing_zyx, direction, 1, upper=False)      # LPS: y grows posteriorly
    if side is None:
        return (anterior if anterior.any() else body), "fallback_body"
    s = side.strip().upper()[:1]
    if s not in ("L", "R"):
        raise ValueError(f"side must be 'L', 'R' or None, got {side!r}")
    breast = anterior & _half(body, spacing_zyx, direction, 0, upper=s == "L")   # LPS: +x is the patient's left
    if not breast.any():
        return (anterior if anterior.any() else body), "fallback_body"
    return breast, "fallback_breast"


def roi_from_probability(prob: np.ndarray, spacing_zyx: Sequence[float], margin_mm: float = 10.0,
                         min_size_vox: Sequence[int] = (96, 96, 96), threshold: float = 0.5,
                         hu: np.ndarray | None = None, side: str | None = None, direction=None) -> Roi:
    """Stage-2 ROI around every voxel of ``prob`` >= ``threshold`` (see the module docstring).

    ``prob`` is [z, y, x] on the stage-2 grid (``spacing_zyx`` in mm, z first); ``min_size_vox`` is in
    voxels of that grid. ``hu`` (same shape), ``side`` ("L"/"R") and ``direction`` (the grid's SimpleITK
    direction; None: identity) only serve the fallback used when no voxel reaches the threshold; without
    ``hu`` that fallback is the whole image. Never returns an empty ROI.
    """
    prob = np.asarray(prob)
    if prob.ndim != 3 or 0 in prob.shape:
        raise ValueError(f"prob must be a non-empty 3-D [z, y, x] array, got shape {prob.shape}")
    return _roi_around(_bbox(prob >= threshold), prob.shape, spacing_zyx, margin_mm, min_size_vox, hu, side,
                       direction)


def roi_from_coarse_probability(prob: sitk.Image, reference: sitk.Image, margin_mm: float = 10.0,
                                min_size_vox: Sequence[int] = (96, 96, 96), threshold: float = 0.5,
                                hu: np.ndarray | None = None, side: str | None = None) -> Roi:
    """:func:`roi_from_probability` for a map on a coarser grid of its own (stage 1 run at its spacing).

    Every coarse voxel >= ``threshold`` is taken with its whole extent (its centre +- half a coarse voxel)
    onto the ``reference`` grid (the CT), so the ROI holds every CT voxel inside a flagged coarse voxel; the
    margin, minimum size and fallback then act on the CT grid as for a full-resolution map. This spares the
    cascade nnU-Net's resampling of stage-1 probabilities to the whole CT.
    """
    if prob.GetDimension() != 3 or reference.GetDimension() != 3:
        raise ValueError("roi_from_coarse_probability needs 3-D images")
    shape = tuple(reference.GetSize()[::-1])
    box = _bbox(sitk.GetArrayViewFromImage(prob) >= threshold)
    if box is not None:
        box = _box_onto(box, prob, reference)
    return _roi_around(box, shape, reference.GetSpacing()[::-1], margin_mm, min_size_vox, hu, side,
                       reference.GetDirection())


def _box_onto(box: tuple[np.ndarray, np.ndarray], source: sitk.Image, reference: sitk.Image):
    """(start, stop) [z, y, x] on ``source`` -> the reference voxels whose centres lie in the box's extent."""
    lo = box[0][::-1] - 0.5                        # continuous xyz index of the box's outer faces
    hi = box[1][::-1] - 0.5
    corners = [[(lo, hi)[k >> a & 1][a] for a in range(3)] for k in range(8)]
    idx = np.array([reference.TransformPhysicalPointToContinuousIndex(
        source.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])) for corner in corners])
    size = np.array(reference.GetSize())
    start = np.clip(np.ceil(idx.min(0) - 1e-6).astype(int), 0, size - 1)
    stop = np.clip(np.floor(idx.max(0) + 1e-6).astype(int) + 1, start + 1, size)
    return start[::-1], stop[::-1]


def _roi_around(box, shape, spacing_zyx, margin_mm, min_size_vox, hu, side, direction=None) -> Roi:
    """Margin + minimum size around ``box`` on a grid of ``shape``; the fallback region when ``box`` is None."""
    spacing = np.asarray(spacing_zyx, float)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"spacing_zyx must be 3 positive numbers, got {spacing_zyx}")
    if len(min_size_vox) != 3:
        raise ValueError(f"min_size_vox must have 3 entries (z, y, x), got {min_size_vox}")
    if margin_mm < 0:
        raise ValueError(f"margin_mm must be >= 0, got {margin_mm}")
    if hu is not None and tuple(np.shape(hu)) != tuple(shape):
        raise ValueError(f"hu shape {np.shape(hu)} differs from prob shape {tuple(shape)}")

    if box is not None:
        source = "prediction"
        margin_vox = np.ceil(margin_mm / spacing - 1e-9).astype(int)
    else:
        region, source = _fallback_region(hu, spacing, side, direction)
        box = _bbox(region) if region is not None else None
        if box is None:
            box = (np.zeros(3, int), np.asarray(shape, int))
        # the fallback box is already the whole expected region: no margin, only the minimum size
        margin_vox = np.zeros(3, int)
    start, stop = _grow(np.asarray(box[0]), np.asarray(box[1]), shape, margin_vox, min_size_vox)
    return Roi(tuple(start), tuple(stop), source)


def resample_to_spacing(image: sitk.Image, spacing_xyz: Sequence[float], fill: float = -1000.0) -> sitk.Image:
    """``image`` trilinearly resampled onto a grid of ``spacing_xyz`` (mm) that covers its whole extent.

    The new grid starts at the image's outer face and has as many voxels as cover the extent; samples beyond
    the image (less than one new voxel) get ``fill`` (air for a CT). Used to run stage 1 at its own spacing.
    """
    spacing = np.asarray(spacing_xyz, float)
    old_sp = np.asarray(image.GetSpacing(), float)
    extent = np.asarray(image.GetSize()) * old_sp
    size = [int(v) for v in np.maximum(np.ceil(extent / spacing - 1e-6), 1)]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = np.asarray(image.GetOrigin()) + direction @ ((spacing - old_sp) / 2)
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), spacing.tolist(),
                         image.GetDirection(), float(fill), sitk.sitkFloat32)


def _check_inside(roi: Roi, size_zyx: Sequence[int]) -> None:
    if any(b > n for b, n in zip(roi.stop, size_zyx)):
        raise ValueError(f"Roi {roi.start}-{roi.stop} exceeds the image size (z, y, x) {tuple(size_zyx)}")


def crop_image(image: sitk.Image, roi: Roi) -> sitk.Image:
    """The ROI of ``image`` with its world geometry kept (origin = physical point of ``roi.start``).

    Keeping the geometry is what lets stage 2 resample, predict and be pasted back without any
    bookkeeping other than the ROI itself.
    """
    if image.GetDimension() != 3:
        raise ValueError(f"crop_image needs a 3-D image, got {image.GetDimension()}-D")
    _check_inside(roi, image.GetSize()[::-1])
    size_xyz = [int(v) for v in roi.size[::-1]]
    index_xyz = [int(v) for v in roi.start[::-1]]
    return sitk.RegionOfInterest(image, size_xyz, index_xyz)


def paste_back(cropped: sitk.Image | np.ndarray, roi: Roi, reference: sitk.Image, fill: float = 0) -> sitk.Image:
    """Inverse of :func:`crop_image`: ``cropped`` put back into ``reference``'s geometry, ``fill`` outside.

    ``cropped`` is a SimpleITK image of the ROI size (its geometry must be that of the crop, which catches
    an ROI applied to the wrong case) or a [z, y, x] array of the ROI size. The result has the pixel type
    of ``cropped`` and the origin, spacing and direction of ``reference``.
    """
    if reference.GetDimension() != 3:
        raise ValueError(f"paste_back needs a 3-D reference, got {reference.GetDimension()}-D")
    _check_inside(roi, reference.GetSize()[::-1])
    if isinstance(cropped, sitk.Image):
        expected_origin = reference.TransformIndexToPhysicalPoint([int(v) for v in roi.start[::-1]])
        tol = 1e-3 * max(reference.GetSpacing())
        if (not np.allclose(cropped.GetOrigin(), expected_origin, rtol=0, atol=tol)
                or not np.allclose(cropped.GetSpacing(), reference.GetSpacing(), rtol=1e-6, atol=0)
                or not np.allclose(cropped.GetDirection(), reference.GetDirection(), rtol=0, atol=1e-6)):
            raise ValueError("cropped image geometry does not match the ROI of the reference image")
        arr = sitk.GetArrayFromImage(cropped)
        is_vector = cropped.GetNumberOfComponentsPerPixel() > 1
    else:
        arr = np.asarray(cropped)
        is_vector = arr.ndim == 4
    if tuple(arr.shape[:3]) != roi.size:
        raise ValueError(f"cropped array shape {arr.shape[:3]} differs from the Roi size {roi.size}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)   # SimpleITK has no bool pixel type
    full_shape = tuple(reference.GetSize()[::-1]) + tuple(arr.shape[3:])
    out = np.full(full_shape, fill, dtype=arr.dtype)
    out[roi.slices()] = arr
    img = sitk.GetImageFromArray(out, isVector=is_vector)
    img.CopyInformation(reference)
    return img
