"""Work folders that runs sharing one output folder never take from each other, and a lock for shared files.

Several runs may write into one output folder at once (``-num_parts`` on several machines or processes). Each
gets a work folder of its own, ``PARENT/.work-<random>``, holding an exclusive lock on ``.lock`` inside it
while the run lives (:mod:`filelock`: ``flock``, released by the kernel when the process dies). The folder is
created and locked under another name, then renamed, so a ``.work-*`` folder whose lock can be taken has no
living owner: it was left by a crashed run and the next run removes it. A living run's folder is never touched.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

__all__ = ["private_work_folder", "remove_abandoned_work_folders", "locked"]

PREFIX = ".work-"
LOCK_NAME = ".lock"


def remove_abandoned_work_folders(parent: Path, prefix: str = PREFIX) -> list[Path]:
    """Remove ``parent/<prefix>*`` folders whose owner is gone (their lock is free); returns them."""
    removed = []
    for folder in sorted(Path(parent).glob(prefix + "*")):
        if not folder.is_dir():
            continue
        lock = FileLock(folder / LOCK_NAME)
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):      # in use by a living run, or removed by another run meanwhile
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            lock.release()
    return removed


@contextmanager
def private_work_folder(parent: Path, prefix: str = PREFIX) -> Iterator[Path]:
    """A new, locked work folder of this run under ``parent``, removed when the block ends (also on errors);
    abandoned folders of crashed runs are removed first."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_work_folders(parent, prefix)
    new = Path(tempfile.mkdtemp(prefix=".new" + prefix, dir=parent))
    lock = FileLock(new / LOCK_NAME)
    lock.acquire()
    work = parent / (prefix + new.name[len(".new" + prefix):])
    try:
        new.rename(work)                 # the lock is on the file, not its path: it stays held
        yield work
    finally:
        shutil.rmtree(work if work.exists() else new, ignore_errors=True)
        lock.release()


@contextmanager
def locked(lock_file: Path, timeout: float = 600) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if needed, kept afterwards) for the block."""
    lock = FileLock(lock_file, timeout=timeout)
    with lock:
        yield
