"""`nnunet-breast serve` on the network, driven by dcmtk's storescu / echoscu and answered into dcmtk's storescp.

The clients are nobody's on this project (Debian package dcmtk; ``.ci/run`` installs it). pynetdicom ships Python
apps of the same names, so the dcmtk binaries are found by their ``--version``. The node predicts with the clip
model's threshold method (no trained model needed), exactly as `predict` would. Timeouts below only stop a hung
test; nothing is timed.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pydicom
import pydicom.uid
import pytest

from nnunet_breast.synth.cohort import write_cohort


def _dcmtk(name: str) -> str | None:
    dirs = ["/usr/bin", "/usr/local/bin", *os.environ.get("PATH", "").split(os.pathsep)]
    for d in dirs:
        exe = Path(d) / name
        if exe.is_file() and os.access(exe, os.X_OK):
            r = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
            if "dcmtk" in (r.stdout + r.stderr).lower():
                return str(exe)
    return None


STORESCU, STORESCP, ECHOSCU = _dcmtk("storescu"), _dcmtk("storescp"), _dcmtk("echoscu")
pytestmark = pytest.mark.skipif(None in (STORESCU, STORESCP, ECHOSCU),
                                reason="dcmtk's storescu/storescp/echoscu are not installed (apt-get install dcmtk)")
NODE_AE, SENDER_AE, TPS_AE = "NNUNET", "CT_SIM", "TPS"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, what: str, timeout_s: float = 300, node: "Node | None" = None):
    """Poll ``condition``; a node that exits, or the timeout, fails at once with the node's log."""
    end = time.time() + timeout_s
    while time.time() < end:
        value = condition()
        if value:
            return value
        if node is not None and node.proc.poll() is not None:
            raise AssertionError(f"the node exited ({node.proc.returncode}) while waiting for {what}:\n{node.tail()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{node.tail()}" if node is not None else ""))


def _job_states(root: Path) -> dict[str, list[dict]]:
    out = {}
    for f in sorted((root / "jobs").glob("*/*/job.json")):
        if f.parent.parent.name != ".new":
            try:
                info = json.loads(f.read_text())
            except FileNotFoundError:       # the node moved the job to its next state meanwhile
                continue
            out.setdefault(f.parent.parent.name, []).append(info)
    return out


def _series_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.glob("CT.*.dcm")), stop_before_pixels=True).SeriesInstanceUID)


class Node:
    """One `nnunet-breast serve` process on a free port, sending to a dcmtk storescp it also runs."""

    def __init__(self, root: Path, tps_dir: Path, tps_port: int, console_scripts):
        self.root, self.tps_dir, self.tps_port, self.port = root, tps_dir, tps_port, _free_port()
        self.cmd = [console_scripts("nnunet-breast"), "serve", "--out", str(root), "--port", str(self.port),
                    "--ae-title", NODE_AE, "--allow", f"{SENDER_AE},OTHER", "--dest", f"{TPS_AE}@127.0.0.1:{tps_port}",
                    "--series-timeout", "1", "--model", "clips", "--clips-method", "threshold"]
        self.log = root.parent / f"{root.name}.log"
        self.proc = None

    def start(self) -> "Node":
        offset = self.log.stat().st_size if self.log.exists() else 0     # a restart appends to the same log
        self.proc = subprocess.Popen(self.cmd, stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        _wait(lambda: "listening on" in self.log.read_text()[offset:], "the node to listen", node=self)
        return self

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else "(no log)"

    def send(self, files, calling=SENDER_AE) -> subprocess.CompletedProcess:
        return subprocess.run([STORESCU, "-aet", calling, "-aec", NODE_AE, "127.0.0.1", str(self.port),
                               *map(str, files)], capture_output=True, text=True, timeout=300)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)


@pytest.fixture(scope="module")
def cts(tmp_path_factory) -> list[Path]:
    """Three small synthetic CT series as a scanner exports them (CT.*.dcm per patient folder)."""
    out = tmp_path_factory.mktemp("cts")
    return write_cohort("clips", 3, out, seed=3, size="small", progress=False)


@pytest.fixture
def tps(tmp_path):
    """dcmtk storescp as the TPS: (port, folder it stores into)."""
    port, folder = _free_port(), tmp_path / "tps"
    folder.mkdir()
    proc = subprocess.Popen([STORESCP, "-aet", TPS_AE, "-od", str(folder), str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    _wait(lambda: proc.poll() is not None or _listening(port), "storescp to listen", timeout_s=60)
    assert proc.poll() is None, "storescp did not start"
    yield port, folder
    proc.terminate()
    proc.wait(30)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _received(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f) for f in sorted(folder.iterdir()) if f.is_file()]


def _referenced_series(rs: pydicom.Dataset) -> set[str]:
    return {s.SeriesInstanceUID for fr in rs.ReferencedFrameOfReferenceSequence
            for st in fr.RTReferencedStudySequence for s in st.RTReferencedSeriesSequence}


def test_storescu_to_node_to_storescp(cts, tps, tmp_path, console_scripts):
    """Two series (the second sent while the first is queued or predicted) come back as RTSTRUCTs referencing
    each series and its frame of reference; echo answered; an AE outside --allow rejected and nothing stored."""
    port, tps_dir = tps
    node = Node(tmp_path / "node", tps_dir, port, console_scripts).start()
    try:
        echo = subprocess.run([ECHOSCU, "-aet", SENDER_AE, "-aec", NODE_AE, "127.0.0.1", str(node.port)],
                              capture_output=True, text=True, timeout=60)
        assert echo.returncode == 0, echo.stderr
        refused = node.send(sorted(cts[2].glob("CT.*.dcm")), calling="INTRUDER")
        assert refused.returncode != 0 and "Rejected" in refused.stderr + refused.stdout
        a, b = (sorted(c.glob("CT.*.dcm")) for c in cts[:2])
        assert node.send(a).returncode == 0
        _wait(lambda: _job_states(node.root), "the first job", node=node)
        assert node.send(b).returncode == 0
        _wait(lambda: len(_job_states(node.root).get("done", [])) == 2, "two done jobs", node=node)
        received = _wait(lambda: len(list(tps_dir.iterdir())) == 2 and _received(tps_dir), "two RTSTRUCTs")
    finally:
        node.stop()
    assert {rs.Modality for rs in received} == {"RTSTRUCT"}
    for case, rs in zip(cts[:2], sorted(received, key=lambda d: d.PatientID)):
        ct = pydicom.dcmread(next(case.glob("CT.*.dcm")), stop_before_pixels=True)
        assert _referenced_series(rs) == {ct.SeriesInstanceUID}
        assert rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ct.FrameOfReferenceUID
        assert rs.StudyInstanceUID == ct.StudyInstanceUID
    incoming = {p.name for p in (node.root / "incoming").iterdir()} - {".tmp"}
    assert _series_uid(cts[2]) not in incoming and not incoming
    assert _series_uid(cts[2]) not in {j["series_uid"] for js in _job_states(node.root).values() for j in js}
    log = node.log.read_text()
    assert "INTRUDER" in log and "rejected" in log
    assert str(ct.PatientName) not in log                  # logs name UIDs, never the patient


def test_kill_9_during_a_job_then_restart_completes_it_once(cts, tps, tmp_path, console_scripts):
    port, tps_dir = tps
    node = Node(tmp_path / "node", tps_dir, port, console_scripts).start()
    assert node.send(sorted(cts[0].glob("CT.*.dcm"))).returncode == 0
    _wait(lambda: {"running", "sending", "done"} & set(_job_states(node.root)), "the job to start", node=node)
    node.stop(signal.SIGKILL)
    node.start()
    try:
        _wait(lambda: _job_states(node.root).get("done"), "the job to finish after the restart", node=node)
        time.sleep(2)                       # a duplicate send would arrive now
    finally:
        node.stop()
    assert [len(v) for v in _job_states(node.root).values()] == [1]
    received = _received(tps_dir)
    assert len(received) == 1 and _referenced_series(received[0]) == {_series_uid(cts[0])}


def test_bad_series_are_quarantined_and_the_node_goes_on(cts, tps, tmp_path, console_scripts):
    """An MR series and a CT series with a missing slice each get a one-line reason; a good CT after them is done."""
    port, tps_dir = tps
    mr, gap = tmp_path / "mr", tmp_path / "gap"
    mr.mkdir()
    mr_series = pydicom.uid.generate_uid()
    for f in sorted(cts[1].glob("CT.*.dcm")):
        ds = pydicom.dcmread(f)
        ds.Modality, ds.SOPClassUID = "MR", "1.2.840.10008.5.1.4.1.1.4"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.SeriesInstanceUID = mr_series
        ds.save_as(mr / f.name)
    shutil.copytree(cts[2], gap)
    slices = sorted(gap.glob("CT.*.dcm"), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    slices[len(slices) // 2].unlink()
    node = Node(tmp_path / "node", tps_dir, port, console_scripts).start()
    try:
        for folder in (mr, gap, cts[0]):
            assert node.send(sorted(folder.glob("CT.*.dcm"))).returncode == 0
        _wait(lambda: sum(len(v) for v in _job_states(node.root).values()) == 3 and
              not {"queued", "running", "sending"} & set(_job_states(node.root)), "three finished jobs", node=node)
    finally:
        node.stop()
    states = _job_states(node.root)
    assert len(states.get("quarantine", [])) == 2 and len(states.get("done", [])) == 1
    reasons = {j["series_uid"]: j["reason"] for j in states["quarantine"]}
    assert "no CT series found" in reasons[_series_uid(mr)], reasons
    assert "Non-uniform slice spacing" in reasons[_series_uid(gap)], reasons
    for folder in (node.root / "jobs" / "quarantine").iterdir():
        assert len((folder / "reason.txt").read_text().strip().splitlines()) == 1
    status = subprocess.run(node.cmd[:2] + ["--status", "--out", str(node.root)], capture_output=True, text=True)
    assert status.returncode == 0 and "2 quarantine" in status.stdout and "1 done" in status.stdout
