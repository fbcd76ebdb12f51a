"""Write nnU-Net's splits_final.json for a converted dataset, stratified by cohort.csv columns.

  nnunet-breast splits -d 501 --stratify contrast,site [--folds 5] [--seed 12345]

Creates $nnUNet_preprocessed/DatasetXXX_Name/ if planning has not run yet; stock nnUNetv2_train then
uses these folds. Each fold's validation set holds every stratum as evenly as possible.
"""
from __future__ import annotations

import csv

from nnunet_breast.errors import UserError

HELP = "stratified five-fold splits_final.json for nnU-Net"


def add_arguments(p):
    p.add_argument("-d", "--dataset-id", required=True, type=int)
    p.add_argument("--stratify", default="", help="comma-separated cohort.csv columns, e.g. site,contrast")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=12345)


def run(args) -> int:
    from nnunet_breast.dataset_conversion.splits import strata_from_table, stratified_splits, write_splits
    from nnunet_breast.env import dataset_dir, nnunet_folder

    raw = dataset_dir("nnUNet_raw", args.dataset_id)
    pre = nnunet_folder("nnUNet_preprocessed")
    table = raw / "cohort.csv"
    if not table.is_file():
        raise UserError(f"{table} is missing: convert the dataset with `nnunet-breast convert` first")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in args.stratify.split(",") if k]
    strata = strata_from_table(rows, keys) if keys else ["all"] * len(rows)
    splits = stratified_splits([r["case_id"] for r in rows], strata, args.folds, args.seed)
    out = write_splits(pre / raw.name, splits)
    print(f"wrote {out}: {args.folds} folds over {len(rows)} cases, strata: {', '.join(sorted(set(strata)))}")
    return 0
