"""``nnunet-breast dvh``: one case's Table 2 parameters, written into a folder shared by every case.

:func:`dvh_case` reads the planning CT (the converters' discovery and reader), the plan's RTDOSE and the manual
and automatic contours (RTSTRUCT or NIfTI masks), computes the parameters with :mod:`nnunet_breast.evaluation.dvh`
and writes, atomically, in ``out_dir``:

* ``dvh_<case>.json``: the case's parameters, side, structure volumes, inputs and method;
* ``dvh_cases.csv``: one row per case x parameter (``case_id, parameter, manual, auto, abs_diff``; NaN as an
  empty cell); the case's rows are replaced, other cases' rows kept, so cases are added one run at a time;
* ``dvh_summary.md`` / ``dvh_summary.csv``: per parameter mean ± SD of manual, auto and |difference| over every
  case of ``dvh_cases.csv`` (:func:`~nnunet_breast.evaluation.dvh.summarise`).

Bad input raises :class:`~nnunet_breast.errors.UserError` before anything is written.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_breast.errors import UserError
from nnunet_breast.evaluation import dvh
from nnunet_breast.util.files import atomic_write_csv, atomic_write_text

CASE_COLUMNS = ("case_id", "parameter", "manual", "auto", "abs_diff")
SUMMARY_COLUMNS = ("parameter", "label", "n", "manual_mean", "manual_sd", "auto_mean", "auto_sd",
                   "abs_diff_mean", "abs_diff_sd")


@dataclass
class DvhCaseResult:
    case_id: str
    side: str                              # L or R
    side_source: str                       # "given" or "dose"
    rows: list[dict]                       # this case: parameter, manual, auto, abs_diff (NaN where missing)
    missing: dict[str, list[str]]          # "manual"/"auto" -> DVH structures absent from that contour set
    json_path: Path
    n_cases: int                           # cases in dvh_cases.csv after this one

    @property
    def largest_difference(self) -> dict | None:
        """The row with the largest finite |auto - manual|, or None."""
        return max((r for r in self.rows if math.isfinite(r["abs_diff"])), key=lambda r: r["abs_diff"], default=None)


def ct_files(folder: Path) -> list[Path]:
    """The slices of the one CT series under ``folder`` (RTSTRUCT, RTDOSE and other files are ignored)."""
    from nnunet_breast.dataset_conversion.discovery import find_ct_series

    folder = Path(folder)
    series = find_ct_series(folder)
    if len(series) > 1:
        raise UserError(f"{folder} holds {len(series)} CT series ({', '.join(s.series_uid for s in series)}); "
                        f"give the folder of the planning CT alone")
    return series[0].files


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


def _other_cases(path: Path, case_id: str) -> list[dict]:
    """The rows of ``path`` (a dvh_cases.csv, or nothing) that belong to other cases than ``case_id``."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(CASE_COLUMNS) <= set(reader.fieldnames):
            raise UserError(f"{path} is not a dvh_cases.csv (columns {', '.join(CASE_COLUMNS)})")
        return [r for r in reader if r["case_id"] != case_id]


def update_cases_csv(path: Path, case_id: str, rows: list[dict]) -> list[dict]:
    """Replace ``case_id``'s rows of ``path`` (created if absent) by ``rows``; return all rows, parsed."""
    kept = _other_cases(path, case_id)
    new = [{"case_id": case_id, "parameter": r["parameter"], "manual": _num(r["manual"]), "auto": _num(r["auto"]),
            "abs_diff": _num(r["abs_diff"])} for r in rows]
    atomic_write_csv(path, list(CASE_COLUMNS), kept + new)
    return [{**r, "manual": _parse(r["manual"]), "auto": _parse(r["auto"]), "abs_diff": _parse(r["abs_diff"])}
            for r in kept + new]


def dvh_case(ct_dir: Path, rtdose: Path, manual: Path, auto: Path, out_dir: Path, side: str = "auto",
             case_id: str | None = None) -> DvhCaseResult:
    """One case's manual-vs-auto parameters on its plan dose, written into ``out_dir`` (module docstring).

    ``side`` L or R, or "auto" for the side of the high-dose region; ``case_id`` defaults to the CT's
    PatientID (else the folder name).
    """
    import SimpleITK as sitk

    from nnunet_breast.dicom.ct_reader import read_ct_series

    ct_dir, rtdose, out_dir = Path(ct_dir), Path(rtdose), Path(out_dir)
    contours = {"manual": Path(manual), "auto": Path(auto)}
    if side not in ("L", "R", "auto"):
        raise UserError(f"side must be L, R or auto, got {side!r}")
    if not ct_dir.is_dir():
        raise UserError(f"--ct {ct_dir} is not a folder")
    if not rtdose.is_file():
        raise UserError(f"--rtdose {rtdose} not found")
    for which, path in contours.items():
        if not path.exists():
            raise UserError(f"--{which} {path} not found")
    ct = read_ct_series(ct_files(ct_dir))
    ct_frame = str(getattr(ct.header, "FrameOfReferenceUID", ""))
    dose, dose_header = dvh.load_dose(rtdose, ct.image, ct_frame)
    masks = {which: dvh.load_masks(path, ct.image, ct_frame) for which, path in contours.items()}
    given = side != "auto"
    if not given:
        side = dvh.infer_side(dose, sitk.GetArrayViewFromImage(ct.image), ct.image)

    # a structure a contour set lacks is reported, not refused: its parameters are NaN (a finding)
    missing = {which: [s for s in dvh.DVH_STRUCTURES if s not in masks[which]] for which in contours}
    spacing = ct.image.GetSpacing()
    rows = dvh.compare_manual_auto(dose, masks["manual"], masks["auto"], spacing, side)
    case_id = case_id or str(getattr(ct.header, "PatientID", "") or "") or ct_dir.name
    _other_cases(out_dir / "dvh_cases.csv", case_id)        # refuse a foreign table before writing anything
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "case_id": case_id, "side": side, "side_source": "given" if given else "dose",
        "ct": str(ct_dir), "rtdose": str(rtdose), "manual": str(contours["manual"]), "auto": str(contours["auto"]),
        "frame_of_reference_uid": ct_frame,
        "dose_summation_type": str(getattr(dose_header, "DoseSummationType", "") or ""),
        "dose_max_gy": float(np.max(dose)) if dose.size else 0.0,
        "grid": {"size_xyz": list(ct.image.GetSize()), "spacing_mm": list(spacing)},
        "method": {"dose_resampling": "trilinear onto the CT grid, 0 Gy outside the dose grid",
                   "mask": "voxel centre inside contour",
                   "d_cc": "min dose of the hottest x cc (voxel granularity); 0 Gy for a structure smaller than "
                           "x cc (as dicompyler-core)",
                   "v_gy": "volume with dose >= threshold; heart in cc, lung in % of the structure"},
        "missing_structures": missing,
        "volumes_cc": {which: dvh.structure_volumes_cc(masks[which], spacing) for which in contours},
        "parameters": [{k: (_json_num(v) if k != "parameter" else v) for k, v in r.items()} for r in rows],
    }
    json_path = out_dir / f"dvh_{_safe_id(case_id)}.json"
    atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
    all_rows = update_cases_csv(out_dir / "dvh_cases.csv", case_id, rows)
    table = dvh.summarise(all_rows)
    atomic_write_text(out_dir / "dvh_summary.md", dvh.summary_markdown(table))
    atomic_write_csv(out_dir / "dvh_summary.csv", list(SUMMARY_COLUMNS),
                     [{k: (_num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in table])
    return DvhCaseResult(case_id, side, record["side_source"], rows, missing, json_path,
                         len({r["case_id"] for r in all_rows}))
