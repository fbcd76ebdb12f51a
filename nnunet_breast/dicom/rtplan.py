"""RT Plan: the prescription and fractionation a plan dose belongs to (no beams).

A TPS export of a plan holds CT + RTSTRUCT + RTPLAN + RTDOSE, chained RD -> RP -> RS -> CT, and a TPS
importing a plan dose looks for its plan. The synthetic export writes this plan so that its dose has the
plan reference the standard requires (DoseSummationType PLAN): the plan's geometry is the patient's (it
references the structure set), its prescription names the target ROI, its fraction group the number of
fractions. It has no beams (NumberOfBeams 0): the synthetic dose is a model of a tangent pair, not a dose
computed from beam data, and the plan says so in RTPlanDescription rather than inventing machine data.
"""
from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from nnunet_breast.dicom.common import RTPLAN_STORAGE, RTSTRUCT_STORAGE, ds_str, new_rt_dataset, now, sop_reference, uid


def write_rtplan(study: Dataset, out_file: Path, *, series_uid: str, frame_of_reference_uid: str, rtstruct_uid: str,
                 label: str, prescription_gy: float, fractions: int, target_roi_number: int | None,
                 target_name: str, description: str = "", entropy=(), position_reference_indicator: str = "",
                 date_time: tuple[str, str] | None = None, extra: dict | None = None) -> str:
    """Write the plan to ``out_file``; returns its SOPInstanceUID (for the dose's ReferencedRTPlanSequence).

    ``target_roi_number`` is the prescription target's ROINumber in the structure set ``rtstruct_uid``
    (``None``: the prescription is to a site named ``target_name``, no ROI). Manufacturer and OperatorsName
    (type 2) are empty unless ``extra`` names them.
    """
    sop = uid(*entropy, "rtplan") if entropy else uid()
    ds = new_rt_dataset(RTPLAN_STORAGE, sop, "RTPLAN", study, series_uid, 5, frame_of_reference_uid,
                        position_reference_indicator)
    date, time = date_time or now()
    ds.Manufacturer = ""
    ds.RTPlanLabel = label[:16]
    ds.RTPlanName = label[:64]
    ds.RTPlanDate, ds.RTPlanTime = date, time
    if description:
        ds.RTPlanDescription = description
    ds.PlanIntent = "CURATIVE"
    ds.RTPlanGeometry = "PATIENT"
    ds.ReferencedStructureSetSequence = Sequence([sop_reference(RTSTRUCT_STORAGE, rtstruct_uid)])

    target = Dataset()
    target.DoseReferenceNumber = 1
    target.DoseReferenceUID = uid(*entropy, "rtplan-dose-reference") if entropy else uid()
    if target_roi_number is None:
        target.DoseReferenceStructureType = "SITE"
    else:
        target.DoseReferenceStructureType = "VOLUME"
        target.ReferencedROINumber = int(target_roi_number)
    target.DoseReferenceDescription = target_name[:64]
    target.DoseReferenceType = "TARGET"
    target.TargetPrescriptionDose = ds_str(prescription_gy)
    ds.DoseReferenceSequence = Sequence([target])

    group = Dataset()
    group.FractionGroupNumber = 1
    referenced = Dataset()
    referenced.ReferencedDoseReferenceNumber = 1
    group.ReferencedDoseReferenceSequence = Sequence([referenced])
    group.NumberOfFractionsPlanned = int(fractions)
    group.NumberOfBeams = 0
    group.NumberOfBrachyApplicationSetups = 0
    ds.FractionGroupSequence = Sequence([group])
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out_file, enforce_file_format=True)
    return sop
