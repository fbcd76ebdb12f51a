"""The node's jobs on disk: one folder per CT series, its state the folder it sits in.

``DIR/jobs/<state>/<job>/`` holds ``job.json`` (what the job is and what happened to it), ``series/`` (the CT's
instances, a copy the job owns) and, once predicted, ``result/`` (``predict``'s output folder). A job changes
state by one ``os.replace`` of its folder, so after a crash, ``kill -9`` included, every job is in exactly one
state and nothing is half-moved:

* ``queued`` -> ``running`` -> ``sending`` (results to C-STORE) -> ``done``;
* ``quarantine`` (the input is unusable: not a CT, a missing slice, a voxel size the model refuses) and
  ``failed`` (an unexpected error; the traceback is in the log) with a one-line ``reason.txt``.

A job is first assembled in ``jobs/.new/<job>/`` and renamed into ``queued`` once its series is complete;
:meth:`JobStore.recover` finishes or removes what a crash left there and puts ``running`` jobs back in the queue.
The job's id starts with its creation time, so jobs run in the order their series were complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from nnunet_breast.util.files import atomic_write_text

STATES = ("queued", "running", "sending", "done", "failed", "quarantine")
NEW = ".new"
JOB_JSON = "job.json"
REASON = "reason.txt"


@dataclass
class Job:
    folder: Path
    info: dict

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def state(self) -> str:
        return self.folder.parent.name

    @property
    def series(self) -> Path:
        return self.folder / "series"

    @property
    def result(self) -> Path:
        return self.folder / "result"

    def save(self) -> None:
        atomic_write_text(self.folder / JOB_JSON, json.dumps(self.info, indent=2))

    def describe(self) -> str:
        """For logs: the job and its UIDs, never the patient's name."""
        return f"job {self.id} (study {self.info.get('study_uid', '?')}, series {self.info.get('series_uid', '?')})"


class JobStore:
    def __init__(self, root: Path):
        self.root = Path(root) / "jobs"
        for state in (NEW, *STATES):
            (self.root / state).mkdir(parents=True, exist_ok=True)

    def new_job(self, series_uid: str, study_uid: str, origin: str, **info) -> Job:
        """An empty job in ``.new``; fill ``series/`` and call :meth:`enqueue`."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        base = f"{stamp}-{hashlib.sha1(series_uid.encode()).hexdigest()[:8]}"
        for n in range(1000):          # a job id is unique over every state: the same series may come twice
            name = base if n == 0 else f"{base}-{n}"
            if any((self.root / state / name).exists() for state in STATES):
                continue
            folder = self.root / NEW / name
            try:
                folder.mkdir()
                break
            except FileExistsError:
                continue
        job = Job(folder, {"series_uid": series_uid, "study_uid": study_uid, "origin": origin,
                           "created": time.time(), "attempts": 0, "sent": {}, **info})
        job.save()
        return job

    def enqueue(self, job: Job) -> Job:
        return self.move(job, "queued")

    def move(self, job: Job, state: str, reason: str | None = None) -> Job:
        if reason is not None:
            job.info["reason"] = reason
            atomic_write_text(job.folder / REASON, reason + "\n")
            job.save()
        target = self.root / state / job.id
        os.replace(job.folder, target)
        return Job(target, job.info)

    def jobs(self, state: str) -> list[Job]:
        out = []
        for folder in sorted((self.root / state).iterdir()):
            f = folder / JOB_JSON
            if folder.is_dir() and f.is_file():
                out.append(Job(folder, json.loads(f.read_text())))
        return out

    def all_jobs(self) -> list[Job]:
        return sorted((j for s in STATES for j in self.jobs(s)), key=lambda j: j.id)

    def recover(self) -> list[str]:
        """Undo what a crash left: running jobs back to the queue; a ``.new`` job whose series is complete is
        queued, one without (its source still holds the instances) removed. Returns log lines."""
        lines = []
        for job in self.jobs("running"):      # predict keeps a finished case and clears its own partial work
            self.move(job, "queued")
            lines.append(f"{job.describe()} was interrupted while running: queued again")
        for folder in sorted((self.root / NEW).iterdir()):
            job_json = folder / JOB_JSON
            if (folder / "series").is_dir() and job_json.is_file():
                job = self.enqueue(Job(folder, json.loads(job_json.read_text())))
                lines.append(f"{job.describe()} was complete but not queued: queued")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        return lines
