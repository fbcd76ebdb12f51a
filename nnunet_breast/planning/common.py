"""Where our configurations go: nnU-Net's own plans files in ``nnUNet_preprocessed/DatasetXXX_*``."""
from __future__ import annotations

import json
from pathlib import Path

from nnunet_breast.errors import UserError
from nnunet_breast.util.files import atomic_write_text

#: every configuration we write exports probabilities with nnU-Net's own torch resampling (its ``*_torchres``
#: planners use the same function), with the default's choice of separate-z: the same logits to 1e-5 and 14-19x
#: faster than the SciPy default on a whole CT, where the default took most of the non-network time
#: (``benchmarks/export_resampling.py``). Training data and validation metrics are unaffected.
TORCH_EXPORT = {"resampling_fn_probabilities": "resample_torch_fornnunet",
                "resampling_fn_probabilities_kwargs": {"is_seg": False, "force_separate_z": None,
                                                       "memefficient_seg_resampling": False}}


def preprocessed_folder(dataset_id: int) -> Path:
    from nnunet_breast.env import dataset_dir

    return dataset_dir("nnUNet_preprocessed", dataset_id)


def read_plans(dataset_id: int, plans_name: str,
               needs: str = "nnUNetv2_plan_and_preprocess -d {id}") -> tuple[Path, dict, dict]:
    """(plans file, plans, its 3d_fullres configuration), or a one-line error saying which stock step to run."""
    plans_file = preprocessed_folder(dataset_id) / f"{plans_name}.json"
    if not plans_file.is_file():
        raise UserError(f"{plans_file} not found: run `{needs.format(id=dataset_id)}` first")
    plans = json.loads(plans_file.read_text())
    base = plans["configurations"].get("3d_fullres")
    if base is None:
        raise UserError(f"{plans_file} has no 3d_fullres configuration to build on")
    return plans_file, plans, base


def write_plans(path: Path, plans: dict) -> None:
    atomic_write_text(path, json.dumps(plans, indent=4))
