"""Shared DICOM plumbing: UIDs, file meta, decimal strings a TPS accepts."""
from __future__ import annotations

import datetime as _dt

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RTDOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RTPLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"


def uid(*entropy) -> str:
    """Deterministic UID from entropy sources (same seed, same UIDs) or a fresh one without."""
    return generate_uid(entropy_srcs=[str(e) for e in entropy]) if entropy else generate_uid()


def ds_str(value: float, decimals: int = 3) -> str:
    """A DICOM decimal string of at most 16 characters (some TPSs reject longer ones)."""
    for d in range(decimals, -1, -1):
        s = f"{value:.{d}f}"
        if s in ("-0", "-0.0", "-0.00", "-0.000"):
            s = s[1:]
        if len(s) <= 16:
            return s
    raise ValueError(f"{value} does not fit a 16-character decimal string")


def new_file_dataset(sop_class: str, sop_instance: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def new_rt_dataset(sop_class: str, sop_instance: str, modality: str, study: Dataset, series_uid: str,
                   series_number: int, frame_of_reference_uid: str, position_reference_indicator: str) -> FileDataset:
    """The modules every RT object we write shares: SOP Common, Patient/Study (the ``study`` elements), RT Series
    (OperatorsName type 2, empty unless the caller names someone) and the CT's Frame of Reference."""
    ds = new_file_dataset(sop_class, sop_instance)
    for elem in study:
        ds.add(elem)
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = position_reference_indicator
    return ds


def sop_reference(sop_class: str, sop_instance: str) -> Dataset:
    """One item of a Referenced ... Sequence: which object, of which class."""
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def read_modality(path, modality: str) -> Dataset:
    """A DICOM file of ``modality``, or a one-line UserError saying what it is instead."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from nnunet_breast.errors import UserError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as e:
        raise UserError(f"{path}: not a DICOM file ({e})") from None
    if getattr(ds, "Modality", None) != modality:
        raise UserError(f"{path}: not an {modality} (Modality {getattr(ds, 'Modality', None)!r})")
    return ds


def copy_patient_study(src: Dataset, dst: Dataset) -> None:
    """Carry the patient and study identity over, so the TPS files the object with its CT."""
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
               "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyDescription"):
        if kw in src:
            setattr(dst, kw, getattr(src, kw))


def now() -> tuple[str, str]:
    t = _dt.datetime.now()
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S")
