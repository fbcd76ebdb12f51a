"""``cascade prepare``: the stage-2 (segmentation net) dataset, built from stage 1's out-of-fold predictions.

Stage 1 (``3d_clip_location``) trained five-fold with ``--npz`` leaves, in ``fold_k/validation/``, a clip
probability map for every training case, predicted by the one model that did not see that case. Those
maps are as (un)reliable as the maps stage 2 will meet on new patients; in-sample maps (what the paper
fed) are over-confident, so stage 2 would learn to trust them too much.

For each case of the stage-1 dataset:

* ROI = every voxel with probability >= ``threshold`` + ``margin_mm``, grown to at least
  ``min_size_mm`` per axis (192 mm by default: the paper's 96 voxels at 2 mm), on the case's own CT grid
  (:func:`nnunet_breast.clips.roi.roi_from_probability`); an empty map falls back to the treated
  breast (side from ``cohort.csv``), never to nothing;
* ``imagesTr/<case>_0000`` = raw-HU CT crop, ``<case>_0001`` = probability crop (both ``noNorm``),
  ``labelsTr/<case>`` = label crop; world geometry kept, so nnU-Net resamples them as any CT;
* ``cascade_rois.json`` records each ROI, its source (prediction / fallback), the fold whose model
  produced the map, and how many labelled clip voxels fell outside (stage-1 misses, reported not hidden).

The dataset is assembled in a hidden staging folder and renamed into place at the end, so an interrupted
run never leaves a dataset that looks complete. The stage-1 folders are only read.
"""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from nnunet_breast.clips import CLIP_MODEL_DEFAULTS
from nnunet_breast.clips.roi import RoiSettings, clip_probability, crop_image
from nnunet_breast.env import dataset_dir, model_dir, nnunet_folder
from nnunet_breast.errors import UserError
from nnunet_breast.util.files import atomic_write_text
from nnunet_breast.util.parallel import map_cases

STAGE1_TRAINER, STAGE1_CONFIG = CLIP_MODEL_DEFAULTS["stage1"]


class CascadeError(UserError):
    """The stage-2 dataset cannot be built; the message says what is missing."""


@dataclass
class PrepareResult:
    dataset_dir: Path
    rois: dict[str, dict] = field(default_factory=dict)

    @property
    def fallbacks(self) -> list[str]:
        return [c for c, r in self.rois.items() if r["roi"]["source"] != "prediction"]

    @property
    def clips_cut(self) -> list[str]:
        return [c for c, r in self.rois.items() if r["label_voxels_outside"]]


def out_of_fold_maps(model_folder: Path, case_ids: list[str]) -> dict[str, tuple[int, Path]]:
    """case -> (fold, npz) from ``fold_*/validation/*.npz``; every case exactly once."""
    found: dict[str, list[tuple[int, Path]]] = {}
    for fold_dir in sorted(model_folder.glob("fold_*")):
        try:
            fold = int(fold_dir.name.split("_", 1)[1])
        except ValueError:
            continue              # fold_all: in-sample for every case, not usable here
        for npz in (fold_dir / "validation").glob("*.npz"):
            found.setdefault(npz.name[: -len(".npz")], []).append((fold, npz))
    missing = [c for c in case_ids if c not in found]
    if missing:
        raise CascadeError(f"{len(missing)} of {len(case_ids)} cases have no out-of-fold probability map in "
                           f"{model_folder}/fold_*/validation (e.g. {missing[:3]}): train all five folds with "
                           f"`--npz` (nnUNetv2_train ... FOLD --npz; or `nnUNetv2_train ... FOLD --val --npz` "
                           f"after training)")
    double = [c for c in case_ids if len(found[c]) > 1]
    if double:
        raise CascadeError(f"cases validated by more than one fold in {model_folder}: {double[:3]}; the splits "
                           f"changed between folds, retrain stage 1 with one splits_final.json")
    return {c: found[c][0] for c in case_ids}


def _case_sides(raw: Path) -> dict[str, str]:
    table = raw / "cohort.csv"
    if not table.is_file():
        return {}
    with open(table, newline="") as f:
        return {r["case_id"]: r.get("side", "") for r in csv.DictReader(f)}


def _write(arr_or_img, path: Path, reference: sitk.Image | None = None) -> None:
    img = arr_or_img
    if not isinstance(img, sitk.Image):
        img = sitk.GetImageFromArray(arr_or_img)
        img.CopyInformation(reference)
    sitk.WriteImage(img, str(path), useCompression=True)


def _crop_case(raw1: Path, cid: str, fold_map: tuple[int, Path], settings: RoiSettings, side: str | None,
               with_map: bool, staging: Path) -> dict:
    """One case's ROI, CT / map / label crops written into ``staging``; returns its cascade_rois.json entry."""
    fold, npz = fold_map
    image = sitk.ReadImage(str(raw1 / "imagesTr" / f"{cid}_0000.nii.gz"))
    label = sitk.ReadImage(str(raw1 / "labelsTr" / f"{cid}.nii.gz"))
    fg = clip_probability(npz)
    hu = sitk.GetArrayFromImage(image)
    if fg.shape != hu.shape:
        raise CascadeError(f"{npz}: probability map shape {fg.shape} differs from the CT's {hu.shape}")
    roi = settings.roi(fg, image, hu=hu, side=side)
    lab = sitk.GetArrayFromImage(label)
    outside = int((lab > 0).sum() - (lab[roi.slices()] > 0).sum())
    _write(crop_image(image, roi), staging / "imagesTr" / f"{cid}_0000.nii.gz")
    if with_map:
        _write(fg[roi.slices()], staging / "imagesTr" / f"{cid}_0001.nii.gz", crop_image(image, roi))
    _write(crop_image(label, roi), staging / "labelsTr" / f"{cid}.nii.gz")
    return {"roi": roi.to_json(), "fold": fold, "image_size_zyx": list(hu.shape), "label_voxels_outside": outside}


def prepare_stage2(stage1_id: int, stage2_id: int, *, name: str | None = None, trainer: str = STAGE1_TRAINER,
                   plans: str = "nnUNetPlans", configuration: str = STAGE1_CONFIG,
                   settings: RoiSettings = RoiSettings(), with_map: bool = True, overwrite: bool = False,
                   progress: bool = True, num_processes: int = 1) -> PrepareResult:
    """Build ``$nnUNet_raw/Dataset<stage2_id>_<name>`` (see the module docstring); ``num_processes`` cases at a
    time (a full-size case reads a ~130 MB probability file).

    ``with_map=False`` writes the CT crops only: the dataset of the paper's "segmentation net without the
    feature map" ablation (``nnUNetTrainerClipSegmentationNoMap``); the ROI still comes from stage 1.
    """
    if not (0 < settings.threshold <= 1 and settings.margin_mm >= 0 and settings.min_size_mm > 0):
        raise CascadeError(f"ROI settings need 0 < --threshold <= 1, --margin-mm >= 0 and --min-size-mm > 0; got "
                           f"{settings.threshold}, {settings.margin_mm}, {settings.min_size_mm}")
    raw1 = dataset_dir("nnUNet_raw", stage1_id)
    ds1 = json.loads((raw1 / "dataset.json").read_text())
    if list(ds1.get("channel_names", {}).values()) != ["noNorm"]:
        raise CascadeError(f"{raw1} is not a whole-CT clip dataset (channels {ds1.get('channel_names')}; expected one "
                           f"raw-HU 'noNorm' CT channel, as `nnunet-breast convert clips` writes)")
    model = model_dir(stage1_id, trainer, plans, configuration)
    case_ids = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw1 / "imagesTr").glob("*_0000.nii.gz"))
    if not case_ids:
        raise CascadeError(f"{raw1}/imagesTr holds no cases")
    maps = out_of_fold_maps(model, case_ids)

    name = name or f"{raw1.name.split('_', 1)[1]}Stage2"
    raw_root = nnunet_folder("nnUNet_raw")
    existing = sorted(raw_root.glob(f"Dataset{stage2_id:03d}_*"))
    if int(stage2_id) == int(stage1_id):
        raise CascadeError("the stage-2 dataset needs an id of its own (--stage2-id differs from -d)")
    if existing and not overwrite:
        raise CascadeError(f"{existing[0]} exists; pass --overwrite to rebuild it")
    target = raw_root / f"Dataset{stage2_id:03d}_{name}"
    staging = raw_root / f".Dataset{stage2_id:03d}_{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr"):
        (staging / sub).mkdir(parents=True)

    sides = _case_sides(raw1)
    jobs = [(raw1, cid, maps[cid], settings, sides.get(cid) or None, with_map, staging) for cid in case_ids]
    rois = dict(zip(case_ids, map_cases(_crop_case, jobs, num_processes, desc="stage-2 crops", progress=progress)))

    channels = {"0": "noNorm", "1": "noNorm"} if with_map else {"0": "noNorm"}
    ds2 = {"channel_names": channels, "labels": ds1["labels"], "numTraining": len(case_ids),
           "file_ending": ds1.get("file_ending", ".nii.gz"), "name": name,
           "description": f"clip stage 2: ROI crops of {raw1.name} with out-of-fold stage-1 probability maps",
           "nnunet_breast": {"cohort": "clips", "stage": 2,
                             "stage1": {"dataset_id": int(stage1_id), "trainer": trainer, "plans": plans,
                                        "configuration": configuration},
                             "roi": settings.to_json(),
                             "channels": ["CT (raw HU)", "stage-1 clip probability"][: len(channels)]}}
    atomic_write_text(staging / "cascade_rois.json", json.dumps(rois, indent=1))
    if (raw1 / "cohort.csv").is_file():
        shutil.copy2(raw1 / "cohort.csv", staging / "cohort.csv")
    atomic_write_text(staging / "dataset.json", json.dumps(ds2, indent=2))
    for old in existing:
        shutil.rmtree(old)
    staging.rename(target)
    _copy_splits(stage1_id, stage2_id, target.name)
    return PrepareResult(target, rois)


def _copy_splits(stage1_id: int, stage2_id: int, stage2_name: str) -> Path | None:
    """Stage 2 gets stage 1's folds: fold k of stage 2 validates on maps from stage-1 model k."""
    try:
        pre1 = dataset_dir("nnUNet_preprocessed", stage1_id)
    except UserError:
        return None
    splits = pre1 / "splits_final.json"
    if not splits.is_file():
        return None
    pre2 = nnunet_folder("nnUNet_preprocessed") / stage2_name
    pre2.mkdir(parents=True, exist_ok=True)
    shutil.copy2(splits, pre2 / "splits_final.json")
    return pre2 / "splits_final.json"
