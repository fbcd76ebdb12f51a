"""``serve`` and ``watch`` as library calls: build the node's sources, run its loop until ``stop`` is set.

Ctrl-C or SIGTERM end the process at any point, as a crash would: a job interrupted mid-prediction stays
``running`` on disk and is redone at the next start (:meth:`nnunet_breast.clinic.jobs.JobStore.recover`).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from nnunet_breast.clinic.node import Node, check_models
from nnunet_breast.clinic.scp import StorageSCP
from nnunet_breast.clinic.send import Destination, check_ae_title
from nnunet_breast.clinic.sources import ReceivedSeries, WatchedFolder
from nnunet_breast.errors import UserError
from nnunet_breast.inference.inputs import check_output_outside
from nnunet_breast.inference.predict import PredictOptions

log = logging.getLogger(__name__)


def _check(opts: PredictOptions) -> None:
    if opts.rtstruct_settings is not None and opts.rtstruct_settings.add_to:
        raise UserError("--add-to names one structure set per CT; a node receives CTs it does not know yet")
    check_models(opts)


def serve(root: Path, opts: PredictOptions, *, port: int, ae_title: str, host: str = "127.0.0.1",
          allow: list[str] | None = None, dests: list[Destination] = (), series_timeout_s: float = 10.0,
          stop: threading.Event | None = None, poll_s: float = 1.0) -> None:
    """A DICOM node on ``host:port``: CT series in, RTSTRUCT (SEG) out to ``dests``, jobs under ``root``."""
    ae_title = check_ae_title(ae_title, "--ae-title")
    allow = [check_ae_title(a, "--allow") for a in allow or []]
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: expected 1-65535")
    if not series_timeout_s > 0:
        raise UserError(f"--series-timeout must be > 0 s, got {series_timeout_s}")
    _check(opts)
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)     # a line per instance otherwise
    lock = threading.Lock()
    stop = stop or threading.Event()
    with Node(root, opts, [ReceivedSeries(root, series_timeout_s, lock)], dests, ae_title) as node:
        scp = StorageSCP(root, ae_title, host, port, allow, lock)
        try:
            scp.start()
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        try:
            node.run(stop, poll_s)
        finally:
            scp.stop()


def watch(folder: Path, root: Path, opts: PredictOptions, *, settle_s: float = 10.0,
          dests: list[Destination] = (), ae_title: str = "NNUNET_BREAST", stop: threading.Event | None = None,
          poll_s: float = 2.0) -> None:
    """Predict every CT series a TPS exports into ``folder`` (only read), once per content; jobs under ``root``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--input {folder} is not a folder")
    check_output_outside(folder, root)
    if not settle_s > 0:
        raise UserError(f"--settle must be > 0 s, got {settle_s}")
    _check(opts)
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    with Node(root, opts, [WatchedFolder(folder, settle_s)], dests, check_ae_title(ae_title, "--ae-title")) as node:
        log.info("watching %s", folder)
        node.run(stop or threading.Event(), poll_s)
