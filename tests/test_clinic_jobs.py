"""The clinic's job loop in-process: the watch folder, recovery from a crash's leftovers, sends that fail and retry,
and the node's refusals. The DICOM network with third-party clients: test_clinic_node.py."""
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

import pydicom
import pytest

from nnunet_breast.clinic.jobs import JobStore
from nnunet_breast.clinic.node import Node, status_table
from nnunet_breast.clinic.send import Destination, backoff_s
from nnunet_breast.clinic.sources import WatchedFolder
from nnunet_breast.cli import main
from nnunet_breast.clips.predict import ClipPredictOptions
from nnunet_breast.errors import UserError
from nnunet_breast.inference.predict import PredictOptions
from nnunet_breast.synth.cohort import write_cohort

OPTS = PredictOptions("clips", clips=ClipPredictOptions("threshold"), preview=False)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> list[Path]:
    return write_cohort("clips", 2, tmp_path_factory.mktemp("export"), seed=5, size="small", progress=False)


def _age(folder: Path, seconds: float = 60) -> None:
    t = time.time() - seconds
    for f in folder.rglob("*"):
        os.utime(f, (t, t))


def _snapshot(folder: Path) -> dict[str, tuple]:
    return {str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _states(root: Path) -> dict[str, int]:
    store = JobStore(root)
    return {s: len(store.jobs(s)) for s in ("queued", "running", "sending", "done", "failed", "quarantine")}


def test_watch_folder_predicts_each_settled_series_once_and_never_touches_the_input(export, tmp_path):
    tps_export = tmp_path / "tps_export"
    shutil.copytree(export[0], tps_export / "a")
    _age(tps_export)
    before = _snapshot(tps_export)
    node = Node(tmp_path / "node", OPTS, [WatchedFolder(tps_export, settle_s=5)])
    with node:
        node.step()                                 # first sight: a series must look the same on two scans
        assert _states(node.root)["done"] == 0
        node.step()
        assert _states(node.root)["done"] == 1
        shutil.copytree(export[1], tps_export / "b")    # still being written: its files are new
        node.step(), node.step()
        assert _states(node.root)["done"] == 1
        _age(tps_export / "b")
        node.step(), node.step()
        node.step()
        assert _states(node.root) == dict(_states(node.root), done=2, queued=0, quarantine=0, failed=0)
        assert before == {k: v for k, v in _snapshot(tps_export).items() if not k.startswith("b")}
        rs = list((node.root / "jobs" / "done").glob("*/result/*/RS.*.dcm"))
        assert len(rs) == 2 and all((r.parent / "qa_report.html").is_file() for r in rs)
        ct = next(tps_export.glob("a/CT.*.dcm"))
        series = {pydicom.dcmread(r).ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
                  .RTReferencedSeriesSequence[0].SeriesInstanceUID for r in rs}
        assert pydicom.dcmread(ct, stop_before_pixels=True).SeriesInstanceUID in series
        # a re-export of series a with changed files is new content: one more job; unchanged content never is
        for f in (tps_export / "a").glob("CT.*.dcm"):
            f.write_bytes(f.read_bytes())
        _age(tps_export / "a", 30)
        node.step(), node.step(), node.step()
        assert _states(node.root)["done"] == 3
    with Node(tmp_path / "node", OPTS, [WatchedFolder(tps_export, settle_s=5)]) as again:   # a restart
        again.step(), again.step(), again.step()
        assert _states(again.root)["done"] == 3


def test_recovery_requeues_running_jobs_and_finishes_complete_new_ones(export, tmp_path):
    """The states a kill -9 can leave: a job in running (with predict's partial work), a complete job not yet
    queued, a half-copied one. After a restart each complete series is predicted once; nothing is lost."""
    root = tmp_path / "node"
    store = JobStore(root)
    running = store.new_job("1.2.3", "1.2", "test")
    shutil.copytree(export[0], running.series, ignore=shutil.ignore_patterns("RS.*"))
    running = store.move(store.enqueue(running), "running")
    (running.result / ".work-abc").mkdir(parents=True)          # what predict had begun
    complete = store.new_job("1.2.4", "1.2", "test")
    shutil.copytree(export[1], complete.series, ignore=shutil.ignore_patterns("RS.*"))
    half = store.new_job("1.2.5", "1.2", "test")
    (half.folder / "series.part").mkdir()
    with Node(root, OPTS, []) as node:
        assert _states(root)["queued"] == 2 and not half.folder.exists()
        while node.step():
            pass
    assert _states(root) == dict(_states(root), done=2, queued=0, running=0)
    for job in store.jobs("done"):
        assert len(list(job.result.glob("*/RS.*.dcm"))) == 1 and not list(job.result.glob(".work-*"))


def test_the_same_series_twice_in_one_second_gets_two_jobs(tmp_path):
    """A re-sent or re-exported series within the same second is a second job, never a clash with the first one
    (which has left ``.new`` already)."""
    store = JobStore(tmp_path / "node")
    ids = []
    for state in ("done", "queued", None):
        job = store.new_job("1.2.3", "1.2", "test")
        ids.append(job.id)
        if state:
            store.move(job, state)
    assert len(set(ids)) == 3 and all(i.split("-")[1] == ids[0].split("-")[1] for i in ids)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failed_send_is_kept_and_retried_until_the_destination_takes_it(export, tmp_path):
    port = _free_port()                                   # nothing listens there yet
    dest = Destination.parse(f"TPS@127.0.0.1:{port}")
    root = tmp_path / "node"
    store = JobStore(root)
    job = store.new_job("1.2.9", "1.2", "test")
    shutil.copytree(export[0], job.series, ignore=shutil.ignore_patterns("RS.*"))
    store.enqueue(job)
    with Node(root, OPTS, [], [dest]) as node:
        node.step()
        (job,) = store.jobs("sending")
        assert job.info["attempts"] == 1 and job.info["next_attempt"] > time.time() and "TPS@" in job.info["last_error"]
        assert not node.send_due()                        # not due yet: nothing tried
        assert store.jobs("sending")[0].info["attempts"] == 1
        assert "1 failed attempt(s)" in status_table(root)
        received = tmp_path / "tps"
        received.mkdir()
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        def store_it(event):
            event.dataset.file_meta = event.file_meta
            event.dataset.save_as(received / f"{event.dataset.SOPInstanceUID}.dcm")
            return 0x0000

        ae = AE(ae_title="TPS")
        ae.supported_contexts = AllStoragePresentationContexts
        server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, store_it)])
        try:
            assert node.send_due(now=time.time() + backoff_s(1) + 1)
        finally:
            server.shutdown()
    assert _states(root)["done"] == 1 and len(list(received.iterdir())) == 1
    done = store.jobs("done")[0]
    assert str(dest) in done.info["sent"]


def test_destinations_ae_titles_and_backoff():
    assert Destination.parse("TPS@10.0.0.5:104") == Destination("TPS", "10.0.0.5", 104)
    for bad in ("TPS@10.0.0.5", "10.0.0.5:104", "TPS@host:0", "A_TITLE_LONGER_THAN_16@h:104", "A\\B@h:104"):
        with pytest.raises(UserError):
            Destination.parse(bad)
    assert [backoff_s(n) for n in (1, 2, 3)] == [10, 20, 40] and backoff_s(30) == 600


def test_an_error_in_the_loop_is_logged_and_the_node_goes_on(tmp_path, caplog):
    """A step that raises (a source on a full disk, a bug) does not end the node: logged with its traceback,
    tried again after retry_s, and the next step's work is done."""
    import threading

    stop, calls = threading.Event(), []

    class Flaky:
        def collect(self, store):
            calls.append(time.monotonic())
            if len(calls) == 1:
                raise OSError(28, "No space left on device")
            stop.set()
            return []

    with Node(tmp_path / "node", OPTS, [Flaky()]) as node:
        node.run(stop, poll_s=0.01, retry_s=0.2)
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.2
    assert "the job loop failed; trying again in 0 s" in caplog.text and "No space left on device" in caplog.text


def test_a_second_node_on_the_same_folder_is_refused(tmp_path):
    with Node(tmp_path / "node", OPTS, []):
        with pytest.raises(UserError, match="another node"):
            Node(tmp_path / "node", OPTS, []).__enter__()


def test_serve_refuses_a_node_without_a_usable_model(tmp_path, nnunet_dirs, capsys):
    """A node that could not predict must not start listening (every job would fail)."""
    assert main(["serve", "--out", str(tmp_path / "n"), "--port", "11999", "--model", "breast"]) == 2
    assert "-d" in capsys.readouterr().err
    assert main(["serve", "--out", str(tmp_path / "n"), "--port", "11999", "-d", "777"]) == 2
    assert "777" in capsys.readouterr().err
    assert main(["serve", "--out", str(tmp_path / "n"), "--port", "11999", "--model", "clips",
                 "--clips-method", "threshold", "--ae-title", "A\\B"]) == 2
    assert main(["watch", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "w"), "--model", "clips",
                 "--clips-method", "threshold"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert not (tmp_path / "n" / "incoming").exists()


def test_status_lists_jobs(tmp_path, capsys):
    store = JobStore(tmp_path)
    job = store.enqueue(store.new_job("1.2.840.1", "1.2", "test"))
    store.move(job, "quarantine", reason="no CT series found")
    assert main(["serve", "--status", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no CT series found" in out and "1 quarantine" in out
    assert json.loads((store.jobs("quarantine")[0].folder / "job.json").read_text())["reason"] == "no CT series found"
    assert main(["serve", "--status", "--out", str(tmp_path / "nothing")]) == 2
