"""Show what nnU-Net needs to see this plugin, and check nnU-Net's three folders.

Put our trainers on nnU-Net's search path in the current shell with:

    eval "$(nnunet-breast env --shell)"
"""
from __future__ import annotations

import importlib.metadata as md
import os

from nnunet_breast import env

HELP = "print the nnUNet_extTrainer export line and check nnUNet_raw/preprocessed/results"


def add_arguments(p):
    p.add_argument("--shell", action="store_true", help="print only the export line(s), for eval")
    p.add_argument("--strict", action="store_true", help="exit 1 when an nnU-Net folder is unset or unusable")


def run(args) -> int:
    exports = env.shell_exports()
    if args.shell:
        print(exports)
        return 0
    print("# make nnU-Net find the nnunet_breast trainers:")
    print(exports)
    print()
    rows = env.check_paths()
    for var, value, state in rows:
        print(f"{var:20s} {state:22s} {value}")
    current = os.environ.get("nnUNet_extTrainer", "")
    state = "ok" if str(env.ext_trainer_folder()) in current.split(os.pathsep) else "not set (run the export above)"
    print(f"{'nnUNet_extTrainer':20s} {state}")
    versions = {pkg: _version(pkg) for pkg in ("nnunetv2", "torch", "dynamic-network-architectures", "pydicom",
                                               "SimpleITK", "nnunet-breast")}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print("CPU-only machine? also: export nnUNet_def_n_proc=2, pass -device cpu, and on 2 cores train with "
          "nnUNet_n_proc_DA=0 nnUNetv2_train ... (augmentation in the training process)")
    bad = [r for r in rows if r[2] != "ok"]
    return 1 if (args.strict and bad) else 0


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "missing"
