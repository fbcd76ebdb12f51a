"""Evaluate nnU-Net outputs against converted references: ``metrics.csv`` + ``summary.json``.

References are the dataset's label maps (our overlap encoding). Predictions are read per case from,
in order of preference, ``<case>.npz`` (nnU-Net ``--save_probabilities``: per-region probabilities,
overlaps kept) or ``<case>.nii.gz`` (nnU-Net's exported label map: for region training nnU-Net writes
the regions in order, so a voxel in two structures keeps the later one; decoded with the same table).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_breast.evaluation.clip_detection import detect_clips
from nnunet_breast.evaluation.metrics import StructureMetrics, evaluate_case, summarize
from nnunet_breast.util.files import atomic_write_csv, atomic_write_text
from nnunet_breast.util.parallel import map_cases
from nnunet_breast.structures.regions import OverlapEncoding

METRIC_COLUMNS = ["case_id", "structure", "dsc", "hd95", "hd", "assd", "asd_ref_to_pred", "asd_pred_to_ref",
                  "surface_dice", "volume_ref_cc", "volume_pred_cc", "volume_diff_cc", "empty"]
CLIP_COLUMNS = ["case_id", "clips_true", "clips_missed", "clips_false", "centroid_error_mm_mean"]


def load_dataset_encoding(dataset_json: Path) -> tuple[OverlapEncoding, str]:
    info = json.loads(Path(dataset_json).read_text())
    ours = info.get("nnunet_breast")
    if not ours:
        raise ValueError(f"{dataset_json} was not written by nnunet-breast convert (no 'nnunet_breast' entry)")
    return OverlapEncoding.from_json(ours["encoding"]), ours["cohort"]


def read_prediction(pred_dir: Path, case_id: str, encoding: OverlapEncoding) -> dict[str, np.ndarray]:
    npz = pred_dir / f"{case_id}.npz"
    if npz.is_file():
        return encoding.decode_regions(np.load(npz)["probabilities"])
    nii = pred_dir / f"{case_id}.nii.gz"
    if nii.is_file():
        return encoding.decode(sitk.GetArrayFromImage(sitk.ReadImage(str(nii))).astype(np.int64))
    raise FileNotFoundError(f"no prediction for {case_id} in {pred_dir} (<case>.npz or <case>.nii.gz)")


def evaluate_one(case_id: str, ref_dir: Path, pred_dir: Path, encoding: OverlapEncoding, cohort: str,
                 tolerance_mm: float) -> tuple[list[dict], dict | None]:
    ref_img = sitk.ReadImage(str(ref_dir / f"{case_id}.nii.gz"))
    ref = encoding.decode(sitk.GetArrayFromImage(ref_img).astype(np.int64))
    pred = read_prediction(pred_dir, case_id, encoding)
    shape = next(iter(ref.values())).shape
    if next(iter(pred.values())).shape != shape:
        raise ValueError(f"{case_id}: prediction shape {next(iter(pred.values())).shape} != reference {shape}")
    spacing_zyx = ref_img.GetSpacing()[::-1]
    results = evaluate_case(ref, pred, spacing_zyx, structures=list(encoding.structures), tolerance_mm=tolerance_mm)
    rows = [{"case_id": case_id, "structure": name, **m.as_dict()} for name, m in results.items()]
    clips = None
    if cohort == "clips":
        det = detect_clips(ref["Clips"], pred["Clips"], spacing_zyx)
        errors = det.centroid_errors_mm
        t, missed, false = det.counts
        clips = {"case_id": case_id, "clips_true": t, "clips_missed": missed, "clips_false": false,
                 "centroid_error_mm_mean": float(np.mean(errors)) if errors else math.nan}
    return rows, clips


def evaluate_folder(ref_dir: Path, pred_dir: Path, dataset_json: Path, out_dir: Path, num_processes: int = 1,
                    tolerance_mm: float = 2.0, progress: bool = True) -> dict:
    """Evaluate every reference case that has a prediction; writes metrics.csv and summary.json."""
    encoding, cohort = load_dataset_encoding(dataset_json)
    cases = sorted(p.name[: -len(".nii.gz")] for p in Path(ref_dir).glob("*.nii.gz"))
    cases = [c for c in cases if (pred_dir / f"{c}.npz").is_file() or (pred_dir / f"{c}.nii.gz").is_file()]
    if not cases:
        raise ValueError(f"no case of {ref_dir} has a prediction in {pred_dir}")
    args = [(c, Path(ref_dir), Path(pred_dir), encoding, cohort, tolerance_mm) for c in cases]
    outputs = map_cases(evaluate_one, args, num_processes, desc="evaluate", progress=progress)
    rows = [r for case_rows, _ in outputs for r in case_rows]
    clips = [c for _, c in outputs if c is not None]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(out_dir / "metrics.csv", METRIC_COLUMNS, rows)
    summary = {"reference": str(ref_dir), "prediction": str(pred_dir), "n_cases": len(cases),
               "surface_dice_tolerance_mm": tolerance_mm,
               "per_structure": {s: summarize(_as_metrics([r for r in rows if r["structure"] == s]))
                                 for s in encoding.structures}}
    summary["mean_dsc"] = float(np.nanmean([v["dsc_mean"] for v in summary["per_structure"].values()]))
    if clips:
        atomic_write_csv(out_dir / "clip_detection.csv", CLIP_COLUMNS, clips)
        summary["clips"] = {k: int(sum(c[k] for c in clips)) for k in ("clips_true", "clips_missed", "clips_false")}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=_json_nan))
    return summary


def _as_metrics(rows: list[dict]) -> list[StructureMetrics]:
    fields = [c for c in METRIC_COLUMNS if c not in ("case_id", "structure")]
    return [StructureMetrics(**{f: r[f] for f in fields}) for r in rows]


def _json_nan(v):
    return None if isinstance(v, float) and math.isnan(v) else str(v)
