"""Paper-style tables and box plots from `nnunet-breast evaluate` output.

  nnunet-breast report --metrics EVAL/metrics.csv -d 501 --by contrast,site -o REPORT

Writes REPORT/table.md and table.csv (mean ± SD (n) of DSC and HD95 per structure, overall and per
subgroup of the dataset's cohort.csv) and REPORT/boxplot_dsc.png, boxplot_hd95.png. Cases whose reference
lacks a structure (not contoured there) are left out and counted ("k not evaluated"; table.csv
"<group> n_not_evaluated").
"""
from __future__ import annotations

from pathlib import Path

HELP = "mean/SD tables per structure and subgroup (Markdown, CSV) and box plots (PNG)"


def add_arguments(p):
    p.add_argument("--metrics", required=True, type=Path, help="metrics.csv from nnunet-breast evaluate")
    p.add_argument("-d", "--dataset-id", type=int, help="dataset whose cohort.csv gives the subgroups")
    p.add_argument("--by", default="", help="cohort.csv columns to split by, e.g. contrast,site,side")
    p.add_argument("-o", "--out", required=True, type=Path)


def run(args) -> int:
    from nnunet_breast.env import dataset_dir
    from nnunet_breast.evaluation.report import write_report

    cohort = dataset_dir("nnUNet_raw", args.dataset_id) / "cohort.csv" if args.dataset_id else None
    files = write_report(args.metrics, cohort, args.out, [k for k in args.by.split(",") if k])
    for kind, path in files.items():
        print(f"{kind}: {path}")
    return 0
