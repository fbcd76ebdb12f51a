"""RTDOSE: a 3D dose grid in Gy as a multi-frame DICOM object, referencing the RT Plan it belongs to."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from nnunet_breast.dicom.common import (RTDOSE_STORAGE, RTPLAN_STORAGE, ds_str, new_rt_dataset, read_modality,
                                        sop_reference, uid)
from nnunet_breast.errors import UserError

STORED_MAX = 65535          # 16-bit unsigned dose values


def write_rtdose(dose_gy: np.ndarray, spacing, origin, study: Dataset, out_file: Path, *, series_uid: str,
                 frame_of_reference_uid: str, plan_uid: str, entropy=(), position_reference_indicator: str = "",
                 extra: dict | None = None) -> Path:
    """Dose [z, y, x] in Gy on its own grid (identity direction), a plan dose of the RT Plan ``plan_uid``.

    Stored as 16-bit unsigned integers x DoseGridScaling (the peak maps to 65535: steps of peak / 65535,
    0.8 mGy for 50 Gy), the format every TPS imports. The structure set is reached through the plan (RD -> RP
    -> RS -> CT, as TPS exports chain them); ReferencedStructureSetSequence belongs to the RT DVH module and
    is not written, since this object holds no DVHs. Manufacturer and OperatorsName (type 2) are empty
    unless ``extra`` names them.
    """
    sop = uid(*entropy, "rtdose") if entropy else uid()
    ds = new_rt_dataset(RTDOSE_STORAGE, sop, "RTDOSE", study, series_uid, 4, frame_of_reference_uid,
                        position_reference_indicator)
    ds.Manufacturer = ""
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
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.ReferencedRTPlanSequence = Sequence([sop_reference(RTPLAN_STORAGE, plan_uid)])
    peak = float(dose_gy.max()) if dose_gy.size else 0.0
    scaling = peak / STORED_MAX if peak > 0 else 1.0
    ds.DoseGridScaling = f"{scaling:.6e}"
    stored = np.round(dose_gy / float(ds.DoseGridScaling))
    ds.PixelData = np.clip(stored, 0, STORED_MAX).astype(np.uint16).tobytes()
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out_file, enforce_file_format=True)
    return out_file


def read_rtdose(path: Path):
    """RTDOSE -> (SimpleITK image of dose in Gy, header). Refuses (UserError) dose that is not in Gy."""
    import SimpleITK as sitk

    ds = read_modality(path, "RTDOSE")
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
