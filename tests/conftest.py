"""Shared fixtures: small synthetic cohorts written once per test session, and nnU-Net folders."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_breast.synth.cohort import write_cohort


@pytest.fixture(scope="session")
def breast_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("breast_export")
    write_cohort("breast", 5, out, seed=0, size="small", progress=False)
    return out


@pytest.fixture(scope="session")
def clips_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clips_export")
    write_cohort("clips", 3, out, seed=0, size="small", progress=False)
    return out


@pytest.fixture(scope="session")
def breast_dataset(breast_export, tmp_path_factory):
    """The synthetic breast export converted once (report of nnunet_breast.dataset_conversion.convert)."""
    from nnunet_breast.dataset_conversion.dataset import ConvertOptions, convert

    raw = tmp_path_factory.mktemp("raw")
    return convert(ConvertOptions("breast", breast_export, 501, "Test", raw), progress=False)


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch) -> dict[str, str]:
    """Fresh nnUNet_raw/preprocessed/results folders, exported for this test and its subprocesses."""
    dirs = {}
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        p = tmp_path / var
        p.mkdir()
        monkeypatch.setenv(var, str(p))
        dirs[var] = str(p)
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")   # 0 breaks the experiment planner (torch.set_num_threads(0))
    monkeypatch.setenv("nnUNet_compile", "false")
    return dirs


def console_script(name: str) -> str:
    """A console script of this environment (nnunet-breast, nnUNetv2_train, ...), venv activated or not."""
    sibling = Path(sys.executable).parent / name
    found = str(sibling) if sibling.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name} is not installed next to {sys.executable}")
    return found


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(["nnunet-breast", "synth", ...], env=None) -> CompletedProcess, output captured as text."""
    def run(cmd: list[str], env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([console_script(cmd[0]), *map(str, cmd[1:])], capture_output=True, text=True,
                              env=env, timeout=timeout)
    return run
