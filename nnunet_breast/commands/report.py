"""Paper-style tables and box plots from `nnunet-breast evaluate` output.

  nnunet-breast report --metrics EVAL/metrics.csv -d 501 --by contrast,site -o REPORT

Writes REPORT/table.md and table.csv (mean ± SD (n) of DSC and HD95 per structure, overall and per
subgroup of the dataset's cohort.csv) and REPORT/boxplot_dsc.png, boxplot_hd95.png.
"""
from __future__ import annotations

from pathlib import Path

from nnunet_breast.cli import UserError

HELP = "mean/SD tables per structure and subgroup (Markdown, CSV) and box plots (PNG)"


def add_arguments(p):
    p.add_argument("--metrics", required=True, type=Path, help="metrics.csv from nnunet-breast evaluate")
    p.add_argument("-d", "--dataset-id", type=int, help="dataset whose cohort.csv gives the subgroups")
    p.add_argument("--by", default="", help="cohort.csv columns to split by, e.g. contrast,site,side")
    p.add_argument("-o", "--out", required=True, type=Path)


def run(args) -> int:
    from nnunet_breast.commands.evaluate import dataset_json_for
    from nnunet_breast.evaluation.report import write_report

    if not args.metrics.is_file():
        raise UserError(f"{args.metrics} not found")
    cohort = dataset_json_for(args.dataset_id).parent / "cohort.csv" if args.dataset_id else None
    try:
        files = write_report(args.metrics, cohort, args.out, [k for k in args.by.split(",") if k])
    except ValueError as e:
        raise UserError(str(e)) from None
    for kind, path in files.items():
        print(f"{kind}: {path}")
    return 0
