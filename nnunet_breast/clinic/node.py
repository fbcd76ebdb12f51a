"""The clinic's job loop, shared by ``serve`` (a DICOM node) and ``watch`` (a folder a TPS exports into).

One loop, one job at a time (a prediction uses every core): collect complete series into queued jobs, predict
the oldest queued job exactly as ``nnunet-breast predict`` does (into the job's ``result/``), send the RTSTRUCT
(and SEG) to every destination, retrying with back-off until each confirmed. Everything lives on disk under
``DIR`` (:mod:`nnunet_breast.clinic.jobs`), so a restart, also after ``kill -9``, resumes where the node stopped.
A bad series never stops the node: it goes to ``quarantine`` with its reason. One node per ``DIR`` (a lock).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from filelock import FileLock, Timeout

from nnunet_breast.clinic.jobs import STATES, Job, JobStore
from nnunet_breast.clinic.send import Destination, backoff_s, c_store
from nnunet_breast.errors import UserError
from nnunet_breast.inference.predict import PredictOptions, predict, validate_options

log = logging.getLogger(__name__)
LOCK = "node.lock"


def check_models(opts: PredictOptions) -> None:
    """Refuse to start a node whose models cannot predict (every job would fail)."""
    validate_options(opts)
    for ref in opts.model_refs().values():
        ref.trained_folder()


class Node:
    def __init__(self, root: Path, opts: PredictOptions, sources: list, dests: list[Destination] = (),
                 ae_title: str = "NNUNET_BREAST"):
        self.root, self.opts, self.sources, self.dests, self.ae_title = Path(root), opts, sources, list(dests), ae_title
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.root)
        self._lock = FileLock(self.root / LOCK)

    def __enter__(self) -> "Node":
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise UserError(f"another node is running on {self.root} (its lock {self.root / LOCK} is held)") from None
        for line in self.store.recover():
            log.warning(line)
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def run(self, stop: threading.Event, poll_s: float = 1.0, retry_s: float = 30.0) -> None:
        """Steps until ``stop``; an unexpected error in one (a full disk, a bug) is logged with its traceback and
        the loop goes on after ``retry_s``: the node keeps receiving, and jobs stay on disk in their state."""
        while not stop.is_set():
            try:
                busy = self.step()
            except Exception:
                log.exception("the job loop failed; trying again in %.0f s", retry_s)
                stop.wait(retry_s)
                continue
            if not busy:
                stop.wait(poll_s)

    def step(self) -> bool:
        """Collect, predict one job, send what is due; True when something was done."""
        busy = False
        for source in self.sources:
            for job in source.collect(self.store):
                log.info("%s queued (%d instance(s), from %s)", job.describe(), job.info.get("instances", 0),
                         job.info["origin"])
                busy = True
        queued = self.store.jobs("queued")
        if queued:
            self.run_job(queued[0])
            busy = True
        return self.send_due() or busy

    def run_job(self, job: Job) -> Job:
        job = self.store.move(job, "running")
        log.info("%s: predicting", job.describe())
        start = time.time()
        try:
            results = predict(job.series, job.result, self.opts, progress=False)
        except UserError as e:
            reason = str(e).splitlines()[0]
            log.warning("%s quarantined: %s", job.describe(), reason)
            return self.store.move(job, "quarantine", reason=reason)
        except Exception as e:  # a bug or the machine: keep the job and its reason, go on with the next
            log.exception("%s failed", job.describe())
            return self.store.move(job, "failed", reason=f"{type(e).__name__}: {e}".splitlines()[0])
        outputs = sorted(job.result.glob("*/RS.*.dcm")) + sorted(job.result.glob("*/SEG.*.dcm"))
        job.info.update(runtime_s=round(time.time() - start, 1), cases=[r.case_id for r in results],
                        outputs=[str(p.relative_to(job.folder)) for p in outputs])
        job.save()
        log.info("%s predicted in %.1f s: %s", job.describe(), job.info["runtime_s"],
                 ", ".join(p.name for p in outputs) or "no DICOM output")
        return self.store.move(job, "sending" if self.dests and outputs else "done")

    def send_due(self, now: float | None = None) -> bool:
        sent_any = False
        for job in self.store.jobs("sending"):
            if job.info.get("next_attempt", 0) > (time.time() if now is None else now):
                continue
            files = [job.folder / p for p in job.info["outputs"]]
            errors = []
            for dest in self.dests:
                if str(dest) in job.info["sent"]:
                    continue
                try:
                    c_store(files, dest, self.ae_title)
                    job.info["sent"][str(dest)] = time.time()
                    log.info("%s: sent %d file(s) to %s", job.describe(), len(files), dest)
                    sent_any = True
                except (OSError, RuntimeError, ValueError) as e:
                    errors.append(str(e))
            if errors:
                job.info["attempts"] += 1
                wait = backoff_s(job.info["attempts"])
                job.info.update(last_error="; ".join(errors), next_attempt=time.time() + wait)
                job.save()
                log.warning("%s: send failed (attempt %d: %s); retry in %.0f s", job.describe(),
                            job.info["attempts"], job.info["last_error"], wait)
            else:
                job.info.pop("next_attempt", None)
                job.save()
                self.store.move(job, "done")
        return sent_any


def status_table(root: Path) -> str:
    """Jobs and their states, for ``serve --status`` / ``watch --status``."""
    root = Path(root)
    if not (root / "jobs").is_dir():
        raise UserError(f"{root} holds no node jobs (expected {root / 'jobs'})")
    store = JobStore(root)
    rows, jobs = [("job", "state", "series", "instances", "note")], store.all_jobs()
    for job in jobs:
        note = job.info.get("reason") or job.info.get("last_error") or ""
        if job.state == "sending" and job.info.get("attempts"):
            note = f"{job.info['attempts']} failed attempt(s): {note}"
        elif job.state == "done":
            note = f"{job.info.get('runtime_s', '?')} s, sent to {', '.join(job.info['sent']) or 'nobody'}"
        rows.append((job.id, job.state, job.info.get("series_uid", ""), str(job.info.get("instances", "")), note))
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    counts = {s: sum(1 for j in jobs if j.state == s) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    incoming = root / "incoming"
    pending = [f for f in incoming.iterdir() if f.is_dir() and not f.name.startswith(".")] if incoming.is_dir() else []
    if pending:
        lines.append(f"{len(pending)} series still arriving in {incoming}")
    return "\n".join(lines)
