"""The node's DICOM door: a pynetdicom Storage SCP (any storage SOP class, C-ECHO) writing into ``DIR/incoming``.

An instance is acknowledged only once it is on disk: written to ``incoming/.tmp``, flushed, renamed to
``incoming/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A crash before the answer loses nothing the sender thinks
was delivered. UIDs become file names only when they are UIDs (digits and dots), so nothing lands outside DIR.
Associations from calling AE titles outside ``allow`` are rejected; logs name UIDs and AE titles, never patients.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
INCOMING = "incoming"
TMP = ".tmp"


class StorageSCP:
    def __init__(self, root: Path, ae_title: str, host: str, port: int, allow: list[str] | None,
                 lock: threading.Lock):
        self.incoming = Path(root) / INCOMING
        (self.incoming / TMP).mkdir(parents=True, exist_ok=True)
        for f in (self.incoming / TMP).iterdir():            # never acknowledged: the sender will resend
            f.unlink()
        self.ae_title, self.host, self.port, self.allow, self.lock = ae_title, host, port, allow, lock
        self.server = None

    def start(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        if self.allow:
            ae.require_calling_aet = list(self.allow)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_ACCEPTED, self._on_accepted),
                    (evt.EVT_REJECTED, self._on_rejected)]
        self.server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        log.info("DICOM node %s listening on %s:%d%s", self.ae_title, self.host, self.port,
                 f", calling AE titles allowed: {', '.join(self.allow)}" if self.allow else "")

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    @staticmethod
    def _calling(event) -> str:
        return event.assoc.requestor.ae_title.strip()

    def _on_accepted(self, event) -> None:
        log.info("association from %s (%s) accepted", self._calling(event), event.assoc.requestor.address)

    def _on_rejected(self, event) -> None:
        log.warning("association from %s (%s) rejected: calling AE title not allowed", self._calling(event),
                    event.assoc.requestor.address)

    def _on_store(self, event) -> int:
        try:
            ds = event.dataset
            series, sop = str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))
        except Exception as exc:   # undecodable header
            log.warning("C-STORE from %s refused: cannot read the dataset (%s)", self._calling(event), exc)
            return 0xC210
        if not (UID.match(series) and UID.match(sop)):
            log.warning("C-STORE from %s refused: SeriesInstanceUID/SOPInstanceUID missing or not UIDs",
                        self._calling(event))
            return 0xC211
        tmp = self.incoming / TMP / f"{uuid.uuid4().hex}.dcm"
        try:
            with open(tmp, "wb") as f:
                f.write(event.encoded_dataset())
                f.flush()
                os.fsync(f.fileno())
            with self.lock:                  # the node moves complete series away under the same lock
                folder = self.incoming / series
                folder.mkdir(exist_ok=True)
                os.replace(tmp, folder / f"{sop}.dcm")
                os.utime(folder, None)       # the series' last arrival, for the completeness timeout
        except OSError as exc:
            log.error("C-STORE of series %s failed on disk: %s", series, exc)
            tmp.unlink(missing_ok=True)
            return 0xA700                    # out of resources: the sender keeps the instance
        log.debug("stored %s of series %s from %s", sop, series, self._calling(event))
        return 0x0000


def complete_series(root: Path, timeout_s: float, now: float | None = None) -> list[Path]:
    """Series folders under ``root/incoming`` that received nothing for ``timeout_s`` seconds."""
    now = time.time() if now is None else now
    incoming = Path(root) / INCOMING
    if not incoming.is_dir():
        return []
    return [f for f in sorted(incoming.iterdir())
            if f.is_dir() and f.name != TMP and now - f.stat().st_mtime >= timeout_s]
