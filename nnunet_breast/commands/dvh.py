"""Dosimetric impact of auto-contours: Table 2 parameters for manual vs automatic contours on one plan dose.

  nnunet-breast dvh --ct CT_DIR --rtdose RD.dcm --manual RS.dcm|MASK_DIR --auto RS.dcm|MASK_DIR \\
                    [--side L|R|auto] -o OUT [--case-id ID]

Heart mean / D0.03cc / V5Gy(cc), ipsilateral lung mean / V20Gy(%) / V5Gy(%), contralateral lung mean,
esophagus D0.03cc and spinal cord D1cc, computed on the CT grid with the dose resampled by trilinear
interpolation (method: nnunet_breast.evaluation.dvh; files: nnunet_breast.evaluation.dvh_table). CT_DIR
is a folder holding one CT series, subfolders included (RTSTRUCT, RTDOSE and other files are ignored).
MASK_DIR holds <structure>.nii.gz masks on the CT grid. --side auto takes the side of the high-dose region
relative to the body midline.

Writes OUT/dvh_<case>.json, replaces the case's rows in OUT/dvh_cases.csv (case_id, parameter, manual,
auto, abs_diff) and rewrites OUT/dvh_summary.md and OUT/dvh_summary.csv: per parameter mean ± SD of
manual, auto and |difference| over all cases of dvh_cases.csv. Run once per case into the same OUT.
"""
from __future__ import annotations

import sys
from pathlib import Path

HELP = "dose-volume parameters (Table 2) of manual vs auto contours on one plan dose -> JSON, CSV, summary"


def add_arguments(p):
    p.add_argument("--ct", required=True, type=Path, help="folder with the planning CT series (DICOM)")
    p.add_argument("--rtdose", required=True, type=Path, help="RTDOSE file of the plan (DoseUnits GY)")
    p.add_argument("--manual", required=True, type=Path, help="manual contours: RTSTRUCT file or NIfTI mask folder")
    p.add_argument("--auto", required=True, type=Path, help="automatic contours: RTSTRUCT file or NIfTI mask folder")
    p.add_argument("--side", choices=("L", "R", "auto"), default="auto",
                   help="treated side (ipsilateral lung); auto: from the dose's high-dose region (default)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (shared by all cases)")
    p.add_argument("--case-id", help="case identifier (default: the CT's PatientID)")


def run(args) -> int:
    from nnunet_breast.evaluation.dvh_table import dvh_case

    r = dvh_case(args.ct, args.rtdose, args.manual, args.auto, args.out, args.side, args.case_id)
    for which, names in r.missing.items():
        if names:
            print(f"nnunet-breast dvh: note: {which} contours lack {', '.join(names)} (their parameters are NaN)",
                  file=sys.stderr)
    worst = r.largest_difference
    detail = f"; largest |diff| {worst['parameter']} {worst['abs_diff']:.2f}" if worst else ""
    print(f"{r.case_id} (side {r.side}){detail}; wrote {r.json_path.name}, dvh_cases.csv and dvh_summary.md/.csv "
          f"({r.n_cases} case(s)) in {args.out}")
    return 0
