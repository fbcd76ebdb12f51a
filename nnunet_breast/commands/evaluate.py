"""Per-structure DSC, HD95, HD, ASSD, surface Dice and volumes of nnU-Net outputs against references.

  nnunet-breast evaluate --ref $nnUNet_raw/Dataset501_BreastRT/labelsTr --pred PRED_DIR -d 501 -o OUT [-np 2]

PRED_DIR holds nnU-Net outputs: <case>.npz from --save_probabilities (preferred: overlapping structures kept)
or <case>.nii.gz label maps. Writes OUT/metrics.csv (one row per case x structure), OUT/summary.json and,
for the clip cohort, OUT/clip_detection.csv. Distances follow the surface-distance (DeepMind) convention.
"""
from __future__ import annotations

import os
from pathlib import Path

from nnunet_breast.cli import UserError

HELP = "surface metrics (DSC, HD95, ASSD, surface Dice, volumes) -> metrics.csv + summary.json"


def add_arguments(p):
    p.add_argument("--ref", required=True, type=Path, help="reference label maps (the dataset's labelsTr)")
    p.add_argument("--pred", required=True, type=Path, help="nnU-Net predictions (.npz or .nii.gz)")
    p.add_argument("-d", "--dataset-id", required=True, type=int, help="dataset whose dataset.json decodes labels")
    p.add_argument("-o", "--out", required=True, type=Path)
    p.add_argument("-np", "--num-processes", type=int, default=int(os.environ.get("nnUNet_def_n_proc", 2)))
    p.add_argument("--tolerance-mm", type=float, default=2.0, help="surface Dice tolerance (2 mm)")


def dataset_json_for(dataset_id: int) -> Path:
    from nnunet_breast.env import dataset_dir

    try:
        return dataset_dir("nnUNet_raw", dataset_id) / "dataset.json"
    except ValueError as e:
        raise UserError(str(e)) from None


def run(args) -> int:
    from nnunet_breast.evaluation.evaluate import evaluate_folder

    for folder in (args.ref, args.pred):
        if not folder.is_dir():
            raise UserError(f"{folder} is not a folder")
    try:
        summary = evaluate_folder(args.ref, args.pred, dataset_json_for(args.dataset_id), args.out,
                                  args.num_processes, args.tolerance_mm)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    print(f"{summary['n_cases']} cases, mean DSC over structures {summary['mean_dsc']:.3f}; "
          f"wrote {args.out / 'metrics.csv'} and {args.out / 'summary.json'}")
    return 0
