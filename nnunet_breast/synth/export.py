"""Write a synthetic :class:`~nnunet_breast.synth.phantom.Case` as a TPS export: CT + RTSTRUCT (+ RTDOSE)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from nnunet_breast.dicom.common import uid
from nnunet_breast.dicom.ct import write_ct_series
from nnunet_breast.dicom.rtdose import write_rtdose
from nnunet_breast.dicom.rtplan import write_rtplan
from nnunet_breast.dicom.rtstruct import RoiSpec, write_rtstruct
from nnunet_breast.structures import catalog
from nnunet_breast.synth.phantom import SCANNERS, Case, case_rng, scan_geometry, structure_spelling
from nnunet_breast.volumes.orientation import array_from_lps, grid_from_lps

PRESCRIPTION_GY, FRACTIONS = 50.0, 25       # the tangent-pair dose model's (synth.cohort.tangential_dose)
TPS = {"Manufacturer": "SynthTPS", "OperatorsName": "Dosimetrist^Synthetic"}


def patient_id(case: Case) -> str:
    return f"SYN-{case.cohort.upper()[:2]}-{case.case_id.split('_')[-1]}"


def scan_layout(case: Case):
    """The case as its scan stores it (``case.meta["orientation"]``, head-first supine by default): (hu, masks,
    spacing, origin, direction or None for the identity, PatientPosition). The same voxels, the same patient
    positions; only their order, the grid's origin corner and the direction change."""
    position, d = scan_geometry(case.meta.get("orientation", "HFS"))
    g = case.grid
    if np.array_equal(d, np.eye(3)):
        return case.hu, case.masks, g.spacing, g.origin, None, position
    spacing, origin = grid_from_lps(g.shape[::-1], g.spacing, g.origin, d.ravel())
    relayout = lambda a: np.ascontiguousarray(array_from_lps(a, d.ravel()))  # noqa: E731
    return (relayout(case.hu), {n: relayout(m) for n, m in case.masks.items()}, tuple(spacing), tuple(origin),
            tuple(d.ravel()), position)


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
    hu, masks, spacing, origin, direction, position = scan_layout(case)
    tmp = Path(tempfile.mkdtemp(prefix=f".{pid}.", dir=out))
    try:
        refs = write_ct_series(hu, spacing, origin, tmp, study, series_uid=ct_series,
                               frame_of_reference_uid=frame, intercept=intercept, entropy=ent, extra=equipment,
                               direction=direction, patient_position=position)
        rois = []
        for name, mask in masks.items():
            s = catalog.BY_NAME[name]
            rois.append(RoiSpec(structure_spelling(name, rng, case.site), mask, s.kind, s.color))
        order = rng.permutation(len(rois))          # TPS exports do not follow our catalog order
        tps = {**TPS, "InstitutionName": case.site}
        write_rtstruct([rois[i] for i in order], refs, spacing, origin, study,
                                 tmp / f"RS.{uid(*ent, 'rtstruct')}.dcm", series_uid=rs_series,
                                 ct_series_uid=ct_series, frame_of_reference_uid=frame, label="Breast RT",
                                 entropy=ent, extra=tps, date_time=(study.StudyDate, study.StudyTime),
                                 direction=direction)
        if case.dose is not None:
            target = f"CTVp_breast_{case.side}"
            names = list(case.masks)
            number = next((k + 1 for k, i in enumerate(order) if names[i] == target), None)   # ROINumber as written
            plan = write_rtplan(study, tmp / f"RP.{uid(*ent, 'rtplan')}.dcm", series_uid=uid(*ent, "rp-series"),
                                frame_of_reference_uid=frame, rtstruct_uid=uid(*ent, "rtstruct"), label="Breast tang",
                                prescription_gy=PRESCRIPTION_GY, fractions=FRACTIONS, target_roi_number=number,
                                target_name=target, entropy=ent, extra=tps,
                                date_time=(study.StudyDate, study.StudyTime),
                                description="Synthetic: prescription and fractionation only, no beams (model dose)")
            dgrid, dose = case.dose
            write_rtdose(dose, dgrid.spacing, dgrid.origin, study, tmp / f"RD.{uid(*ent, 'rtdose')}.dcm",
                         series_uid=uid(*ent, "rd-series"), frame_of_reference_uid=frame, plan_uid=plan,
                         entropy=ent, extra=tps)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final

