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
* ``qa_report.html``: one self-contained page for the physicist: the preview, volumes against the training
  cohort's range, laterality, the clips, provenance (:mod:`nnunet_breast.inference.qa_report`).
* ``SEG.<case>.dcm`` (``seg``, DICOM inputs only): a DICOM Segmentation of the CT, one segment per
  non-empty structure (:mod:`nnunet_breast.dicom.seg_export`). The RTSTRUCT follows the department's
  settings (``rtstruct_settings``: label, series description, name map, ``add_to`` a structure set of theirs).

* ``summary.json``: the case's row of ``OUT/summary.csv``.

``OUT/summary.csv`` has one row per complete case folder in ``OUT``, rebuilt from their ``summary.json``
after each run (under a lock, ``OUT/.summary.lock``, and written atomically), so runs into one folder never
drop each other's rows. Each run works in a folder of its own, ``OUT/.work-<random>``
(:mod:`nnunet_breast.util.workdir`: locked while the run lives, removed at its end, or by a later run once
its owner is gone); a case folder is assembled there and renamed into ``OUT`` when complete: a folder named
after a case is always a complete result, a rerun skips it (or replaces it with ``overwrite``) and finishes
the cases a crashed run left. ``num_parts`` / ``part_id`` split the cases between machines or processes as
``nnUNetv2_predict`` does; parts may run at the same time into one ``OUT``.
"""
from __future__ import annotations

import json
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_breast.clips.predict import ClipPredictOptions, clip_predictions
from nnunet_breast.dicom.rtstruct_export import RTStructSettings
from nnunet_breast.dicom.rtstruct_merge import match_structure_sets, structure_set_for
from nnunet_breast.errors import UserError
from nnunet_breast.inference.ensemble import FoldVotes, fold_logits_hook
from nnunet_breast.inference.inputs import InputCT, InputError, check_output_outside, list_inputs, read_input
from nnunet_breast.inference.predictor import ModelRef, make_predictor, predict_probabilities
from nnunet_breast.structures.regions import OverlapEncoding
from nnunet_breast.util.files import atomic_write_csv, atomic_write_text
from nnunet_breast.util.workdir import locked, private_work_folder
from nnunet_breast.volumes.components import pasted, remove_islands

PROPOSAL_NAME = "CTV_TumorBed_proposal"
CASE_SUMMARY = "summary.json"           # per case folder: its row of OUT/summary.csv
SUMMARY_COLUMNS = ["case_id", "status", "rtstruct", "n_clips", "tumour_bed_proposal_cc"]
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
    seg: bool = False                      # also SEG.<case>.dcm (DICOM inputs only)
    rtstruct_settings: RTStructSettings | None = None   # label, series description, name map, add_to, on_clash
    fast_path: str = "box"                 # the body box's tiling, or "off" (inference/fast_path.py)
    tile_step_size: float = 0.5            # nnU-Net's sliding-window step, a fraction of the patch
    qa_report: bool = True                 # qa_report.html per case (inference/qa_report.py)

    def model_refs(self) -> dict[str, ModelRef]:
        """The trained models this run uses, by role (none for the threshold clip method)."""
        refs = {"breast model": self.breast if self.model in ("breast", "both") else None}
        if self.model in ("clips", "both") and self.clips is not None:
            refs.update({"clip model (stage 1 / single)": self.clips.stage1, "clip model (stage 2)": self.clips.stage2})
        return {role: ref for role, ref in refs.items() if ref is not None}


@dataclass
class CaseResult:
    case_id: str
    folder: Path
    structures: dict[str, float] = field(default_factory=dict)     # name -> volume cc
    n_clips: int | None = None
    proposal_cc: float | None = None
    rtstruct: Path | None = None
    skipped: bool = False
    seg: Path | None = None
    seg_left_out: list[str] = field(default_factory=list)     # structures predicted empty: no segment


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


def validate_options(opts: PredictOptions) -> None:
    if opts.model not in MODELS:
        raise UserError(f"unknown model {opts.model!r}; choose from {MODELS}")
    if opts.model in ("breast", "both") and opts.breast is None:
        raise UserError("the breast model needs -d (the breast dataset it was trained on)")
    if opts.model in ("clips", "both") and opts.clips is None:
        raise UserError("the clip model needs its options (--clips-d ...)")
    if not 0 <= opts.part_id < opts.num_parts:
        raise UserError(f"-part_id must be in 0..{opts.num_parts - 1}")
    if not 0 < opts.tile_step_size <= 1:
        raise UserError(f"-step_size must be in (0, 1], got {opts.tile_step_size}")
    if not opts.margin_mm >= 0:
        raise UserError(f"--margin-mm must be >= 0, got {opts.margin_mm}")
    if opts.outlier_mm is not None and not opts.outlier_mm > 0:
        raise UserError(f"--outlier-mm must be > 0 (0 keeps every clip), got {opts.outlier_mm}")


def predict(input_path: Path, out_dir: Path, opts: PredictOptions, progress: bool = True) -> list[CaseResult]:
    """Predict every CT under ``input_path`` (this part of them) into ``out_dir`` (see the module docstring)."""
    validate_options(opts)
    out_dir = Path(out_dir)
    check_output_outside(input_path, out_dir)
    inputs = list_inputs(input_path)
    _check_dicom_outputs(inputs, out_dir, opts)
    cases = [read_input(c) for c in inputs[opts.part_id::opts.num_parts]]
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
    started, provenance = time.time(), _provenance(opts) if opts.qa_report and todo else {}
    with private_work_folder(out_dir) as work:
        breast_masks, agreement = _predict_breast(todo, opts) if opts.model in ("breast", "both") else ({}, {})
        clip_preds = {}
        if opts.model in ("clips", "both") and todo:
            preds, _ = clip_predictions(todo, work / "clips", opts.clips, progress=progress)
            clip_preds = {p.case_id: p for p in preds}
        for c in todo:
            results.append(_write_case(c, out_dir, work / "cases" / c.case_id, breast_masks.get(c.case_id, {}),
                                       clip_preds.get(c.case_id), opts, provenance, started,
                                       agreement.get(c.case_id)))
    write_summary(out_dir)
    return results


def _check_dicom_outputs(inputs: list, out_dir: Path, opts: PredictOptions) -> None:
    """Refuse, before any prediction, DICOM outputs that cannot be made: a SEG or ``--add-to`` for NIfTI
    input (no DICOM CT to reference), ``--add-to`` without the RTSTRUCT, from inside OUT, or for no input CT."""
    s = opts.rtstruct_settings or RTStructSettings()
    nifti = any(isinstance(source, Path) for _, source in inputs)
    if nifti and (opts.seg or s.add_to):
        raise UserError(f"{'--seg' if opts.seg else '--add-to'} needs DICOM CT input: a NIfTI CT has no DICOM "
                        f"slices to reference")
    if s.add_to:
        if not opts.rtstruct:
            raise UserError("--add-to writes the RTSTRUCT; drop --no-rtstruct")
        inside = [p for p in s.add_to if Path(p).resolve().is_relative_to(out_dir.resolve())]
        if inside:
            raise UserError(f"--add-to {inside[0]} lies inside the output folder {out_dir}; a rerun could replace "
                            f"it: give the department's file from elsewhere")
        match_structure_sets(s.add_to, [key for key, _ in inputs])


def _seg_parameters(opts: PredictOptions, masks: dict[str, np.ndarray]) -> dict[str, dict[str, str]]:
    """Structure -> the parameters of the model that made it (the SEG's Algorithm Identification)."""
    def ref(prefix: str, m: ModelRef | None) -> dict[str, str]:
        return {f"{prefix}{k}": str(v) for k, v in (m.describe() if m else {}).items()}

    breast = {"model": "breast", **ref("", opts.breast)}
    clips = {"model": "clips", "method": opts.clips.method if opts.clips else "",
             **ref("stage1_", opts.clips.stage1 if opts.clips else None),
             **ref("stage2_", opts.clips.stage2 if opts.clips else None)}
    return {n: clips if n == "Clips" else breast for n in masks} | {PROPOSAL_NAME: clips}


def _predict_breast(cases: list[InputCT], opts: PredictOptions) -> tuple[dict, dict]:
    """Case -> structure masks on the CT grid; case -> the folds' agreement per structure (several folds)."""
    if not cases:
        return {}, {}
    info = json.loads((opts.breast.folder() / "dataset.json").read_text()).get("nnunet_breast", {})
    if "encoding" not in info:
        raise UserError(f"{opts.breast.folder()} was not trained on a dataset from `nnunet-breast convert breast`")
    encoding = OverlapEncoding.from_json(info["encoding"])
    predictor = make_predictor(opts.breast, opts.device, opts.tile_step_size, opts.use_mirroring,
                               fast_path=opts.fast_path)
    out, agreement = {}, {}
    for c in cases:
        votes = FoldVotes(lambda logits: encoding.decode_regions(logits, threshold=0.0))    # logit 0 = p 0.5
        with fold_logits_hook(predictor, votes.add) if opts.qa_report else nullcontext():
            lps = c.lps()                                                       # the layout models learnt
            box, probabilities = predict_probabilities(predictor, lps)
        regions = encoding.decode_regions(probabilities)
        shape = lps.GetSize()[::-1]
        out[c.case_id] = {name: np.ascontiguousarray(c.from_lps(pasted(m, box, shape)))      # CT grid
                          for name, m in regions.items()}
        agreement[c.case_id] = votes.agreement()
    return out, agreement


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


def _provenance(opts: PredictOptions) -> dict:
    """What made this run's contours, for the QA report (checkpoint hashes read once per run)."""
    from nnunet_breast.inference.qa_report import model_provenance

    out = {"model": opts.model, "device": opts.device, "fast path": opts.fast_path,
           "test-time mirroring": opts.use_mirroring, "sliding-window step": opts.tile_step_size,
           "run started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if opts.model in ("clips", "both"):
        out["clip method"] = opts.clips.method
    return out | {role: model_provenance(ref) for role, ref in opts.model_refs().items()}


def _write_case(case: InputCT, out_dir: Path, part: Path, breast: dict[str, np.ndarray], clips,
                opts: PredictOptions, provenance: dict | None = None, started: float | None = None,
                fold_agreement: dict | None = None) -> CaseResult:
    from nnunet_breast.clips.tumour_bed import propose_tumour_bed
    from nnunet_breast.volumes.body import body_mask

    cid = case.case_id
    final = out_dir / cid
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

        s = opts.rtstruct_settings or RTStructSettings()
        add_to = structure_set_for(s.add_to, case.dicom.header.SeriesInstanceUID) if s.add_to else None
        export_rtstruct(masks, case.dicom, part / f"RS.{cid}.dcm", proposals=proposals, label=s.label,
                        series_description=s.series_description, name_map=s.name_map, add_to=add_to,
                        on_clash=s.on_clash)
        result.rtstruct = final / f"RS.{cid}.dcm"
    if opts.seg and case.dicom is not None:
        from nnunet_breast.dicom.seg_export import export_seg

        seg, result.seg_left_out = export_seg(masks, case.dicom, part / f"SEG.{cid}.dcm", proposals=proposals,
                                              parameters=_seg_parameters(opts, masks))
        result.seg = final / seg.name if seg else None
    if opts.preview:
        from nnunet_breast.inference.preview import write_preview

        lps = case.lps()                            # drawn as radiologists view a head-first supine CT
        write_preview(sitk.GetArrayViewFromImage(lps), {n: case.to_lps(m) for n, m in {**masks, **proposals}.items()},
                      lps.GetSpacing()[::-1], part / "preview.png", title=cid)
    if opts.qa_report:
        from nnunet_breast.inference.qa_report import cohort_ranges, write_qa_report

        info = dict(provenance or {})
        if started is not None:
            info["seconds from the run's start to this report"] = round(time.time() - started, 1)
        write_qa_report(part / "qa_report.html", case_id=cid, image=img, masks={**masks, **proposals},
                        preview_png=part / "preview.png" if opts.preview else None,
                        clips=json.loads((part / "clips.json").read_text()) if clips is not None else None,
                        cohort_ranges=cohort_ranges(opts.breast.folder()) if breast and opts.breast else None,
                        side=opts.clips.side if opts.clips else None, provenance=info,
                        fold_agreement=fold_agreement or None)
    row = {"case_id": cid, "status": "predicted", "rtstruct": result.rtstruct.name if result.rtstruct else "",
           "n_clips": "" if result.n_clips is None else result.n_clips,
           "tumour_bed_proposal_cc": "" if result.proposal_cc is None else result.proposal_cc,
           "structures_cc": result.structures, "source": case.source}
    atomic_write_text(part / CASE_SUMMARY, json.dumps(row, indent=2))
    if final.exists() and opts.overwrite:
        shutil.rmtree(final)
    try:
        part.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        result.skipped = True           # another run finished this case meanwhile: keep its folder
    return result


def write_summary(out_dir: Path) -> Path:
    """Rebuild ``OUT/summary.csv`` from every complete case folder's ``summary.json`` (module docstring)."""
    out_dir = Path(out_dir)
    with locked(out_dir / ".summary.lock"):
        rows = []
        for f in sorted(out_dir.glob(f"*/{CASE_SUMMARY}")):
            if f.parent.name.startswith("."):
                continue
            row = json.loads(f.read_text())
            row.update({f"{n}_cc": v for n, v in row.pop("structures_cc", {}).items()})
            rows.append(row)
        names = sorted({k for r in rows for k in r if k.endswith("_cc") and k not in SUMMARY_COLUMNS})
        atomic_write_csv(out_dir / "summary.csv", SUMMARY_COLUMNS + names, rows)
    return out_dir / "summary.csv"
