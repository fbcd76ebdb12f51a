"""Where nnU-Net looks for things, and the environment this plugin needs (``nnunet-breast env``)."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from nnunet_breast.errors import UserError

NNUNET_PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def ext_trainer_folder() -> Path:
    """The folder to put in ``nnUNet_extTrainer``: it re-exports this package's trainer classes."""
    return Path(__file__).resolve().parent / "ext_trainers"


def extended_ext_trainer(current: str | None = None) -> str:
    """``nnUNet_extTrainer`` with our folder added (kept once, other folders preserved)."""
    ours = str(ext_trainer_folder())
    parts = [p for p in (current if current is not None else os.environ.get("nnUNet_extTrainer", "")).split(os.pathsep) if p]
    return os.pathsep.join(parts if ours in parts else parts + [ours])


def check_paths(environ=os.environ) -> list[tuple[str, str, str]]:
    """(variable, value, problem or 'ok') for nnU-Net's three folders."""
    rows = []
    for var in NNUNET_PATH_VARS:
        value = environ.get(var, "")
        if not value:
            rows.append((var, "", "not set"))
        elif not Path(value).is_dir():
            rows.append((var, value, "folder does not exist"))
        elif not os.access(value, os.W_OK):
            rows.append((var, value, "not writable"))
        else:
            rows.append((var, value, "ok"))
    return rows


def shell_exports(environ=os.environ) -> str:
    return f"export nnUNet_extTrainer={shlex.quote(extended_ext_trainer(environ.get('nnUNet_extTrainer', '')))}"


def child_environ(**overrides: str) -> dict[str, str]:
    """Environment for running stock nnU-Net commands in a subprocess with our trainers visible."""
    env = dict(os.environ)
    env.update(overrides)
    env["nnUNet_extTrainer"] = extended_ext_trainer(env.get("nnUNet_extTrainer", ""))
    return env


def nnunet_folder(var: str) -> Path:
    """One of nnU-Net's three folders, read now (nnunetv2.paths reads them once, at import)."""
    value = os.environ.get(var, "")
    if not value:
        raise UserError(f"{var} is not set (see `nnunet-breast env`)")
    return Path(value)


def dataset_dir(var: str, dataset_id: int) -> Path:
    """``$var/DatasetXXX_Name`` of an existing dataset; UserError naming what is there otherwise."""
    root = nnunet_folder(var)
    found = sorted(root.glob(f"Dataset{int(dataset_id):03d}_*")) if root.is_dir() else []
    if not found:
        raise UserError(f"no dataset {dataset_id} in {var}={root} (no Dataset{int(dataset_id):03d}_* folder)")
    if len(found) > 1:
        raise UserError(f"dataset {dataset_id} in {var}={root}: several folders, {', '.join(p.name for p in found)}")
    return found[0]


def model_dir(dataset_id: int, trainer: str, plans: str, configuration: str) -> Path:
    """nnU-Net's results folder of one trained model (``<trainer>__<plans>__<configuration>``)."""
    hint = f"train it with `nnUNetv2_train {dataset_id} {configuration} FOLD -tr {trainer} -p {plans}`"
    try:
        folder = dataset_dir("nnUNet_results", dataset_id) / f"{trainer}__{plans}__{configuration}"
    except UserError as e:
        raise UserError(f"no trained model for dataset {dataset_id} ({e}); {hint}") from None
    if not folder.is_dir():
        raise UserError(f"no trained model at {folder}: {hint}")
    return folder
