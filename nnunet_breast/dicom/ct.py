"""CT image series: one file per axial slice, as a scanner or TPS exports it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from nnunet_breast.dicom.common import CT_IMAGE_STORAGE, ds_str, new_file_dataset, uid


@dataclass(frozen=True)
class SliceRef:
    """What an RTSTRUCT or RTDOSE needs to point at one CT slice."""
    sop_instance_uid: str
    z_mm: float


def write_ct_series(hu: np.ndarray, spacing, origin, out_dir: Path, study: Dataset, *, series_uid: str,
                    frame_of_reference_uid: str, intercept: float = -1024.0, entropy=(),
                    extra: dict | None = None, direction=None, patient_position: str = "HFS") -> list[SliceRef]:
    """Write ``hu`` ([k, row, column]) as one CT file per slice; ``direction`` (SimpleITK's 9 numbers, columns:
    the patient directions of +column, +row and +k; None: identity) gives ImageOrientationPatient and each
    slice's ImagePositionPatient (``origin`` + k * ``spacing[2]`` along the slice normal), ``patient_position``
    the PatientPosition written (HFS, HFP, FFS, FFP, HFDL, HFDR ...).

    Files are named by SOP instance UID and instance numbers run from the superior end, so that neither
    file order nor InstanceNumber gives the spatial order: readers must sort along the slice normal.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sx, sy, sz = spacing
    d = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    orientation = [_cosine(v) for v in (*d[:, 0], *d[:, 1])]
    stored = np.clip(np.round(hu - intercept), 0, 4095).astype(np.uint16)
    n = hu.shape[0]
    refs = []
    for k in range(n):
        position = np.asarray(origin, float) + k * sz * d[:, 2]
        z = float(position[2])
        sop = uid(*entropy, "ct", k) if entropy else uid()
        ds = new_file_dataset(CT_IMAGE_STORAGE, sop)
        for elem in study:
            ds.add(elem)
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SeriesNumber = 2
        ds.InstanceNumber = n - k
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.AcquisitionNumber = 1            # one helical acquisition per planning CT
        ds.BodyPartExamined = "CHEST"       # the scan is the thorax (not a paired part: no series Laterality)
        ds.PatientPosition = patient_position
        ds.ImagePositionPatient = [ds_str(v) for v in position]
        ds.ImageOrientationPatient = orientation
        ds.SliceLocation = ds_str(z)
        ds.SliceThickness = ds_str(sz)
        ds.PixelSpacing = [ds_str(sy, 6), ds_str(sx, 6)]   # row spacing (y), column spacing (x)
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept = ds_str(intercept)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.KVP = "120"
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.PixelData = stored[k].tobytes()
        ds.save_as(out_dir / f"CT.{sop}.dcm", enforce_file_format=True)
        refs.append(SliceRef(sop, z))
    return refs


def _cosine(value: float) -> str:
    """A direction cosine as a short decimal string ("1", "0", "-1", "0.707107")."""
    text = f"{round(float(value), 6) + 0.0:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
