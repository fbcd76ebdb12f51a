"""Dosimetric impact of auto-contours: Table 2 parameters for manual vs automatic contours on one plan dose.

  nnunet-breast dvh --ct CT_DIR --rtdose RD.dcm --manual RS.dcm|MASK_DIR --auto RS.dcm|MASK_DIR \\
                    [--side L|R|auto] -o OUT [--case-id ID]

Heart mean / D0.03cc / V5Gy(cc), ipsilateral lung mean / V20Gy(%) / V5Gy(%), contralateral lung mean,
esophagus D0.03cc and spinal cord D1cc, computed on the CT grid with the dose resampled by trilinear
interpolation (method: nnunet_breast.evaluation.dvh). CT_DIR is a folder holding the CT slices (other
DICOM files there are ignored). MASK_DIR holds <structure>.nii.gz masks on the CT grid. --side auto takes
the side of the high-dose region relative to the body midline.

Writes OUT/dvh_<case>.json, replaces the case's rows in OUT/dvh_cases.csv (case_id, parameter, manual,
auto, abs_diff) and rewrites OUT/dvh_summary.md and OUT/dvh_summary.csv: per parameter mean ± SD of
manual, auto and |difference| over all cases of dvh_cases.csv. Run once per case into the same OUT.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

from nnunet_breast.cli import UserError

HELP = "dose-volume parameters (Table 2) of manual vs auto contours on one plan dose -> JSON, CSV, summary"

CASE_COLUMNS = ("case_id", "parameter", "manual", "auto", "abs_diff")
SUMMARY_COLUMNS = ("parameter", "label", "n", "manual_mean", "manual_sd", "auto_mean", "auto_sd",
                   "abs_diff_mean", "abs_diff_sd")


def add_arguments(p):
    p.add_argument("--ct", required=True, type=Path, help="folder with the planning CT series (DICOM)")
    p.add_argument("--rtdose", required=True, type=Path, help="RTDOSE file of the plan (DoseUnits GY)")
    p.add_argument("--manual", required=True, type=Path, help="manual contours: RTSTRUCT file or NIfTI mask folder")
    p.add_argument("--auto", required=True, type=Path, help="automatic contours: RTSTRUCT file or NIfTI mask folder")
    p.add_argument("--side", choices=("L", "R", "auto"), default="auto",
                   help="treated side (ipsilateral lung); auto: from the dose's high-dose region (default)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (shared by all cases)")
    p.add_argument("--case-id", help="case identifier (default: the CT's PatientID)")


def ct_files(folder: Path) -> list[Path]:
    """The files of ``folder`` whose DICOM Modality is CT (RTSTRUCT/RTDOSE/others are skipped)."""
    import pydicom

    found = []
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # not DICOM (notes, thumbnails ...): not a CT slice
            continue
        if str(getattr(ds, "Modality", "")) == "CT":
            found.append(f)
    return found


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"


def _num(x) -> str:
    """CSV cell: repr-precision float, empty for NaN (spreadsheets read it as missing)."""
    x = float(x)
    return repr(x) if math.isfinite(x) else ""


def _parse(cell: str) -> float:
    return float(cell) if cell not in ("", None) else math.nan


def _json_num(x: float):
    return x if math.isfinite(x) else None


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file + rename so an interrupted run never leaves a half-written table."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _csv_text(columns, rows) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def update_cases_csv(path: Path, case_id: str, rows: list[dict]) -> list[dict]:
    """Replace ``case_id``'s rows of ``path`` (created if absent) by ``rows``; return all rows, parsed."""
    kept = []
    if path.is_file():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(CASE_COLUMNS) <= set(reader.fieldnames):
                raise UserError(f"{path} is not a dvh_cases.csv (columns {', '.join(CASE_COLUMNS)})")
            kept = [r for r in reader if r["case_id"] != case_id]
    new = [{"case_id": case_id, "parameter": r["parameter"], "manual": _num(r["manual"]), "auto": _num(r["auto"]),
            "abs_diff": _num(r["abs_diff"])} for r in rows]
    _atomic_write(path, _csv_text(CASE_COLUMNS, kept + new))
    return [{**r, "manual": _parse(r["manual"]), "auto": _parse(r["auto"]), "abs_diff": _parse(r["abs_diff"])}
            for r in kept + new]


def run(args) -> int:
    import numpy as np
    import SimpleITK as sitk

    from nnunet_breast.dicom.ct_reader import read_ct_series
    from nnunet_breast.evaluation import dvh

    if not args.ct.is_dir():
        raise UserError(f"--ct {args.ct} is not a folder")
    if not args.rtdose.is_file():
        raise UserError(f"--rtdose {args.rtdose} not found")
    for name in ("manual", "auto"):
        if not getattr(args, name).exists():
            raise UserError(f"--{name} {getattr(args, name)} not found")
    files = ct_files(args.ct)
    if not files:
        raise UserError(f"no CT slices (DICOM Modality CT) in {args.ct}")
    try:
        ct = read_ct_series(files)
        ct_frame = str(getattr(ct.header, "FrameOfReferenceUID", ""))
        dose, dose_header = dvh.load_dose(args.rtdose, ct.image, ct_frame)
        masks = {which: dvh.load_masks(getattr(args, which), ct.image, ct_frame) for which in ("manual", "auto")}
        side = args.side if args.side != "auto" else \
            dvh.infer_side(dose, sitk.GetArrayViewFromImage(ct.image), ct.image)
    except ValueError as e:   # CTSeriesError, ContourError and the dvh refusals are ValueErrors
        raise UserError(str(e)) from None

    missing = {which: [s for s in dvh.DVH_STRUCTURES if s not in masks[which]] for which in ("manual", "auto")}
    for which, names in missing.items():
        if names:   # reported, not refused: a structure the model did not produce is a finding (NaN rows)
            print(f"nnunet-breast dvh: note: {which} contours lack {', '.join(names)} (their parameters are NaN)",
                  file=sys.stderr)
    spacing = ct.image.GetSpacing()
    rows = dvh.compare_manual_auto(dose, masks["manual"], masks["auto"], spacing, side)
    case_id = args.case_id or str(getattr(ct.header, "PatientID", "") or "") or args.ct.name
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "case_id": case_id, "side": side, "side_source": "given" if args.side != "auto" else "dose",
        "ct": str(args.ct), "rtdose": str(args.rtdose), "manual": str(args.manual), "auto": str(args.auto),
        "frame_of_reference_uid": ct_frame,
        "dose_summation_type": str(getattr(dose_header, "DoseSummationType", "") or ""),
        "dose_max_gy": float(np.max(dose)) if dose.size else 0.0,
        "grid": {"size_xyz": list(ct.image.GetSize()), "spacing_mm": list(spacing)},
        "method": {"dose_resampling": "trilinear onto the CT grid, 0 Gy outside the dose grid",
                   "mask": "voxel centre inside contour", "d_cc": "min dose of the hottest x cc (voxel granularity)",
                   "v_gy": "volume with dose >= threshold; heart in cc, lung in % of the structure"},
        "missing_structures": missing,
        "volumes_cc": {which: dvh.structure_volumes_cc(masks[which], spacing) for which in ("manual", "auto")},
        "parameters": [{k: (_json_num(v) if k != "parameter" else v) for k, v in r.items()} for r in rows],
    }
    json_path = out / f"dvh_{_safe_id(case_id)}.json"
    _atomic_write(json_path, json.dumps(record, indent=2) + "\n")
    all_rows = update_cases_csv(out / "dvh_cases.csv", case_id, rows)
    table = dvh.summarise(all_rows)
    _atomic_write(out / "dvh_summary.md", dvh.summary_markdown(table))
    _atomic_write(out / "dvh_summary.csv", _csv_text(SUMMARY_COLUMNS, [
        {k: (_num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in table]))
    n_cases = len({r["case_id"] for r in all_rows})
    worst = max((r for r in rows if math.isfinite(r["abs_diff"])), key=lambda r: r["abs_diff"], default=None)
    detail = f"; largest |diff| {worst['parameter']} {worst['abs_diff']:.2f}" if worst else ""
    print(f"{case_id} (side {side}){detail}; wrote {json_path.name}, dvh_cases.csv and dvh_summary.md/.csv "
          f"({n_cases} case(s)) in {out}")
    return 0
