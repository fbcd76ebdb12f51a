"""Where the node's jobs come from: series received by the DICOM node, or series a TPS exports into a folder.

Both turn a *complete* series into a queued job (:mod:`nnunet_breast.clinic.jobs`); a series is complete when it
stopped changing for a while (DICOM has no "end of series" message):

* :class:`ReceivedSeries`: ``DIR/incoming/<series>`` received nothing for ``timeout_s``; the folder is moved into
  the job whole, under the lock the SCP writes with.
* :class:`WatchedFolder`: every file of the series kept its size and time for ``settle_s`` and one scan. The
  files are copied (the folder is only read); a series is predicted once per content: a job remembers its files'
  signature, and a re-export that changes them makes a new job. A TPS exports structure sets, plans and doses
  next to the CT: series of those modalities are left alone; any other series (MR, a broken CT) becomes a job and
  is quarantined with its reason, as on the DICOM node.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pydicom

from nnunet_breast.clinic.jobs import Job, JobStore
from nnunet_breast.clinic.scp import complete_series

log = logging.getLogger(__name__)
HEADER_TAGS = ["StudyInstanceUID", "SeriesInstanceUID", "Modality"]
ACCOMPANYING = {"RTSTRUCT", "RTPLAN", "RTDOSE", "RTIMAGE", "RTRECORD", "REG", "SEG", "PR", "KO", "SR", "DOC"}


class ReceivedSeries:
    def __init__(self, root: Path, timeout_s: float, lock: threading.Lock, origin: str = "dicom node"):
        self.root, self.timeout_s, self.lock, self.origin = Path(root), timeout_s, lock, origin

    def collect(self, store: JobStore) -> list[Job]:
        jobs = []
        for folder in complete_series(self.root, self.timeout_s):
            with self.lock:                  # the SCP adds instances under the same lock
                if time.time() - folder.stat().st_mtime < self.timeout_s:     # an instance arrived meanwhile
                    continue
                files = sorted(folder.glob("*.dcm"))
                study = (_header(files[0]) or {}).get("StudyInstanceUID", "") if files else ""
                job = store.new_job(folder.name, study, self.origin, instances=len(files))
                os.replace(folder, job.series)
            jobs.append(store.enqueue(job))
        return jobs


class WatchedFolder:
    def __init__(self, folder: Path, settle_s: float):
        self.folder, self.settle_s = Path(folder), settle_s
        self._headers: dict[Path, tuple[tuple, dict | None]] = {}    # file -> (size, mtime), header or None
        self._last: dict[str, str] = {}                               # series -> signature at the previous scan

    def _scan(self) -> dict[str, list[tuple[Path, os.stat_result]]]:
        series: dict[str, list] = {}
        seen = {}
        for path in sorted(self.folder.rglob("*")):
            if path.name.startswith(".") or not path.is_file():
                continue
            st = path.stat()
            key = (st.st_size, st.st_mtime_ns)
            cached = self._headers.get(path)
            if cached is None or cached[0] != key:
                cached = (key, _header(path))
            seen[path] = cached
            if cached[1] and cached[1].get("SeriesInstanceUID"):
                series.setdefault(cached[1]["SeriesInstanceUID"], []).append((path, st))
        self._headers = seen                                          # forget files that are gone
        return series

    def signature(self, files: list[tuple[Path, os.stat_result]]) -> str:
        h = hashlib.sha1()
        for path, st in files:
            h.update(f"{path.relative_to(self.folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def collect(self, store: JobStore) -> list[Job]:
        done = {(j.info.get("series_uid"), j.info.get("signature")) for j in store.all_jobs()}
        now, jobs, current = time.time(), [], {}
        for uid, files in self._scan().items():
            sig = current[uid] = self.signature(files)
            settled = all(now - st.st_mtime >= self.settle_s for _, st in files) and self._last.get(uid) == sig
            headers = [self._headers[path][1] for path, _ in files]
            if not settled or (uid, sig) in done or {h["Modality"] for h in headers} <= ACCOMPANYING:
                continue
            study = headers[0].get("StudyInstanceUID", "")
            job = store.new_job(uid, str(study), f"watch folder {self.folder}", instances=len(files), signature=sig)
            part = job.folder / "series.part"
            part.mkdir()
            for k, (path, _) in enumerate(files):
                shutil.copyfile(path, part / f"{k:05d}.dcm")
            part.rename(job.series)
            jobs.append(store.enqueue(job))
        self._last = current
        return jobs


def _header(path: Path) -> dict | None:
    """The few header values the node routes by; None for a file that is not DICOM."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
    except Exception:   # not DICOM, or damaged: not ours to route
        return None
    return {t: str(ds.get(t, "")) for t in HEADER_TAGS}
