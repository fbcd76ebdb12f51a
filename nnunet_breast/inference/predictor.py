"""Running a trained nnU-Net model through nnU-Net's own predictor (sliding window, fold ensemble, export).

Nothing here re-implements inference: a :class:`ModelRef` names a results folder the way
``nnUNetv2_predict`` does (dataset, trainer, plans, configuration, folds, checkpoint) and
:func:`predict_files` hands files to ``nnUNetPredictor.predict_from_files``, with nnU-Net's own
preprocessing/export worker processes. Our trainer classes are found through ``nnUNet_extTrainer``,
set here for the process (``nnunet_breast.env``), so the user needs no extra step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from nnunet_breast.env import extended_ext_trainer, model_dir


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

    def describe(self) -> dict:
        return {"dataset_id": self.dataset_id, "trainer": self.trainer, "plans": self.plans,
                "configuration": self.configuration, "folds": list(self.folds) if self.folds else "all available",
                "checkpoint": self.checkpoint}


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_predictor(ref: ModelRef, device: str = "cpu", tile_step_size: float = 0.5, use_mirroring: bool = True,
                   verbose: bool = False):
    """An initialised ``nnUNetPredictor`` for ``ref`` (raises ValueError when the model is missing)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    os.environ["nnUNet_extTrainer"] = extended_ext_trainer()
    folder = ref.folder()
    folds = ref.folds
    if folds is not None:
        missing = [f for f in folds if not (folder / f"fold_{f}" / ref.checkpoint).is_file()]
        if missing:
            raise ValueError(f"{folder}: no {ref.checkpoint} for fold(s) {missing}")
    elif not any(folder.glob(f"fold_*/{ref.checkpoint}")):
        raise ValueError(f"{folder}: no fold has {ref.checkpoint}; train the model first")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("-device cuda requested but no CUDA GPU is visible; use -device cpu")
    if device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=device == "cuda", device=torch.device(device),
                                verbose=verbose, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), folds, ref.checkpoint)
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
