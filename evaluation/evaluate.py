"""Evaluate nnU-Net outputs against converted references: ``metrics.csv`` + ``summary.json``.

References are the dataset's label maps (our overlap encoding). Predictions are read per case from,
in order of preference, ``<case>/masks/<structure>.nii.gz`` (``nnunet-breast predict``'s output; a missing
mask is empty), ``<case>.npz`` (nnU-Net ``--save_probabilities``: per-region probabilities, overlaps kept)
or ``<case>.nii.gz`` (nnU-Net's exported label map: for region training nnU-Net writes
the regions in order, so a voxel in two structures keeps the later one; decoded with the same table).

A structure absent from a case's reference (not contoured in that case, e.g. the untreated side of a clinical
export) is not evaluated there: its ``metrics.csv`` row has ``evaluated`` False and NaN scores (volumes as
measured), and ``summary.json`` leaves it out of every statistic and counts it in ``n_not_evaluated`` per
structure (see :data:`~nnunet_breast.evaluation.metrics.EMPTY_POLICY`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_breast.errors import UserError
from nnunet_breast.evaluation.clip_scores import CLIP_SCORE_COLUMNS, ClipScore, score_clip_mask, summarise_clip_scores
from nnunet_breast.evaluation.metrics import StructureMetrics, evaluate_case, summarize
from nnunet_breast.structures.regions import OverlapEncoding
from nnunet_breast.util.files import atomic_write_csv, atomic_write_text
from nnunet_breast.util.parallel import map_cases

METRIC_COLUMNS = ["case_id", "structure", "dsc", "hd95", "hd", "assd", "asd_ref_to_pred", "asd_pred_to_ref",
                  "surface_dice", "volume_ref_cc", "volume_pred_cc", "volume_diff_cc", "empty", "evaluated"]
NOT_EVALUATED_NOTE = ("a structure whose reference is empty in a case (not contoured there) is not evaluated in that "
                      "case: NaN scores, left out of every statistic, counted in n_not_evaluated")


def load_dataset_encoding(dataset_json: Path) -> tuple[OverlapEncoding, str]:
    info = json.loads(Path(dataset_json).read_text())
    ours = info.get("nnunet_breast")
    if not ours:
        raise UserError(f"{dataset_json} was not written by nnunet-breast convert (no 'nnunet_breast' entry)")
    return OverlapEncoding.from_json(ours["encoding"]), ours["cohort"]


def _on_reference_grid(image: sitk.Image, reference: sitk.Image, case_id: str) -> np.ndarray:
    """The prediction's voxels in the reference's order. A mask predicted on the CT grid of a prone, feet-first or
    decubitus DICOM scan holds the voxels of the converted label (written in the LPS layout) in another order;
    a grid that is not the same voxels is refused rather than compared index by index."""
    from nnunet_breast.volumes.orientation import array_from_lps, to_lps

    if np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4):
        return sitk.GetArrayFromImage(image)
    a, b = to_lps(image), to_lps(reference)
    if a.GetSize() != b.GetSize() or not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-2) \
            or not np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4):
        raise UserError(f"{case_id}: the prediction's grid is not the reference's (another CT or resampled)")
    return np.ascontiguousarray(array_from_lps(sitk.GetArrayFromImage(a), reference.GetDirection()))


def read_prediction(pred_dir: Path, case_id: str, encoding: OverlapEncoding,
                    reference: sitk.Image | None = None) -> dict[str, np.ndarray]:
    """A case's prediction: nnU-Net's npz, a label map NIfTI, or ``nnunet-breast predict``'s ``<case>/masks/``
    (one mask per structure on the CT grid), each brought onto ``reference``'s voxel order."""
    masks_dir = pred_dir / case_id / "masks"
    if masks_dir.is_dir():
        files = {n: masks_dir / f"{n}.nii.gz" for n in encoding.structures if (masks_dir / f"{n}.nii.gz").is_file()}
        if not files:
            raise UserError(f"{masks_dir} holds no mask of this dataset's structures")
        out = {}
        for name, f in files.items():
            image = sitk.ReadImage(str(f))
            out[name] = (sitk.GetArrayFromImage(image) if reference is None
                         else _on_reference_grid(image, reference, case_id)) > 0
        return out
    npz = pred_dir / f"{case_id}.npz"
    if npz.is_file():
        return encoding.decode_regions(np.load(npz)["probabilities"])
    nii = pred_dir / f"{case_id}.nii.gz"
    if nii.is_file():
        image = sitk.ReadImage(str(nii))
        arr = sitk.GetArrayFromImage(image) if reference is None else _on_reference_grid(image, reference, case_id)
        return encoding.decode(arr.astype(np.int64))
    raise UserError(f"no prediction for {case_id} in {pred_dir} (<case>.npz or <case>.nii.gz)")


def evaluate_one(case_id: str, ref_dir: Path, pred_dir: Path, encoding: OverlapEncoding, cohort: str,
                 tolerance_mm: float) -> tuple[list[dict], ClipScore | None]:
    ref_img = sitk.ReadImage(str(ref_dir / f"{case_id}.nii.gz"))
    ref = encoding.decode(sitk.GetArrayFromImage(ref_img).astype(np.int64))
    pred = read_prediction(pred_dir, case_id, encoding, ref_img)
    shape = next(iter(ref.values())).shape
    pred = {n: pred.get(n, np.zeros(shape, bool)) for n in encoding.structures}     # a missing mask is empty
    if next(iter(pred.values())).shape != shape:
        raise UserError(f"{case_id}: prediction shape {next(iter(pred.values())).shape} != reference {shape}")
    spacing_zyx = ref_img.GetSpacing()[::-1]
    results = evaluate_case(ref, pred, spacing_zyx, structures=list(encoding.structures), tolerance_mm=tolerance_mm)
    rows = [{"case_id": case_id, "structure": name, **m.as_dict()} for name, m in results.items()]
    clips = None
    if cohort == "clips":
        clips = score_clip_mask(case_id, ref["Clips"], pred["Clips"], spacing_zyx, metrics=results["Clips"])
    return rows, clips


def evaluate_folder(ref_dir: Path, pred_dir: Path, dataset_json: Path, out_dir: Path, num_processes: int = 1,
                    tolerance_mm: float = 2.0, progress: bool = True) -> dict:
    """Evaluate every reference case that has a prediction; writes metrics.csv and summary.json.

    ``summary.json``: per structure :func:`~nnunet_breast.evaluation.metrics.summarize` over the cases whose
    reference has it (``n_evaluated``; ``n_not_evaluated`` left out), ``mean_dsc`` over the structures evaluated
    at least once, ``n_not_evaluated`` in all; NaN is written as ``null``.
    """
    for folder in (ref_dir, pred_dir):
        if not Path(folder).is_dir():
            raise UserError(f"{folder} is not a folder")
    encoding, cohort = load_dataset_encoding(dataset_json)
    cases = sorted(p.name[: -len(".nii.gz")] for p in Path(ref_dir).glob("*.nii.gz"))
    cases = [c for c in cases if (pred_dir / f"{c}.npz").is_file() or (pred_dir / f"{c}.nii.gz").is_file()
             or (pred_dir / c / "masks").is_dir()]
    if not cases:
        raise UserError(f"no case of {ref_dir} has a prediction in {pred_dir}")
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
    dsc_means = [v["dsc_mean"] for v in summary["per_structure"].values() if math.isfinite(v["dsc_mean"])]
    summary["mean_dsc"] = float(np.mean(dsc_means)) if dsc_means else math.nan
    summary["n_not_evaluated"] = sum(v["n_not_evaluated"] for v in summary["per_structure"].values())
    summary["not_evaluated"] = NOT_EVALUATED_NOTE
    if clips:
        atomic_write_csv(out_dir / "clip_detection.csv", CLIP_SCORE_COLUMNS, [c.as_dict() for c in clips])
        summary["clips"] = summarise_clip_scores(clips)
    atomic_write_text(out_dir / "summary.json", json.dumps(_nan_to_none(summary), indent=2, allow_nan=False))
    return summary


def _as_metrics(rows: list[dict]) -> list[StructureMetrics]:
    fields = [c for c in METRIC_COLUMNS if c not in ("case_id", "structure", "evaluated")]
    return [StructureMetrics(**{f: r[f] for f in fields}) for r in rows]


def _nan_to_none(v):
    """NaN (and inf) -> None, recursively: summary.json is strict JSON, null where there is no value."""
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_nan_to_none(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
