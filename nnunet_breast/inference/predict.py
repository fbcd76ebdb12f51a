"""From planning CTs to TPS-ready contours: the breast model, the clip model, or both, on new cases.

Per case ``OUT/<case>/``:

* ``masks/<Structure>.nii.gz``: one 0/1 mask per catalog structure on the CT grid (overlapping structures
  decoded from nnU-Net's per-region probabilities, so overlaps survive; islands under ``min_island_cc``
  dropped, the largest part always kept), ``masks/Clips.nii.gz`` and
  ``masks/CTV_TumorBed_proposal.nii.gz`` for the clip model;
* ``RS.<case>.dcm``: an RTSTRUCT referencing the source CT (DICOM inputs only; a NIfTI input has no
  DICOM slices to reference), ROIs AUTOMATIC, the tumour-bed proposal SEMIAUTOMATIC and marked PROPOSAL;
* ``clips.json`` (clip model): one entry per clip (centroid in patient mm, volume, max HU), the ROI and
  the tumour-bed proposal's volume and the clips it excluded;
* ``preview.png``: axial / coronal / sagittal overlays in the catalog colours.

``OUT/summary.csv`` has one row per case. A case folder is assembled as ``OUT/.<case>.partial`` and
renamed when complete: a folder named after a case is always a complete result, a rerun skips it (or
replaces it with ``overwrite``). ``num_parts`` / ``part_id`` split the cases between machines as
``nnUNetv2_predict`` does.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_breast.clips.predict import ClipPredictOptions, clip_predictions
from nnunet_breast.errors import UserError
from nnunet_breast.inference.inputs import InputCT, InputError, check_output_outside, list_inputs, read_input
from nnunet_breast.inference.predictor import ModelRef, make_predictor, predict_files
from nnunet_breast.structures.regions import OverlapEncoding
from nnunet_breast.util.files import atomic_write_csv
from nnunet_breast.volumes.components import remove_islands

PROPOSAL_NAME = "CTV_TumorBed_proposal"
MODELS = ("breast", "clips", "both")


@dataclass
class PredictOptions:
    model: str = "breast"
    breast: ModelRef | None = None
    clips: ClipPredictOptions | None = None
    device: str = "cpu"
    use_mirroring: bool = True
    min_island_cc: float = 0.1             # structure components below this are dropped (islands.py)
    margin_mm: float = 10.0                # tumour-bed proposal
    outlier_mm: float | None = 40.0
    rtstruct: bool = True
    preview: bool = True
    num_parts: int = 1
    part_id: int = 0
    overwrite: bool = False
    check_spacing: bool = True
    num_processes_preprocessing: int = 1
    num_processes_export: int = 1


@dataclass
class CaseResult:
    case_id: str
    folder: Path
    structures: dict[str, float] = field(default_factory=dict)     # name -> volume cc
    n_clips: int | None = None
    proposal_cc: float | None = None
    rtstruct: Path | None = None
    skipped: bool = False


def spacing_range(model: ModelRef) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) training spacing, x y z mm, from the model's dataset_fingerprint.json."""
    fp = json.loads((model.folder() / "dataset_fingerprint.json").read_text())
    spacings = np.array(fp["spacings"], float)           # per case, numpy (z, y, x) order
    return spacings.min(0)[::-1], spacings.max(0)[::-1]


def check_spacing(image: sitk.Image, model: ModelRef, case_id: str, factor: float = 2.0) -> None:
    """Refuse a CT whose voxel size lies far outside the training data's (a factor of ``factor`` either way)."""
    lo, hi = spacing_range(model)
    sp = np.array(image.GetSpacing())
    bad = [(a, s, l_, h) for a, s, l_, h in zip("xyz", sp, lo, hi) if s < l_ / factor or s > h * factor]
    if bad:
        desc = "; ".join(f"{a} {s:.2f} mm (trained on {l_:.2f}-{h:.2f} mm)" for a, s, l_, h in bad)
        raise InputError(f"{case_id}: voxel size outside the range model {model.dataset_id} was trained on: {desc}. "
                         f"Resample the CT or train on similar scans (--no-spacing-check to predict anyway)")


def _validate(opts: PredictOptions) -> None:
    if opts.model not in MODELS:
        raise UserError(f"unknown model {opts.model!r}; choose from {MODELS}")
    if opts.model in ("breast", "both") and opts.breast is None:
        raise UserError("the breast model needs -d (the breast dataset it was trained on)")
    if opts.model in ("clips", "both") and opts.clips is None:
        raise UserError("the clip model needs its options (--clips-d ...)")
    if not 0 <= opts.part_id < opts.num_parts:
        raise UserError(f"-part_id must be in 0..{opts.num_parts - 1}")
    if not opts.margin_mm >= 0:
        raise UserError(f"--margin-mm must be >= 0, got {opts.margin_mm}")
    if opts.outlier_mm is not None and not opts.outlier_mm > 0:
        raise UserError(f"--outlier-mm must be > 0 (0 keeps every clip), got {opts.outlier_mm}")


def predict(input_path: Path, out_dir: Path, opts: PredictOptions, progress: bool = True) -> list[CaseResult]:
    """Predict every CT under ``input_path`` (this part of them) into ``out_dir`` (see the module docstring)."""
    _validate(opts)
    out_dir = Path(out_dir)
    check_output_outside(input_path, out_dir)
    cases = [read_input(c) for c in list_inputs(input_path)[opts.part_id::opts.num_parts]]
    out_dir.mkdir(parents=True, exist_ok=True)
    results, todo = [], []
    for c in cases:
        if (out_dir / c.case_id).is_dir() and not opts.overwrite:
            results.append(CaseResult(c.case_id, out_dir / c.case_id, skipped=True))
        else:
            todo.append(c)
    if opts.check_spacing and opts.breast is not None and opts.model in ("breast", "both"):
        for c in todo:
            check_spacing(c.image, opts.breast, c.case_id)
    work = out_dir / ".work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    breast_masks = _predict_breast(todo, work, opts) if opts.model in ("breast", "both") else {}
    clip_preds = {}
    if opts.model in ("clips", "both") and todo:
        preds, _ = clip_predictions(todo, work / "clips", opts.clips, progress=progress)
        clip_preds = {p.case_id: p for p in preds}
    for c in todo:
        results.append(_write_case(c, out_dir, breast_masks.get(c.case_id, {}), clip_preds.get(c.case_id), opts))
    shutil.rmtree(work, ignore_errors=True)
    _write_summary(out_dir, results)
    return results


def _predict_breast(cases: list[InputCT], work: Path, opts: PredictOptions) -> dict[str, dict[str, np.ndarray]]:
    if not cases:
        return {}
    info = json.loads((opts.breast.folder() / "dataset.json").read_text()).get("nnunet_breast", {})
    if "encoding" not in info:
        raise UserError(f"{opts.breast.folder()} was not trained on a dataset from `nnunet-breast convert breast`")
    encoding = OverlapEncoding.from_json(info["encoding"])
    (work / "ct").mkdir(exist_ok=True)
    for c in cases:
        sitk.WriteImage(c.image, str(work / "ct" / f"{c.case_id}_0000.nii.gz"))
    predictor = make_predictor(opts.breast, opts.device, use_mirroring=opts.use_mirroring)
    predict_files(predictor, [[work / "ct" / f"{c.case_id}_0000.nii.gz"] for c in cases],
                  [work / "breast" / c.case_id for c in cases], save_probabilities=True,
                  num_processes_preprocessing=opts.num_processes_preprocessing,
                  num_processes_export=opts.num_processes_export)
    return {c.case_id: encoding.decode_regions(np.load(work / "breast" / f"{c.case_id}.npz")["probabilities"])
            for c in cases}


def _proposal_region(masks: dict[str, np.ndarray], proposal_hull: np.ndarray | None, body: np.ndarray) -> np.ndarray:
    """Where the proposal may lie: the predicted breast CTV it overlaps most, else the body."""
    best, overlap = None, 0
    for name in ("CTVp_breast_L", "CTVp_breast_R"):
        m = masks.get(name)
        if m is not None and proposal_hull is not None:
            n = int((m & proposal_hull).sum())
            if n > overlap:
                best, overlap = m, n
    return best if best is not None else body


def _write_case(case: InputCT, out_dir: Path, breast: dict[str, np.ndarray], clips, opts: PredictOptions
                ) -> CaseResult:
    from nnunet_breast.clips.tumour_bed import propose_tumour_bed
    from nnunet_breast.volumes.body import body_mask

    cid = case.case_id
    final = out_dir / cid
    part = out_dir / f".{cid}.partial"
    shutil.rmtree(part, ignore_errors=True)
    (part / "masks").mkdir(parents=True)
    img = case.image
    spacing_zyx = img.GetSpacing()[::-1]
    voxel_cc = float(np.prod(spacing_zyx)) / 1000.0
    masks = {name: remove_islands(m, spacing_zyx, opts.min_island_cc * 1000.0) for name, m in breast.items()}
    proposals: dict[str, np.ndarray] = {}
    result = CaseResult(cid, final)
    if clips is not None:
        masks["Clips"] = clips.mask
        hu = sitk.GetArrayViewFromImage(img)
        body = body_mask(np.asarray(hu), img.GetSpacing())
        bed = propose_tumour_bed(clips.mask, spacing_zyx, margin_mm=opts.margin_mm, outlier_mm=opts.outlier_mm)
        region = _proposal_region(masks, bed.mask if not bed.empty else None, body)
        proposal = remove_islands(bed.mask & region, spacing_zyx, opts.min_island_cc * 1000.0)
        proposals[PROPOSAL_NAME] = proposal
        proposal_cc = round(float(proposal.sum()) * voxel_cc, 2)
        result.n_clips, result.proposal_cc = len(clips.clips), proposal_cc
        clips.write_json(part / "clips.json", tumour_bed_proposal={
            "name": PROPOSAL_NAME, "volume_cc": proposal_cc, "margin_mm": opts.margin_mm,
            "clips_used": bed.clips_used, "clips_excluded": [e.__dict__ for e in bed.clips_excluded],
            "clipped_to": "predicted breast CTV" if region is not body else "body", "note": bed.note})
    for name, m in {**masks, **proposals}.items():
        out = sitk.GetImageFromArray(m.astype(np.uint8))
        out.CopyInformation(img)
        sitk.WriteImage(out, str(part / "masks" / f"{name}.nii.gz"), useCompression=True)
        if name in masks:
            result.structures[name] = round(float(m.sum()) * voxel_cc, 2)
    if opts.rtstruct and case.dicom is not None:
        from nnunet_breast.dicom.rtstruct_export import export_rtstruct

        export_rtstruct(masks, case.dicom, part / f"RS.{cid}.dcm", proposals=proposals)
        result.rtstruct = final / f"RS.{cid}.dcm"
    if opts.preview:
        from nnunet_breast.inference.preview import write_preview

        write_preview(sitk.GetArrayViewFromImage(img), {**masks, **proposals}, spacing_zyx, part / "preview.png",
                      title=cid)
    if final.exists():
        shutil.rmtree(final)
    part.rename(final)
    return result


def _write_summary(out_dir: Path, results: list[CaseResult]) -> None:
    names = sorted({n for r in results for n in r.structures})
    rows = []
    for r in results:
        row = {"case_id": r.case_id, "status": "skipped (exists)" if r.skipped else "predicted",
               "rtstruct": r.rtstruct.name if r.rtstruct else "", "n_clips": "" if r.n_clips is None else r.n_clips,
               "tumour_bed_proposal_cc": "" if r.proposal_cc is None else r.proposal_cc}
        row.update({f"{n}_cc": r.structures.get(n, "") for n in names})
        rows.append(row)
    cols = ["case_id", "status", "rtstruct", "n_clips", "tumour_bed_proposal_cc"] + [f"{n}_cc" for n in names]
    atomic_write_csv(out_dir / "summary.csv", cols, rows)
