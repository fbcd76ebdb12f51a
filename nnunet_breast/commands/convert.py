"""Convert a TPS export (DICOM CT + RTSTRUCT [+ RTDOSE], any folder layout) into an nnU-Net raw dataset.

  nnunet-breast convert breast --input EXPORT --dataset-id 501 [--name BreastRT] [--mapping map.json] [-np 2]
  nnunet-breast convert clips  --input EXPORT --dataset-id 502 [--name BreastClips]

--input may also be a NIfTI folder: <case>/image.nii.gz and <case>/masks/<ROI name>.nii.gz.
Writes $nnUNet_raw/DatasetXXX_Name/{imagesTr,labelsTr,dataset.json,cohort.csv,conversion_report.md/.json}
(clips: also bodyTr/). The input is never written to. Reruns skip converted cases (--redo replaces them).
Exit code 0 when every case converted, 1 when some failed (see the report), 2 on a refused run.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from nnunet_breast.errors import UserError

HELP = "DICOM CT + RTSTRUCT (or NIfTI) -> nnU-Net raw dataset with cohort.csv and a report"
DEFAULT_NAMES = {"breast": "BreastRT", "clips": "BreastClips"}


def add_arguments(p):
    p.add_argument("cohort", choices=("breast", "clips"))
    p.add_argument("--input", "-i", required=True, type=Path, help="TPS export folder (read only)")
    p.add_argument("--dataset-id", "-d", required=True, type=int)
    p.add_argument("--name", help="dataset name (default BreastRT / BreastClips)")
    p.add_argument("--mapping", type=Path, help='JSON {"ROI name as written": "catalog name"}')
    p.add_argument("--metadata", type=Path,
                   help="CSV with patient_id or case_id and any of contrast (0/1), site, side (L/R) overriding the DICOM")
    p.add_argument("-np", "--num-processes", type=int, default=int(os.environ.get("nnUNet_def_n_proc", 2)))
    p.add_argument("--point-radius-mm", type=float, default=2.0, help="sphere radius for POINT ROIs (clips)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")
    p.add_argument("--redo", action="store_true", help="convert again cases that are already in the dataset")


def run(args) -> int:
    from nnunet_breast.dataset_conversion.dataset import ConvertOptions, convert
    from nnunet_breast.env import nnunet_folder

    raw = nnunet_folder("nnUNet_raw")
    mapping = _read_json(args.mapping) if args.mapping else None
    opts = ConvertOptions(args.cohort, args.input, args.dataset_id, args.name or DEFAULT_NAMES[args.cohort],
                          raw, mapping, _read_metadata(args.metadata) if args.metadata else {},
                          args.num_processes, args.overwrite, args.redo, args.point_radius_mm)
    report = convert(opts)
    skipped = sum(r["status"] == "skipped" for r in report.cases.values())
    print(f"{report.dataset_dir}: converted {len(report.converted)}, skipped {skipped}, failed {len(report.failed)}")
    if report.unused_rtstructs or report.ct_without_rtstruct:
        print(f"  not used: {len(report.unused_rtstructs)} RTSTRUCT(s) without their CT, "
              f"{len(report.ct_without_rtstruct)} CT series without an RTSTRUCT (reasons in the report)")
    for cid in report.failed:
        print(f"  failed {cid}: {report.cases[cid]['reason']}")
    print(f"report: {report.dataset_dir / 'conversion_report.md'}")
    return 1 if report.failed else 0


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read mapping {path}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"mapping {path} must be a JSON object of ROI name -> catalog name")
    return data


def _read_metadata(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    key = "case_id" if rows and "case_id" in rows[0] else "patient_id"
    if rows and key not in rows[0]:
        raise UserError(f"{path}: needs a patient_id or case_id column")
    return {r[key]: r for r in rows}
