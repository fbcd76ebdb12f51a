"""Clip prediction on new CTs, three ways with one output format: cascade, single stage, threshold.

* ``cascade``: stage 1 (location net, fold ensemble) on the whole CT, resampled beforehand to stage 1's own
  spacing (4 mm), so its probability map stays coarse -> ROI with the settings stage 2 was trained with
  (stored in its dataset.json by ``cascade prepare``), every flagged coarse voxel taken whole onto the CT
  grid -> CT crop + the map resampled onto it -> stage 2 (segmentation net) -> pasted back into the CT's
  geometry. Running stage 1 on the full-resolution CT would make nnU-Net resample its input down and its
  probabilities back up to the whole CT and compress them to disk: on a 512 x 512 x 100 CT that is ~17 s of
  the cascade's time on 2 CPU cores, more than the 4 mm network itself on a GPU.
* ``single``: one nnU-Net model on the whole CT (the single-stage Res-SE-U-Net baseline).
* ``threshold``: HU threshold inside the body mask (:mod:`nnunet_breast.clips.threshold`).

Components under ``min_clip_mm3`` (:data:`MIN_CLIP_MM3`, 8 mm^3) are dropped from every method's mask: the
smallest clip holds ~16 mm^3 of metal (a medium ligating clip, 5 mm x 2 mm), so a component under half of that
is a speck (a noise voxel, a fragment of a marker wire), not a clip.
Every CT first gets the clip datasets' preprocessing: HU outside the body mask set to air (-1000), as
``convert clips`` did for training, on the CT's voxels in the LPS layout
(:meth:`~nnunet_breast.inference.inputs.InputCT.lps`: a prone, feet-first or decubitus CT looks to the models like
the head-first supine ones); masks go back onto the CT's own grid, and a clips.json ROI counts voxels of the
LPS layout. Per case, ``OUT/<case>.nii.gz`` (0/1 on the CT grid, nnU-Net's layout,
so ``nnUNetv2_evaluate_folder`` and ``nnunet-breast evaluate`` read it) and ``OUT/<case>_clips.json``
(clip table, ROI, method); ``OUT/clips.csv`` has one row per case. Intermediate files live in
``OUT/.work`` and are removed at the end unless ``keep_work``.

:func:`predict_clips` = :func:`clip_predictions` (masks and clip tables in memory, nnU-Net's files in a work
folder) + :func:`write_clip_outputs`; ``nnunet-breast predict`` calls the first only and writes each case's
``clips.json`` once, with the tumour-bed proposal, from :meth:`ClipPrediction.write_json`.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_breast.clips import DEFAULT_THRESHOLD_HU, MIN_CLIP_MM3
from nnunet_breast.clips.roi import Roi, RoiSettings, clip_probability, crop_image, paste_back, resample_to_spacing
from nnunet_breast.clips.table import clip_table
from nnunet_breast.clips.threshold import threshold_clips
from nnunet_breast.errors import UserError
from nnunet_breast.inference.inputs import InputCT, check_output_outside, load_inputs
from nnunet_breast.inference.predictor import ModelRef, make_predictor, predict_files
from nnunet_breast.util.files import atomic_write_csv, atomic_write_text
from nnunet_breast.volumes.body import air_outside_body
from nnunet_breast.volumes.components import remove_islands

METHODS = ("cascade", "single", "threshold")


@dataclass
class ClipPredictOptions:
    method: str = "cascade"
    stage1: ModelRef | None = None              # cascade stage 1, or the single-stage model
    stage2: ModelRef | None = None              # cascade only
    device: str = "cpu"
    use_mirroring: bool = True
    tile_step_size: float = 0.5
    threshold_hu: float = DEFAULT_THRESHOLD_HU  # threshold method
    side: str | None = None                     # treated side for the empty-stage-1 fallback (L/R)
    num_processes_preprocessing: int = 1
    num_processes_export: int = 1
    keep_work: bool = False
    min_clip_mm3: float = MIN_CLIP_MM3          # specks below this are not clips
    fast_path: str = "box"                      # the body box's tiling, or "off" (inference/fast_path.py)


@dataclass
class ClipPrediction:
    case_id: str
    mask: np.ndarray                            # bool [z, y, x] on the input CT grid
    clips: list[dict]
    roi: Roi | None = None
    info: dict = field(default_factory=dict)    # how it was predicted (method, source, roi, model): clips.json
    files: dict[str, Path] = field(default_factory=dict)    # set by write_clip_outputs
    image: sitk.Image | None = None             # the input CT: the mask's geometry

    def to_json(self, **extra) -> dict:
        """The case's clips.json: how it was predicted, the clip table, then ``extra`` (``nnunet-breast predict``
        adds the tumour-bed proposal), so both commands write one layout."""
        return {"case_id": self.case_id, "n_clips": len(self.clips), **self.info, "clips": self.clips, **extra}

    def write_json(self, path: Path, **extra) -> Path:
        atomic_write_text(Path(path), json.dumps(self.to_json(**extra), indent=2))
        return Path(path)


def stage2_inputs(stage2: ModelRef) -> tuple[RoiSettings, bool]:
    """ROI settings stage 2 was trained with and whether it takes the probability map (its dataset.json,
    copied by nnU-Net into the model folder)."""
    ds = json.loads((stage2.folder() / "dataset.json").read_text())
    info = ds.get("nnunet_breast", {})
    if int(info.get("stage", 0)) != 2 or "roi" not in info:
        raise UserError(f"{stage2.folder()} was not trained on a stage-2 dataset from `nnunet-breast cascade "
                        "prepare` (its dataset.json has no ROI settings)")
    return RoiSettings.from_json(info["roi"]), len(ds["channel_names"]) == 2


def _validate(opts: ClipPredictOptions) -> None:
    if opts.method not in METHODS:
        raise UserError(f"unknown clip method {opts.method!r}; choose from {METHODS}")
    if opts.method in ("cascade", "single") and opts.stage1 is None:
        raise UserError(f"clip method {opts.method} needs a trained model (--clips-d ...)")
    if opts.method == "cascade" and opts.stage2 is None:
        raise UserError("the clip cascade needs the stage-2 model (--stage2-id)")


def predict_clips(cases: list[InputCT], out_dir: Path, opts: ClipPredictOptions, progress: bool = True
                  ) -> tuple[list[ClipPrediction], dict[str, float]]:
    """Predict clips for ``cases``, write the outputs (module docstring); returns them and stage timings (s)."""
    out_dir = Path(out_dir)
    results, timings = clip_predictions(cases, out_dir / ".work", opts, progress)
    t0 = time.perf_counter()
    write_clip_outputs(results, out_dir)
    timings["export_s"] += time.perf_counter() - t0
    return results, timings


def predict_clips_from(input_path: Path, out_dir: Path, opts: ClipPredictOptions, progress: bool = True
                       ) -> tuple[list[ClipPrediction], dict[str, float]]:
    """:func:`predict_clips` on every CT under ``input_path`` (a DICOM export or NIfTI files, read by
    :func:`~nnunet_breast.inference.inputs.load_inputs`) into ``out_dir`` (created; not inside the input)."""
    _validate(opts)
    check_output_outside(input_path, out_dir)
    cases = load_inputs(input_path)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return predict_clips(cases, out_dir, opts, progress)


def clip_predictions(cases: list[InputCT], work: Path, opts: ClipPredictOptions, progress: bool = True
                     ) -> tuple[list[ClipPrediction], dict[str, float]]:
    """Masks and clip tables of ``cases``, in memory, and stage timings (s); nothing written but nnU-Net's
    inputs and outputs in ``work`` (emptied first, removed at the end unless ``opts.keep_work``)."""
    _validate(opts)
    work = Path(work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "ct").mkdir(parents=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    images = {c.case_id: air_outside_body(c.lps())[0] for c in cases}     # the layout the models learnt
    timings["body_mask_s"] = time.perf_counter() - t0

    rois: dict[str, Roi] = {}
    if opts.method == "threshold":
        t0 = time.perf_counter()
        # no speck filter here: every method's mask gets the same one (min_clip_mm3) below
        masks = {cid: threshold_clips(img, opts.threshold_hu, min_volume_mm3=0) for cid, img in images.items()}
        timings["threshold_s"] = time.perf_counter() - t0
    else:
        ids = list(images)
        t0 = time.perf_counter()
        p1 = make_predictor(opts.stage1, opts.device, opts.tile_step_size, opts.use_mirroring, fast_path=opts.fast_path)
        coarse = {}
        if opts.method == "cascade":     # stage 1 on the CT at its own spacing: its map stays coarse
            spacing_xyz = model_spacing_xyz(p1)
            coarse = {cid: resample_to_spacing(images[cid], spacing_xyz) for cid in ids}
        for cid in ids:
            sitk.WriteImage(coarse.get(cid, images[cid]), str(work / "ct" / f"{cid}_0000.nii.gz"))
        predict_files(p1, [[work / "ct" / f"{c}_0000.nii.gz"] for c in ids], [work / "stage1" / c for c in ids],
                      save_probabilities=opts.method == "cascade",
                      num_processes_preprocessing=opts.num_processes_preprocessing,
                      num_processes_export=opts.num_processes_export)
        timings["stage1_s"] = time.perf_counter() - t0
        if opts.method == "single":
            masks = {c: _read_mask(work / "stage1" / f"{c}.nii.gz") for c in ids}
        else:
            masks, rois = _stage2(ids, images, coarse, work, opts, timings, progress)

    t0 = time.perf_counter()
    results = []
    for c in tqdm(cases, desc="clip tables", disable=not progress, unit="case"):
        cid, img = c.case_id, c.image
        mask = np.ascontiguousarray(c.from_lps(masks[cid]))          # back onto the CT's own grid
        mask = remove_islands(mask, img.GetSpacing()[::-1], opts.min_clip_mm3, keep_largest=False)
        roi = rois.get(cid)
        info = {"method": opts.method, "source": c.source, "roi": roi.to_json() if roi is not None else None,
                **_method_info(opts)}
        results.append(ClipPrediction(cid, mask, clip_table(mask, img), roi, info, image=img))
    timings["export_s"] = time.perf_counter() - t0
    if not opts.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return results, timings


def write_clip_outputs(results: list[ClipPrediction], out_dir: Path) -> None:
    """``OUT/<case>.nii.gz`` (on the input CT's grid), ``OUT/<case>_clips.json`` and ``OUT/clips.csv``; each
    prediction's ``files`` gets its mask and JSON."""
    out_dir = Path(out_dir)
    rows = []
    for r in results:
        seg = sitk.GetImageFromArray(r.mask.astype(np.uint8))
        seg.CopyInformation(r.image)
        seg_file = out_dir / f"{r.case_id}.nii.gz"
        tmp = out_dir / f".{r.case_id}.tmp.nii.gz"
        sitk.WriteImage(seg, str(tmp), useCompression=True)
        tmp.replace(seg_file)
        r.files = {"mask": seg_file, "clips_json": r.write_json(out_dir / f"{r.case_id}_clips.json")}
        rows.append({"case_id": r.case_id, "method": r.info["method"], "n_clips": len(r.clips),
                     "total_volume_mm3": round(sum(c["volume_mm3"] for c in r.clips), 2),
                     "roi_source": r.roi.source if r.roi is not None else ""})
    atomic_write_csv(out_dir / "clips.csv", ["case_id", "method", "n_clips", "total_volume_mm3", "roi_source"], rows)


def _method_info(opts: ClipPredictOptions) -> dict:
    if opts.method == "threshold":
        return {"threshold_hu": opts.threshold_hu}
    if opts.method == "single":
        return {"model": opts.stage1.describe()}
    return {"stage1": opts.stage1.describe(), "stage2": opts.stage2.describe()}


def _read_mask(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0


def model_spacing_xyz(predictor) -> list[float]:
    """The spacing (mm, SimpleITK's x, y, z) a model's configuration runs at."""
    spacing = predictor.configuration_manager.spacing                     # nnU-Net's (transposed) axis order
    zyx = [spacing[i] for i in predictor.plans_manager.transpose_backward]
    return [float(v) for v in zyx[::-1]]


def _stage2(ids, images, coarse, work: Path, opts: ClipPredictOptions, timings: dict, progress: bool):
    settings, with_map = stage2_inputs(opts.stage2)
    channels = (0, 1) if with_map else (0,)
    t0 = time.perf_counter()
    rois: dict[str, Roi] = {}
    (work / "stage2_in").mkdir()
    for cid in tqdm(ids, desc="stage-2 ROI", disable=not progress, unit="case"):
        img = images[cid]
        fg = sitk.GetImageFromArray(clip_probability(work / "stage1" / f"{cid}.npz"))
        fg.CopyInformation(coarse[cid])
        roi = settings.roi(fg, img, hu=sitk.GetArrayViewFromImage(img), side=opts.side)
        rois[cid] = roi
        crop = crop_image(img, roi)
        sitk.WriteImage(crop, str(work / "stage2_in" / f"{cid}_0000.nii.gz"))
        if with_map:     # the coarse map, trilinear on the crop's grid
            pmap = sitk.Resample(fg, crop, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            sitk.WriteImage(pmap, str(work / "stage2_in" / f"{cid}_0001.nii.gz"))
    timings["roi_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    p2 = make_predictor(opts.stage2, opts.device, opts.tile_step_size, opts.use_mirroring, fast_path=opts.fast_path)
    predict_files(p2, [[work / "stage2_in" / f"{c}_000{k}.nii.gz" for k in channels] for c in ids],
                  [work / "stage2" / c for c in ids], save_probabilities=False,
                  num_processes_preprocessing=opts.num_processes_preprocessing,
                  num_processes_export=opts.num_processes_export)
    timings["stage2_s"] = time.perf_counter() - t0
    masks = {}
    for cid in ids:
        seg = sitk.ReadImage(str(work / "stage2" / f"{cid}.nii.gz"))
        masks[cid] = sitk.GetArrayFromImage(paste_back(seg, rois[cid], images[cid])) > 0
    return masks, rois
