"""Share a trained model as one file: nnU-Net's model zip plus a manifest (versions, trainer, encoding, checksums).

  nnunet-breast export-model -d 501 [-tr nnUNetTrainerEffNetB0 -c 3d_fullres_effnetb0 -f 0 1 2 3 4] -o model.zip
      [--license CC-BY-4.0]

The receiving site installs it with `nnunet-breast install-model model.zip`. Exit 2 when the model or a fold is
missing, or the output file exists.
"""
from __future__ import annotations

from pathlib import Path

HELP = "one-file model sharing: nnU-Net's model zip + our manifest"


def add_arguments(p):
    p.add_argument("-d", "--dataset-id", required=True, type=int)
    p.add_argument("-tr", "--trainer", default="nnUNetTrainerEffNetB0")
    p.add_argument("-c", "--configuration", default="3d_fullres_effnetb0")
    p.add_argument("-p", "--plans", default="nnUNetPlans")
    p.add_argument("-f", "--folds", nargs="+", default=["0", "1", "2", "3", "4"])
    p.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth")
    p.add_argument("--license", default="unspecified", help="license of the model's weights, kept in the manifest")
    p.add_argument("-o", "--output", required=True, type=Path, help="the .zip to write (must not exist)")


def run(args) -> int:
    from nnunet_breast.inference.predictor import folds_arg
    from nnunet_breast.sharing import export_model

    m = export_model(args.dataset_id, args.trainer, args.configuration, args.output, args.plans,
                     folds_arg(args.folds), args.checkpoint, args.license)
    print(f"wrote {args.output}: {m['model']}, folds {m['folds']}, {len(m['files'])} files")
    return 0
