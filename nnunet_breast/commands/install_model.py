"""Install a model from `nnunet-breast export-model` into $nnUNet_results, after checking it.

  nnunet-breast install-model model.zip [--overwrite]

Refused with one line (exit 2): a zip from an incompatible package version, missing or altered files, paths that
leave nnUNet_results, a trainer not found through nnUNet_extTrainer, or a model already installed (--overwrite
replaces it). The model folder appears whole or not at all.
"""
from __future__ import annotations

from pathlib import Path

HELP = "install a shared model zip (checked against its manifest) into nnUNet_results"


def add_arguments(p):
    p.add_argument("zip", type=Path)
    p.add_argument("--overwrite", action="store_true", help="replace an installed model of the same name")


def run(args) -> int:
    from nnunet_breast.sharing import install_model

    folder = install_model(args.zip, args.overwrite)
    print(f"installed {folder}")
    return 0
