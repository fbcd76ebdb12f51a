"""Compare two trained models on nnU-Net's out-of-fold validation predictions (no extra inference).

  nnunet-breast compare -d 501 --a nnUNetTrainer__nnUNetPlans__3d_fullres \
                               --b nnUNetTrainerEffNetB0__nnUNetPlans__3d_fullres_effnetb0 -o CMP

Per structure and metric (DSC, HD95, ASSD, surface Dice): means, paired difference b - a, win/tie/loss
count of b, Wilcoxon signed-rank p-value. Cases whose reference lacks a structure (not contoured there) are
left out of that structure's comparison and counted (n_not_evaluated), as are NaN values (n_undefined).
Writes CMP/comparison.csv, comparison.md, comparison.png.
"""
from __future__ import annotations

from pathlib import Path

HELP = "paired comparison of two models' five-fold validation predictions (Wilcoxon, win/tie/loss)"


def add_arguments(p):
    p.add_argument("-d", "--dataset-id", required=True, type=int)
    p.add_argument("--a", required=True, help="TRAINER__PLANS__CONFIG of the baseline")
    p.add_argument("--b", required=True, help="TRAINER__PLANS__CONFIG of the candidate")
    p.add_argument("-f", "--folds", type=int, nargs="*", help="folds to use (default: all present)")
    p.add_argument("-o", "--out", required=True, type=Path)


def run(args) -> int:
    from nnunet_breast.env import dataset_dir, nnunet_folder
    from nnunet_breast.evaluation.compare import compare_models

    raw = dataset_dir("nnUNet_raw", args.dataset_id)
    table = compare_models(nnunet_folder("nnUNet_results") / raw.name, raw / "labelsTr", raw / "dataset.json",
                           args.a, args.b, args.out, args.folds)
    dsc = [t for t in table if t["metric"] == "dsc"]
    wins = sum(t["b_wins"] for t in dsc)
    losses = sum(t["b_losses"] for t in dsc)
    left_out = sum(t["n_not_evaluated"] for t in dsc)
    print(f"DSC, case x structure: b wins {wins}, loses {losses}; {left_out} not evaluated (reference without the "
          f"structure), left out; wrote {args.out / 'comparison.md'}")
    return 0
