"""What the benchmarks that drive nnU-Net's CLIs share: a WORK folder as nnU-Net's three folders, logged steps."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def nnunet_work(work: Path, processes: int) -> Path:
    """``WORK/nnUNet_{raw,preprocessed,results}`` as nnU-Net's folders for this process and its children, with
    our trainers visible; ``WORK/logs`` for the steps' output. Returns the resolved WORK."""
    work = work.resolve()
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[var] = str(work / var)
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
