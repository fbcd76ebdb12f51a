"""RTDOSE: a 3D dose grid in Gy as a multi-frame DICOM object."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from nnunet_breast.dicom.common import RTDOSE_STORAGE, ds_str, new_file_dataset, uid
from nnunet_breast.errors import UserError


def write_rtdose(dose_gy: np.ndarray, spacing, origin, study: Dataset, out_file: Path, *, series_uid: str,
                 frame_of_reference_uid: str, rtstruct_uid: str | None = None, entropy=()) -> Path:
    """Dose [z, y, x] in Gy on its own grid (identity direction); stored as uint32 x DoseGridScaling."""
    sop = uid(*entropy, "rtdose") if entropy else uid()
    ds = new_file_dataset(RTDOSE_STORAGE, sop)
    for elem in study:
        ds.add(elem)
    ds.Modality = "RTDOSE"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 4
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.ImagePositionPatient = [ds_str(o) for o in origin]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [ds_str(spacing[1], 6), ds_str(spacing[0], 6)]
    ds.SliceThickness = ds_str(spacing[2])
    ds.GridFrameOffsetVector = [ds_str(k * spacing[2]) for k in range(dose_gy.shape[0])]
    ds.FrameIncrementPointer = (0x3004, 0x000C)
    ds.NumberOfFrames = dose_gy.shape[0]
    ds.Rows, ds.Columns = dose_gy.shape[1], dose_gy.shape[2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    peak = float(dose_gy.max()) if dose_gy.size else 0.0
    scaling = peak / 4.0e9 if peak > 0 else 1.0
    ds.DoseGridScaling = f"{scaling:.6e}"
    if rtstruct_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
        ref.ReferencedSOPInstanceUID = rtstruct_uid
        ds.ReferencedStructureSetSequence = Sequence([ref])
    ds.PixelData = np.round(dose_gy / float(ds.DoseGridScaling)).astype(np.uint32).tobytes()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out_file, enforce_file_format=True)
    return out_file


def read_rtdose(path: Path):
    """RTDOSE -> (SimpleITK image of dose in Gy, header). Refuses (UserError) dose that is not in Gy."""
    import pydicom
    import SimpleITK as sitk
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as e:
        raise UserError(f"{path}: not a DICOM file ({e})") from None
    if getattr(ds, "Modality", None) != "RTDOSE":
        raise UserError(f"{path}: not an RTDOSE")
    if str(getattr(ds, "DoseUnits", "")).upper() != "GY":
        raise UserError(f"{path}: DoseUnits {getattr(ds, 'DoseUnits', None)!r}; only GY is supported")
    frames = np.asarray(ds.pixel_array, dtype=np.float64).reshape(int(getattr(ds, "NumberOfFrames", 1)),
                                                                 ds.Rows, ds.Columns)
    dose = frames * float(ds.DoseGridScaling)
    offsets = np.asarray(ds.GridFrameOffsetVector, float) if "GridFrameOffsetVector" in ds else np.zeros(1)
    steps = np.diff(offsets)
    if len(steps) and (np.any(steps <= 0) or np.ptp(steps) > 1e-3):
        raise UserError(f"{path}: non-uniform or unsorted GridFrameOffsetVector is not supported")
    row, col = np.asarray(ds.ImageOrientationPatient, float).reshape(2, 3)
    image = sitk.GetImageFromArray(dose.astype(np.float32))
    image.SetOrigin([float(v) for v in ds.ImagePositionPatient])
    image.SetSpacing((float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]), float(steps[0]) if len(steps) else 1.0))
    image.SetDirection(np.column_stack([row, col, np.cross(row, col)]).ravel().tolist())
    return image, ds
