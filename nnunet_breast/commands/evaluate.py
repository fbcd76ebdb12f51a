"""Per-structure DSC, HD95, HD, ASSD, surface Dice and volumes of nnU-Net outputs against references.

  nnunet-breast evaluate --ref $nnUNet_raw/Dataset501_BreastRT/labelsTr --pred PRED_DIR -d 501 -o OUT [-np 2]

PRED_DIR holds nnU-Net outputs: <case>.npz from --save_probabilities (preferred: overlapping structures kept)
or <case>.nii.gz label maps. Writes OUT/metrics.csv (one row per case x structure), OUT/summary.json and,
for the clip cohort, OUT/clip_detection.csv. Distances follow the surface-distance (DeepMind) convention.
A structure absent from a case's reference (not contoured there) is not evaluated in that case: evaluated
False, NaN scores, left out of summary.json's statistics and counted in n_not_evaluated.
"""
from __future__ import annotations

import os
from pathlib import Path

HELP = "surface metrics (DSC, HD95, ASSD, surface Dice, volumes) -> metrics.csv + summary.json"


def add_arguments(p):
    p.add_argument("--ref", required=True, type=Path, help="reference label maps (the dataset's labelsTr)")
    p.add_argument("--pred", required=True, type=Path, help="nnU-Net predictions (.npz or .nii.gz)")
    p.add_argument("-d", "--dataset-id", required=True, type=int, help="dataset whose dataset.json decodes labels")
    p.add_argument("-o", "--out", required=True, type=Path)
    p.add_argument("-np", "--num-processes", type=int, default=int(os.environ.get("nnUNet_def_n_proc", 2)))
    p.add_argument("--tolerance-mm", type=float, default=2.0, help="surface Dice tolerance (2 mm)")


def run(args) -> int:
    from nnunet_breast.env import dataset_dir
    from nnunet_breast.evaluation.evaluate import evaluate_folder

    summary = evaluate_folder(args.ref, args.pred, dataset_dir("nnUNet_raw", args.dataset_id) / "dataset.json",
                              args.out, args.num_processes, args.tolerance_mm)
    print(f"{summary['n_cases']} cases, mean DSC over structures {summary['mean_dsc']:.3f}; "
          f"{summary['n_not_evaluated']} case x structure not evaluated (reference without the structure); "
          f"wrote {args.out / 'metrics.csv'} and {args.out / 'summary.json'}")
    return 0
