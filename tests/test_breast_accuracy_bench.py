"""Smoke run of benchmarks/breast_accuracy.py: the whole comparison through the real CLIs at toy scale.

3 clinical training cases (three stratified folds, fold 0 trained on 2), 1 fully contoured held-out case, the tiny
schedule (2 epochs x 2 iterations) for vanilla (nnUNetTrainerTiny_2epochs) and ours on `plan --cpu`'s
configurations (--cpu-config: how the README's table is made); the paper preset is left out (its 64 x 128 x 128
patches double the run). Checks the report's shape, not the numbers: a toy run learns nothing.
"""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

from nnunet_breast.evaluation.metrics import is_evaluated

from nnunet_breast.env import child_environ

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "breast_accuracy.py"


def test_breast_accuracy_benchmark_runs_end_to_end(tmp_path):
    work = tmp_path / "work"
    cmd = [sys.executable, str(SCRIPT), "--work", str(work), "--n-train", "3", "--n-test", "1",
           "--schedule", "Tiny_2epochs", "--trainer", "vanilla=nnUNetTrainerTiny_2epochs", "--models", "vanilla,ours",
           "--cpu-config", "-np", "1", "--device", "cpu"]
    env = child_environ(nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1", nnUNet_compile="false")
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600, check=False)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])

    line = json.loads(r.stdout.strip().splitlines()[-1])            # the JSON line comes last
    assert line["benchmark"] == "breast_accuracy" and line["device"] == "cpu"
    assert line["iterations"] == 4                                  # 2 epochs x 2 iterations, both models
    assert set(line["models"]) == {"vanilla", "ours"}
    assert line["models"]["vanilla"]["configuration"] == "3d_cpu"
    assert line["models"]["ours"]["configuration"] == "3d_cpu_effnetb0"
    for model in line["models"].values():
        assert math.isfinite(model["s_per_iter"]) and model["s_per_iter"] > 0
        assert 0.0 <= model["mean_dsc"] <= 1.0
        assert model["params_M"] > 0 and model["gflop"] > 0
    assert line["ratio_s_per_iter_ours_vs_vanilla"] > 0
    assert math.isfinite(line["mean_dsc_diff_ours_minus_vanilla"])
    assert all(isinstance(v, bool) for v in line["goal_met"].values()) and len(line["goal_met"]) == 2
    assert json.loads((work / "breast_accuracy.json").read_text()) == line

    md = (work / "breast_accuracy.md").read_text()
    evaluated = set()
    for metrics in (work / "eval").glob("*/metrics.csv"):
        with open(metrics, newline="") as f:
            evaluated |= {row["structure"] for row in csv.DictReader(f) if is_evaluated(row)}
    assert len(evaluated) == 20                                     # the held-out case is contoured in full
    for structure in evaluated:
        assert f"| {structure} | " in md, structure
    assert "**mean DSC**" in md and "nnUNetTrainerEffNetB0Tiny_2epochs" in md
