"""Read one CT series into a SimpleITK image, refusing anything whose geometry is ambiguous.

A training label is only as good as the image grid it is rasterised on. Slices missing from an export,
duplicated files, a tilted gantry or a stray slice from another reconstruction all produce a volume
that *looks* plausible but puts contours in the wrong place. Rather than guess, this reader checks the
series and raises :class:`CTSeriesError` naming the offending files, so a person can fix the export.

Slices are ordered by their position along the slice normal (never by InstanceNumber or file name),
and HU are computed per slice from RescaleSlope/RescaleIntercept, which may differ between slices.
Compressed pixel data (JPEG-LS, JPEG 2000, RLE, JPEG lossless, as PACS and TPS exports send it) is decoded by
pydicom's plugins (python-gdcm, a dependency); a transfer syntax no installed plugin decodes is refused by name
before any pixel is read. Input files are only ever opened for reading.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
import SimpleITK as sitk

from nnunet_breast.errors import UserError

ORIENTATION_TOL = 1e-4      # direction cosines and pixel spacing must agree this closely
DUPLICATE_TOL_MM = 1e-3     # two slices closer than this along the normal are the same slice
TILT_TOL_MM = 0.01          # allowed in-plane offset between consecutive slice origins


class CTSeriesError(UserError):
    """Refusal to read a CT series; the message names the offending files."""


@dataclass
class CTVolume:
    image: sitk.Image            # HU as float32 (slope/intercept applied), origin/spacing/direction set
    slice_sop_uids: list[str]    # SOPInstanceUID per slice, in array order (k = z index)
    files: list[Path]            # sorted like the slices
    header: pydicom.Dataset      # header of the first sorted slice (no pixels) for metadata


def _names(files: Sequence[Path], limit: int = 6) -> str:
    shown = ", ".join(Path(f).name for f in files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def _read_header(path: Path) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for damaged files
        raise CTSeriesError(f"Cannot read {path} as DICOM ({type(exc).__name__}: {exc}); the file may be "
                            f"truncated or not DICOM. Remove or re-export it.") from exc
    required = ("SOPInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Rows", "Columns",
                "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient")
    missing = [kw for kw in required if kw not in ds]
    if missing:
        raise CTSeriesError(f"{path} lacks {', '.join(missing)}: it is not a complete CT image slice "
                            f"(truncated file or a non-image object). Remove or re-export it.")
    return ds


def _require_same(files: list[Path], values: list, what: str, same=lambda a, b: a == b) -> None:
    """Refuse when ``values`` disagree; name the files that differ from the first file's value."""
    odd = [f for f, v in zip(files, values) if not same(v, values[0])]
    if odd:
        raise CTSeriesError(f"Mixed {what} in one CT series: {files[0].name} has {values[0]}, but "
                            f"{_names(odd)} ({len(odd)} file(s)) differ. A series must be one reconstruction "
                            f"on one grid; pass only the files of a single series.")


def _close(a, b) -> bool:
    return np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=0, atol=ORIENTATION_TOL)


def _check_positions(files: list[Path], ipp: np.ndarray, pos: np.ndarray, normal: np.ndarray,
                     tolerance: float) -> float:
    """Check sorted slice positions; return the mean slice step in mm."""
    steps = np.diff(pos)
    for k, step in enumerate(steps):
        if step < DUPLICATE_TOL_MM:
            raise CTSeriesError(f"Duplicated slice: {files[k].name} and {files[k + 1].name} lie at the same "
                                f"position ({pos[k]:.3f} mm along the slice normal). Keep only one of them.")
    for k in range(len(files) - 1):
        d = ipp[k + 1] - ipp[k]
        in_plane = float(np.linalg.norm(d - np.dot(d, normal) * normal))
        if in_plane > TILT_TOL_MM:
            raise CTSeriesError(f"Gantry tilt / sheared series: slice origins of {files[k].name} and "
                                f"{files[k + 1].name} are offset by {in_plane:.3f} mm within the image plane, so "
                                f"the volume is not a rectangular grid. Resample the series to an untilted grid "
                                f"before conversion.")
    median = float(np.median(steps))
    for k, step in enumerate(steps):
        if abs(step - median) > tolerance:
            missing = round(step / median) - 1
            hint = f" (about {missing} missing slice(s))" if missing >= 1 else ""
            raise CTSeriesError(f"Non-uniform slice spacing: the gap between {files[k].name} and "
                                f"{files[k + 1].name} is {step:.3f} mm where the series' usual step is "
                                f"{median:.3f} mm{hint}. Re-export the complete series.")
    return float((pos[-1] - pos[0]) / (len(pos) - 1))


def _check_decodable(files: list[Path], headers: list[pydicom.Dataset]) -> None:
    """Refuse pixel data that no installed pydicom decoder reads (a compressed transfer syntax without its plugin,
    or one pydicom has no decoder for), naming the transfer syntax, before any pixel is read."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    by_syntax: dict[str, list[Path]] = {}
    for f, h in zip(files, headers):
        syntax = getattr(getattr(h, "file_meta", None), "TransferSyntaxUID", None)
        if syntax:
            by_syntax.setdefault(str(syntax), []).append(f)
    for syntax, these in by_syntax.items():
        name = UID(syntax).name
        what = f"{_names(these, 1)} ({len(these)} file(s)) store pixels as {name}" + \
            (f" ({syntax})" if name != syntax else "")
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise CTSeriesError(f"{what}, a transfer syntax no pixel decoder supports; re-export the CT "
                                f"uncompressed or losslessly compressed (JPEG-LS, JPEG 2000, RLE, JPEG Lossless).") \
                from None
        if not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies)
            raise CTSeriesError(f"{what}, but no decoder for it is installed" + (f" (pydicom: {needs})" if needs else "")
                                + "; reinstall nnunet-breast with its dependencies (python-gdcm) or re-export the "
                                "CT uncompressed.")


def _hu(path: Path, rows: int, cols: int) -> np.ndarray:
    try:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
    except Exception as exc:
        raise CTSeriesError(f"Cannot decode the pixels of {path} ({type(exc).__name__}: {exc}); the file may "
                            f"be truncated. Remove or re-export it.") from exc
    if stored.shape != (rows, cols):
        raise CTSeriesError(f"{path} holds pixels of shape {stored.shape}, expected ({rows}, {cols}) single-frame.")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def read_ct_series(files: Sequence[Path], spacing_tolerance_mm: float = 0.05) -> CTVolume:
    """Read the CT slices in ``files`` (any order) as one float32 HU volume; raise CTSeriesError if unsafe."""
    files = [Path(f) for f in files]
    if len(files) < 2:
        raise CTSeriesError(f"A CT series needs at least 2 slices to define a volume; got {len(files)} "
                            f"({_names(files) or 'no files'}).")
    headers = [_read_header(f) for f in files]
    _require_same(files, [str(h.SeriesInstanceUID) for h in headers], "SeriesInstanceUID")
    _require_same(files, [str(h.FrameOfReferenceUID) for h in headers], "FrameOfReferenceUID")
    _require_same(files, [(int(h.Rows), int(h.Columns)) for h in headers], "image sizes (Rows, Columns)")
    _require_same(files, [[float(v) for v in h.PixelSpacing] for h in headers], "pixel spacings", _close)
    _require_same(files, [[float(v) for v in h.ImageOrientationPatient] for h in headers], "orientations", _close)
    _check_decodable(files, headers)

    iop = np.array([float(v) for v in headers[0].ImageOrientationPatient])
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    ipp = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    pos = ipp @ normal
    order = sorted(range(len(files)), key=lambda i: (pos[i], str(files[i])))
    files, headers, ipp, pos = [files[i] for i in order], [headers[i] for i in order], ipp[order], pos[order]
    slice_step = _check_positions(files, ipp, pos, normal, spacing_tolerance_mm)

    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    volume = np.stack([_hu(f, rows, cols) for f in files])      # [z, y, x]
    image = sitk.GetImageFromArray(volume)
    row_spacing, col_spacing = (float(v) for v in headers[0].PixelSpacing)
    image.SetSpacing((col_spacing, row_spacing, slice_step))
    image.SetOrigin(tuple(float(v) for v in ipp[0]))
    # SimpleITK's direction is a row-major 3x3 matrix whose *columns* are the i, j, k axes.
    image.SetDirection(tuple(np.column_stack([row_cos, col_cos, normal]).ravel().tolist()))
    return CTVolume(image=image, slice_sop_uids=[str(h.SOPInstanceUID) for h in headers], files=files,
                    header=headers[0])
