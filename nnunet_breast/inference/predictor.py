"""Running a trained nnU-Net model through nnU-Net's own predictor (sliding window, fold ensemble, export).

Nothing here re-implements inference: a :class:`ModelRef` names a results folder the way
``nnUNetv2_predict`` does (dataset, trainer, plans, configuration, folds, checkpoint) and
:func:`predict_files` hands files to ``nnUNetPredictor.predict_from_files``, with nnU-Net's own
preprocessing/export worker processes; :func:`predict_probabilities` hands one in-memory CT to
``predict_single_npy_array`` and keeps the probabilities in memory. Our trainer classes are found through
``nnUNet_extTrainer``, set here for the process (``nnunet_breast.env``), so the user needs no extra step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_breast.clips import CLIP_MODEL_DEFAULTS
from nnunet_breast.env import extended_ext_trainer, model_dir
from nnunet_breast.errors import UserError


@dataclass(frozen=True)
class ModelRef:
    dataset_id: int
    trainer: str
    configuration: str
    plans: str = "nnUNetPlans"
    folds: tuple | None = None            # None: every fold_* with a checkpoint (as nnUNetv2_predict)
    checkpoint: str = "checkpoint_final.pth"

    def folder(self) -> Path:
        return model_dir(self.dataset_id, self.trainer, self.plans, self.configuration)

    def trained_folder(self) -> Path:
        """:meth:`folder`, with a checkpoint in every fold named (any fold when none is); UserError otherwise."""
        folder = self.folder()
        if self.folds is not None:
            missing = [f for f in self.folds if not (folder / f"fold_{f}" / self.checkpoint).is_file()]
            if missing:
                raise UserError(f"{folder}: no {self.checkpoint} for fold(s) {missing}")
        elif not any(folder.glob(f"fold_*/{self.checkpoint}")):
            raise UserError(f"{folder}: no fold has {self.checkpoint}; train the model first")
        return folder

    def describe(self) -> dict:
        return {"dataset_id": self.dataset_id, "trainer": self.trainer, "plans": self.plans,
                "configuration": self.configuration, "folds": list(self.folds) if self.folds else "all available",
                "checkpoint": self.checkpoint}


def folds_arg(values) -> tuple | None:
    """nnU-Net's -f values: ints, or 'all'; None when not given (every trained fold)."""
    if not values:
        return None
    try:
        return tuple(v if v == "all" else int(v) for v in values)
    except ValueError:
        raise UserError(f"folds must be integers or 'all', got {' '.join(map(str, values))}") from None


def clip_model_refs(method: str, dataset_id: int | None, trainer: str | None = None, configuration: str | None = None,
                    stage2_id: int | None = None, stage2_trainer: str | None = None,
                    stage2_configuration: str | None = None, plans: str = "nnUNetPlans", folds=None,
                    stage2_folds=None, checkpoint: str = "checkpoint_final.pth") -> tuple[ModelRef | None, ModelRef | None]:
    """(stage 1 or single-stage model, stage 2) of a clip method, ``None`` where the method has none; a trainer or
    configuration left ``None`` takes the method's default (:data:`nnunet_breast.clips.CLIP_MODEL_DEFAULTS`)."""
    if method == "threshold":
        return None, None
    if method not in ("cascade", "single"):
        raise UserError(f"unknown clip method {method!r}; choose from cascade, single, threshold")
    if dataset_id is None:
        raise UserError(f"the clip method {method} needs the clip dataset its model was trained on (--clips-d)")
    default_tr, default_c = CLIP_MODEL_DEFAULTS["single" if method == "single" else "stage1"]
    stage1 = ModelRef(dataset_id, trainer or default_tr, configuration or default_c, plans, folds_arg(folds),
                      checkpoint)
    if method == "single":
        return stage1, None
    if stage2_id is None:
        raise UserError("the clip cascade needs --stage2-id (the dataset written by `cascade prepare`)")
    default_tr, default_c = CLIP_MODEL_DEFAULTS["stage2"]
    return stage1, ModelRef(stage2_id, stage2_trainer or default_tr, stage2_configuration or default_c, plans,
                            folds_arg(stage2_folds), checkpoint)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_predictor(ref: ModelRef, device: str = "cpu", tile_step_size: float = 0.5, use_mirroring: bool = True,
                   verbose: bool = False, fast_path: str = "box"):
    """An initialised ``nnUNetPredictor`` for ``ref`` (raises UserError when the model is missing); ``fast_path``:
    the tiling of :class:`~nnunet_breast.inference.fast_path.FastPathPredictor` (the body's patches only; bf16 on
    capable CPUs), or "off" for nnU-Net's predictor unchanged."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_breast.inference.fast_path import TILINGS, FastPathPredictor

    if fast_path not in (*TILINGS, "off"):
        raise ValueError(f"fast_path must be one of {TILINGS} or 'off', not {fast_path!r}")
    os.environ["nnUNet_extTrainer"] = extended_ext_trainer()
    folder = ref.trained_folder()
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("-device cuda requested but no CUDA GPU is visible; use -device cpu")
    if device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    predictor_class = nnUNetPredictor if fast_path == "off" else FastPathPredictor
    predictor = predictor_class(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=device == "cuda", device=torch.device(device),
                                verbose=verbose, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), ref.folds, ref.checkpoint)
    if fast_path != "off":
        predictor.tiling = fast_path
    return predictor


def predict_files(predictor, inputs: Sequence[Sequence[Path]], outputs: Sequence[Path], save_probabilities: bool,
                  num_processes_preprocessing: int = 1, num_processes_export: int = 1) -> None:
    """``inputs[i]`` (one file per channel) -> ``outputs[i]`` + file ending (.nii.gz, and .npz with probabilities).

    ``outputs`` are truncated names (no ending), as nnU-Net takes them.
    """
    if not inputs:
        return
    for out in outputs:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files([[str(p) for p in case] for case in inputs], [str(o) for o in outputs],
                                 save_probabilities=save_probabilities, overwrite=True,
                                 num_processes_preprocessing=num_processes_preprocessing,
                                 num_processes_segmentation_export=num_processes_export)


def predict_probabilities(predictor, image) -> tuple[tuple, np.ndarray]:
    """One CT (SimpleITK image in the layout the model learnt) -> (box, nnU-Net's probabilities [c, *box]): the
    probabilities on the CT's [z, y, x] grid inside ``box`` (slices; the whole grid unless the fast path cropped
    the CT to the body), background outside.

    In this process, through ``nnUNetPredictor.predict_single_npy_array`` (nnU-Net's preprocessing, sliding window
    and export, the array read as nnU-Net's ``SimpleITKIO`` reads a file): the file route would write a planning
    CT's 20 probability maps, gigabytes, compressed to disk and read them back.
    """
    import SimpleITK as sitk

    from nnunet_breast.inference.fast_path import FastPathPredictor

    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)[None]
    props = {"spacing": list(image.GetSpacing())[::-1]}
    if isinstance(predictor, FastPathPredictor):
        box, _, probabilities = predictor.predict_in_body_box(array, props, True)
        return box, probabilities
    _, probabilities = predictor.predict_single_npy_array(array, props, None, None, True)
    return tuple(slice(0, n) for n in array.shape[1:]), probabilities
