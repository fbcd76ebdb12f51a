"""Writing result files so that a reader never sees half a file: write a temporary sibling, then rename.

The temporary file is unique (``tempfile.mkstemp`` in the target's folder, so two writers never share it
and the rename stays on one file system), flushed to disk, given ``mode`` (mkstemp makes 0600; result
folders are often shared by a group) and moved into place with ``os.replace``. A reader, e.g. a trainer
starting concurrently, sees the old file or the complete new one; a failed write leaves no temporary file.
"""
from __future__ import annotations

import csv
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_open", "atomic_write_text", "atomic_write_csv"]


@contextmanager
def atomic_open(path: Path, newline: str | None = None, mode: int = 0o644):
    """Text file handle (UTF-8) whose content replaces ``path`` when the block ends without an exception."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str, newline: str | None = None) -> None:
    """Write ``text`` to ``path`` atomically; ``newline`` as for :func:`open` (``""``: no translation)."""
    with atomic_open(path, newline=newline) as f:
        f.write(text)


def atomic_write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """CSV with a header; keys of ``rows`` outside ``columns`` are ignored."""
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
