"""Contour every CT series a TPS exports into a folder (the folder is only read).

  nnunet-breast watch --input EXPORT_DIR --out DIR [--settle 10] [--dest TPS@10.0.0.5:104 ...]
                      + the model options of `predict`
  nnunet-breast watch --status --out DIR

A series is picked up when its files kept their size and time for --settle seconds, copied into a job under DIR
and predicted once (a re-export with other files makes a new job). Results, durability and quarantine as for
`serve`: DIR/jobs/<state>/<job>/, result/ holding predict's output. SIGTERM or Ctrl-C stop it.
"""
from __future__ import annotations

from pathlib import Path

from nnunet_breast.commands import options

HELP = "watch a TPS export folder: predict each new CT series once, optionally send the results"


def add_arguments(p):
    p.add_argument("--input", type=Path, help="the folder the TPS exports into (never modified)")
    p.add_argument("--out", required=True, type=Path, help="jobs and results")
    p.add_argument("--status", action="store_true", help="list the jobs in --out and their states, then exit")
    p.add_argument("--settle", type=float, default=10.0,
                   help="seconds a series' files must stay unchanged before it is predicted (10)")
    p.add_argument("--dest", action="append", default=[], metavar="AET@HOST:PORT",
                   help="also send results here with C-STORE (repeatable)")
    p.add_argument("--ae-title", default="NNUNET_BREAST", help="calling AE title when sending (NNUNET_BREAST)")
    options.add_prediction(p)


def run(args) -> int:
    from nnunet_breast.clinic.node import status_table
    from nnunet_breast.clinic.send import Destination
    from nnunet_breast.clinic.service import watch
    from nnunet_breast.errors import UserError

    if args.status:
        print(status_table(args.out))
        return 0
    if args.input is None:
        raise UserError("--input is required (the folder to watch)")
    watch(args.input, args.out, options.predict_options(args), settle_s=args.settle,
          dests=[Destination.parse(d) for d in args.dest], ae_title=args.ae_title)
    return 0
