"""Write a synthetic :class:`~nnunet_breast.synth.phantom.Case` as a TPS export: CT + RTSTRUCT (+ RTDOSE)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pydicom.dataset import Dataset

from nnunet_breast.dicom.common import uid
from nnunet_breast.dicom.ct import write_ct_series
from nnunet_breast.dicom.rtdose import write_rtdose
from nnunet_breast.dicom.rtstruct import RoiSpec, write_rtstruct
from nnunet_breast.structures import catalog
from nnunet_breast.synth.phantom import SCANNERS, Case, case_rng, structure_spelling


def patient_id(case: Case) -> str:
    return f"SYN-{case.cohort.upper()[:2]}-{case.case_id.split('_')[-1]}"


def write_case(case: Case, out: Path, seed: int) -> Path:
    """Write into ``out/<PatientID>``; built in a temporary folder and moved into place whole."""
    pid = patient_id(case)
    final = Path(out) / pid
    ent = (case.cohort, case.case_id, seed)
    rng = case_rng(f"{case.cohort}/names", int(case.case_id.split("_")[-1]), seed)
    study = Dataset()
    study.PatientName = f"Synthetic^{case.cohort.capitalize()}{case.case_id.split('_')[-1]}"
    study.PatientID = pid
    study.PatientBirthDate = "19700101"
    study.PatientSex = "F"
    study.StudyInstanceUID = uid(*ent, "study")
    study.StudyID = "1"
    study.StudyDate, study.StudyTime = "20260115", "093000"
    study.AccessionNumber = f"ACC{case.case_id.split('_')[-1]}"
    study.ReferringPhysicianName = "Planner^Synthetic"
    study.StudyDescription = "Breast RT planning CT (synthetic)"
    manufacturer, model, intercept = SCANNERS[case.site]
    equipment = {"Manufacturer": manufacturer, "ManufacturerModelName": model, "InstitutionName": case.site,
                 "SeriesDescription": "Thorax 3mm" if case.grid.spacing[2] == 3 else "Thorax 5mm"}
    if case.contrast:
        equipment["ContrastBolusAgent"] = "OMNIPAQUE 350"
        equipment["ContrastBolusRoute"] = "IV"
    frame = uid(*ent, "frame")
    ct_series = uid(*ent, "ct-series")
    rs_series = uid(*ent, "rs-series")
    g = case.grid
    tmp = Path(tempfile.mkdtemp(prefix=f".{pid}.", dir=out))
    try:
        refs = write_ct_series(case.hu, g.spacing, g.origin, tmp, study, series_uid=ct_series,
                               frame_of_reference_uid=frame, intercept=intercept, entropy=ent, extra=equipment)
        rois = []
        for name, mask in case.masks.items():
            s = catalog.BY_NAME[name]
            rois.append(RoiSpec(structure_spelling(name, rng, case.site), mask, s.kind, s.color))
        order = rng.permutation(len(rois))          # TPS exports do not follow our catalog order
        write_rtstruct([rois[i] for i in order], refs, g.spacing, g.origin, study,
                                 tmp / f"RS.{uid(*ent, 'rtstruct')}.dcm", series_uid=rs_series,
                                 ct_series_uid=ct_series, frame_of_reference_uid=frame, label="Breast RT",
                                 entropy=ent, extra={"Manufacturer": "SynthTPS", "InstitutionName": case.site},
                                 date_time=(study.StudyDate, study.StudyTime))
        if case.dose is not None:
            dgrid, dose = case.dose
            write_rtdose(dose, dgrid.spacing, dgrid.origin, study, tmp / f"RD.{uid(*ent, 'rtdose')}.dcm",
                         series_uid=uid(*ent, "rd-series"), frame_of_reference_uid=frame,
                         rtstruct_uid=uid(*ent, "rtstruct"), entropy=ent)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final

