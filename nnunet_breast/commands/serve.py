"""A DICOM node for the department's network: CT series in, auto-contours back to the TPS.

  nnunet-breast serve --out DIR --port 11112 --ae-title NNUNET [--host 127.0.0.1] [--allow CT1,TPS]
                      [--dest TPS@10.0.0.5:104 ...] [--series-timeout 10]  + the model options of `predict`
  nnunet-breast serve --status --out DIR

C-STORE any series to the node (C-ECHO answered). A series is complete when nothing of it arrived for
--series-timeout seconds; it is then predicted exactly as `predict` would, the RTSTRUCT (and SEG with --seg)
kept under DIR/jobs/done/<job>/result/ and sent to every --dest (retried with back-off until confirmed).
Jobs live on disk (DIR/jobs/<state>/): a restart, also after kill -9, resumes them. A series that is not a usable
CT goes to DIR/jobs/quarantine/<job>/ with reason.txt. Only calling AE titles in --allow are accepted (when
given); the node listens on 127.0.0.1 unless --host says otherwise. SIGTERM or Ctrl-C stop it.
"""
from __future__ import annotations

from pathlib import Path

from nnunet_breast.commands import options

HELP = "run a DICOM node: receive CTs, predict, send RTSTRUCT/SEG to the TPS"


def add_arguments(p):
    p.add_argument("--out", required=True, type=Path, help="the node's folder: received series, jobs, results")
    p.add_argument("--status", action="store_true", help="list the jobs in --out and their states, then exit")
    n = p.add_argument_group("DICOM node")
    n.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    n.add_argument("--port", type=int, default=11112)
    n.add_argument("--ae-title", default="NNUNET_BREAST", help="the node's AE title (NNUNET_BREAST)")
    n.add_argument("--allow", help="comma-separated calling AE titles accepted (default: any)")
    n.add_argument("--dest", action="append", default=[], metavar="AET@HOST:PORT",
                   help="send results here (repeatable)")
    n.add_argument("--series-timeout", type=float, default=10.0,
                   help="seconds without a new instance after which a series is complete (10)")
    options.add_prediction(p)


def run(args) -> int:
    from nnunet_breast.clinic.node import status_table
    from nnunet_breast.clinic.send import Destination
    from nnunet_breast.clinic.service import serve

    if args.status:
        print(status_table(args.out))
        return 0
    allow = [a.strip() for a in args.allow.split(",") if a.strip()] if args.allow else None
    serve(args.out, options.predict_options(args), port=args.port, ae_title=args.ae_title, host=args.host,
          allow=allow, dests=[Destination.parse(d) for d in args.dest], series_timeout_s=args.series_timeout)
    return 0
