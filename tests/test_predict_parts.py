"""`nnunet-breast predict` parts running at the same time into one folder, crashes and reruns (threshold clip
method: no trained model needed), and the work folders behind it (nnunet_breast.util.workdir)."""
import csv
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from filelock import FileLock

from nnunet_breast.synth.cohort import write_cohort
from nnunet_breast.util.workdir import private_work_folder, remove_abandoned_work_folders

CLIPS = ["--model", "clips", "--clips-method", "threshold", "--no-preview"]


@pytest.fixture(scope="module")
def four_cases(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("parts_in")
    write_cohort("clips", 4, out, seed=0, size="small", progress=False)
    return out


def _cli(*args) -> list[str]:
    return [str(Path(sys.executable).parent / "nnunet-breast"), "predict", *map(str, args)]


def _case_folders(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def _assert_complete(out: Path, n: int, rtstruct_matches_masks) -> None:
    cases = _case_folders(out)
    assert len(cases) == n
    for case in cases:
        files = {str(p.relative_to(case)) for p in case.rglob("*") if p.is_file()}
        assert {"clips.json", "summary.json", "masks/Clips.nii.gz", f"RS.{case.name}.dcm"} <= files, files
        contours = rtstruct_matches_masks(case)                   # the threshold finds the synthetic clips
        assert contours["Clips"] >= 1 and contours["CTV_TumorBed_proposal"] >= 1
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["case_id"] for r in rows) == [c.name for c in cases]
    assert all(r["status"] == "predicted" and int(r["n_clips"]) >= 1 and float(r["Clips_cc"]) > 0 for r in rows)
    assert not list(out.glob(".work-*")) and not list(out.glob(".new*"))         # no work folder left


def test_parts_at_the_same_time_into_one_folder(four_cases, tmp_path, rtstruct_matches_masks):
    out = tmp_path / "out"
    procs = [subprocess.Popen(_cli("-i", four_cases, "-o", out, *CLIPS, "-num_parts", 2, "-part_id", k),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (so, se) in zip(procs, outputs):
        assert p.returncode == 0, (so[-2000:], se[-2000:])
    predicted = [line for so, _ in outputs for line in so.splitlines() if " -> " in line]
    assert len(predicted) == 4                                     # each case predicted once, by one part
    _assert_complete(out, 4, rtstruct_matches_masks)


_CRASH_AFTER_ONE_CASE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import nnunet_breast.dicom.rtstruct_export as rs
    import nnunet_breast.inference.predict as p
    from nnunet_breast.clips.predict import ClipPredictOptions

    real, calls = rs.export_rtstruct, []
    def crash_in_second_case(*a, **k):  # its masks are written, its RTSTRUCT not
        calls.append(1)
        if len(calls) == 2:
            os._exit(3)                  # a hard crash: no cleanup, no summary
        return real(*a, **k)
    rs.export_rtstruct = crash_in_second_case
    p.predict(Path(sys.argv[1]), Path(sys.argv[2]),
              p.PredictOptions("clips", clips=ClipPredictOptions("threshold"), preview=False), progress=False)
""")


def test_rerun_after_a_crash_finishes_the_missing_cases(four_cases, tmp_path, rtstruct_matches_masks):
    out = tmp_path / "out"
    # cwd: outside the checkout, so that `python -c` imports the installed package, not the source folder
    r = subprocess.run([sys.executable, "-c", _CRASH_AFTER_ONE_CASE, four_cases, out], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 3, r.stderr[-2000:]
    assert len(_case_folders(out)) == 1                            # the first case finished, whole
    [abandoned] = out.glob(".work-*")                              # the crashed run's work folder, half a case in it
    assert any((abandoned / "cases").iterdir())
    assert not (out / "summary.csv").exists()
    first = _case_folders(out)[0]
    before = (first / "masks" / "Clips.nii.gz").stat().st_mtime_ns
    r = subprocess.run(_cli("-i", four_cases, "-o", out, *CLIPS), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{first.name}: exists, skipped" in r.stdout and r.stdout.count(" -> ") == 3
    assert (first / "masks" / "Clips.nii.gz").stat().st_mtime_ns == before
    _assert_complete(out, 4, rtstruct_matches_masks)               # abandoned work folder removed too


def test_work_folders_are_private_and_only_abandoned_ones_are_removed(tmp_path):
    with private_work_folder(tmp_path) as mine:
        assert mine.is_dir() and mine.name.startswith(".work-")
        (mine / "x").write_text("in use")
        assert remove_abandoned_work_folders(tmp_path) == []       # a living run's folder is never taken
        # a crashed process's folder: its lock was released by the kernel when it died
        crashed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import os
            from nnunet_breast.util.workdir import private_work_folder
            with private_work_folder({str(tmp_path)!r}) as w:
                print(w, flush=True)
                os._exit(0)
        """)], capture_output=True, text=True, check=True, cwd=tmp_path)
        gone = Path(crashed.stdout.strip())
        assert gone.is_dir() and gone != mine
        with private_work_folder(tmp_path) as other:               # a new run clears it, keeps ours
            assert not gone.exists() and (mine / "x").read_text() == "in use" and other != mine
        assert not other.exists()
    assert not mine.exists()
    with pytest.raises(RuntimeError):
        with private_work_folder(tmp_path) as failed:
            raise RuntimeError("the run failed")
    assert not failed.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_summary_is_rebuilt_from_all_finished_cases_under_a_lock(tmp_path):
    from nnunet_breast.inference.predict import write_summary

    for cid, cc in (("b", 2.0), ("a", 1.0)):
        (tmp_path / cid).mkdir()
        (tmp_path / cid / "summary.json").write_text(json.dumps(
            {"case_id": cid, "status": "predicted", "rtstruct": "", "n_clips": 1, "tumour_bed_proposal_cc": 3.0,
             "structures_cc": {"Clips": cc, **({"Heart": 500.0} if cid == "b" else {})}}))
    (tmp_path / ".work-x" / "cases" / "c").mkdir(parents=True)     # a case still being assembled: not listed
    (tmp_path / ".work-x" / "cases" / "c" / "summary.json").write_text("{}")
    lock = FileLock(tmp_path / ".summary.lock")
    lock.acquire()
    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(write_summary, tmp_path)
            time.sleep(0.5)
            assert not pending.done() and not (tmp_path / "summary.csv").exists()     # waits for the lock
            lock.release()
            pending.result(timeout=60)
    finally:
        if lock.is_locked:
            lock.release()
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case_id"], r["Clips_cc"], r["Heart_cc"]) for r in rows] == [("a", "1.0", ""), ("b", "2.0", "500.0")]
