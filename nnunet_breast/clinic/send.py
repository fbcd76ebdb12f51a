"""Sending results to the department's DICOM nodes (C-STORE, pynetdicom), and the ``AET@HOST:PORT`` spelling.

A destination that is down costs a retry, never the result: :class:`nnunet_breast.clinic.node.Node` keeps the job
in ``sending`` and tries again with :func:`backoff_s` until every destination confirmed every file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pydicom

from nnunet_breast.errors import UserError

AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")     # DICOM AE: <= 16 chars, no backslash, no control chars


def check_ae_title(value: str, what: str = "AE title") -> str:
    if not AE_TITLE.match(value) or not value.strip():
        raise UserError(f"{what} {value!r}: 1-16 printable characters without a backslash")
    return value.strip()


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Destination":
        m = re.match(r"^([^@]+)@(.+):(\d+)$", text)
        if not m or not 0 < int(m.group(3)) < 65536:
            raise UserError(f"--dest {text!r}: expected AET@HOST:PORT, e.g. TPS@10.0.0.5:104")
        return cls(check_ae_title(m.group(1), "--dest AE title"), m.group(2), int(m.group(3)))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def backoff_s(attempts: int, base: float = 10.0, cap: float = 600.0) -> float:
    """Seconds before retry number ``attempts`` (1, 2, ...): doubling from ``base`` up to ``cap``."""
    return min(cap, base * 2 ** max(0, attempts - 1))


def c_store(files: list[Path], dest: Destination, calling_ae: str, timeout_s: float = 30.0) -> None:
    """Send ``files`` in one association; raise :class:`OSError` naming the first failure."""
    from pynetdicom import AE

    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop in sorted({ds.SOPClassUID for ds in datasets}):
        ae.add_requested_context(sop)
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    if not assoc.is_established:
        raise OSError(f"{dest}: association {'rejected' if assoc.is_rejected else 'failed'}")
    try:
        for f, ds in zip(files, datasets):
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise OSError(f"{dest}: no answer to C-STORE of {f.name}")
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):       # success or warning
                raise OSError(f"{dest}: C-STORE of {f.name} refused (status 0x{code:04X})")
    finally:
        assoc.release()
