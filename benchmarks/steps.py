"""What the benchmarks share: nnU-Net's three folders (a new WORK folder or an existing one), logged CLI steps, DSC."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def use_nnunet_folders(root: Path) -> None:
    """nnU-Net's three variables pointed at ``ROOT/nnUNet_{raw,preprocessed,results}`` (this process and its
    children): the benchmarks that read an existing run (a demo's ``DIR/nnunet``)."""
    for var in NNUNET_FOLDERS:
        os.environ[var] = str((Path(root) / var).resolve())


def dsc(a: np.ndarray, b: np.ndarray) -> float:
    """DSC of two boolean masks (0 when both are empty)."""
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def nnunet_work(work: Path, processes: int) -> Path:
    """``WORK/nnUNet_{raw,preprocessed,results}`` as nnU-Net's folders for this process and its children, with
    our trainers visible; ``WORK/logs`` for the steps' output. Returns the resolved WORK."""
    work = work.resolve()
    use_nnunet_folders(work)
    for var in NNUNET_FOLDERS:
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    os.environ.update(nnUNet_compile="false", nnUNet_def_n_proc=str(processes))
    from nnunet_breast import env

    os.environ["nnUNet_extTrainer"] = env.child_environ()["nnUNet_extTrainer"]
    return work


def run_step(work: Path, step: str, *cmd, resume: bool = False) -> None:
    """Run one CLI (this environment's executables first), its output in ``WORK/logs/<step>.log``; exit with the
    log's name when it fails. ``resume``: skip a step an earlier run finished (``<step>.done``)."""
    done = work / "logs" / f"{step}.done"
    if resume and done.exists():
        return
    t0, log = time.perf_counter(), work / "logs" / f"{step}.log"
    with open(log, "w") as f:
        r = subprocess.run([shutil.which(cmd[0], path=str(Path(sys.executable).parent)) or cmd[0],
                            *map(str, cmd[1:])], stdout=f, stderr=subprocess.STDOUT, check=False)
    if r.returncode != 0:
        raise SystemExit(f"FAILED ({r.returncode}): {' '.join(map(str, cmd))}; see {log}")
    done.touch()
    print(f"  {step}: {time.perf_counter() - t0:.0f} s", flush=True)
