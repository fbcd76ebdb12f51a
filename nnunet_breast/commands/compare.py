"""Compare two trained models on nnU-Net's out-of-fold validation predictions (no extra inference).

  nnunet-breast compare -d 501 --a nnUNetTrainer__nnUNetPlans__3d_fullres \
                               --b nnUNetTrainerEffNetB0__nnUNetPlans__3d_fullres_effnetb0 -o CMP

Per structure and metric (DSC, HD95, ASSD, surface Dice): means, paired difference b - a, win/tie/loss
count of b, Wilcoxon signed-rank p-value. Writes CMP/comparison.csv, comparison.md, comparison.png.
"""
from __future__ import annotations

import os
from pathlib import Path

from nnunet_breast.cli import UserError

HELP = "paired comparison of two models' five-fold validation predictions (Wilcoxon, win/tie/loss)"


def add_arguments(p):
    p.add_argument("-d", "--dataset-id", required=True, type=int)
    p.add_argument("--a", required=True, help="TRAINER__PLANS__CONFIG of the baseline")
    p.add_argument("--b", required=True, help="TRAINER__PLANS__CONFIG of the candidate")
    p.add_argument("-f", "--folds", type=int, nargs="*", help="folds to use (default: all present)")
    p.add_argument("-o", "--out", required=True, type=Path)


def run(args) -> int:
    from nnunet_breast.commands.evaluate import dataset_json_for
    from nnunet_breast.evaluation.compare import compare_models

    results = os.environ.get("nnUNet_results")
    if not results:
        raise UserError("nnUNet_results is not set (see `nnunet-breast env`)")
    dataset_json = dataset_json_for(args.dataset_id)
    try:
        table = compare_models(Path(results) / dataset_json.parent.name, dataset_json.parent / "labelsTr",
                               dataset_json, args.a, args.b, args.out, args.folds)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    dsc = [t for t in table if t["metric"] == "dsc"]
    wins = sum(t["b_wins"] for t in dsc)
    losses = sum(t["b_losses"] for t in dsc)
    print(f"DSC, case x structure: b wins {wins}, loses {losses}; wrote {args.out / 'comparison.md'}")
    return 0
