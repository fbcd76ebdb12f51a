"""Partial-label masking vs nnU-Net's loss on clinical exports: same data, iterations and seed.

A clinic contours the treated side only. Trained with nnU-Net's loss, a left-sided case teaches that its right
breast is not ``CTVp_breast_R``; with the breast trainers' partial-label loss it teaches nothing about the right
side. One run:

1. ``nnunet-breast synth --cohort breast --labels clinical`` (--n-train, seed 0: about half left-, half
   right-sided) and ``--labels full`` (--n-test, --test-seed: both sides contoured), both converted into one
   raw dataset (--dataset-id; the converter records what each case annotates);
2. one fold: train = the clinical cases, validation = the fully contoured ones (splits_final.json);
   ``plan --cpu`` and the CPU configuration's preprocessing;
3. ``benchmarks/learning_curve.py``'s in-process loop for ``masked`` (--trainer as shipped: masked loss + the
   other side's known negatives in the BCE and the exclusion term), ``masked_bce_negatives`` (``known_negatives=bce``:
   in the BCE only), ``masked_no_negatives`` (``known_negatives=off``) and ``unmasked`` (the same trainer with
   ``partial_labels=off``: nnU-Net's region loss), same seed, DSC of every structure on the held-out cases every
   --every iterations, and how much of the breast CTVs' prediction lies in the other breast. ``--variants`` runs
   a subset.
Prints a Markdown table (per structure at the last checkpoint; means of the right-side CTVs, left-side CTVs and
all) and one JSON line with the ratios against the last variant run (unmasked by default).

    python benchmarks/partial_labels.py --work /tmp/pl [--n-train 10 --n-test 4] [--steps 600 --every 200]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from steps import nnunet_work, run_step

CONFIG = "3d_cpu_effnetb0"
#: variant -> learning_curve.py overrides of the trainer; the last is the baseline of the ratios
VARIANTS = {"masked": "", "masked_bce_negatives": ":known_negatives=bce",
            "masked_no_negatives": ":known_negatives=off", "unmasked": ":partial_labels=off"}


def ctv_sides(names: list[str]) -> dict[str, list[str]]:
    from nnunet_breast.structures.catalog import BY_NAME

    out: dict[str, list[str]] = {"R": [], "L": []}
    for n in names:
        entry = BY_NAME.get(n)
        if entry is not None and entry.side in out and entry.kind == "CTV":
            out[entry.side].append(n)
    return out


def prepare(args, work: Path) -> None:
    npr = str(args.num_processes)

    def run(step: str, *cmd) -> None:
        run_step(work, step, *cmd)

    cohorts = (("train", args.n_train, 0, "clinical"), ("test", args.n_test, args.test_seed, "full"))
    for kind, n, seed, labels in cohorts:
        export = work / f"export_{kind}"
        run(f"synth_{kind}", "nnunet-breast", "synth", "--cohort", "breast", "--n", n, "--out", export, "--seed", seed,
            "--labels", labels, "-np", npr)
        run(f"convert_{kind}", "nnunet-breast", "convert", "breast", "-i", export, "-d", args.dataset_id, "-np", npr)
    raw = next(Path(os.environ["nnUNet_raw"]).glob(f"Dataset{args.dataset_id:03d}_*"))
    dataset = json.loads((raw / "dataset.json").read_text())
    structures = set(dataset["labels"]) - {"background"}
    annotated = dataset["nnunet_breast"]["annotated"]
    # a clinical export never contours both sides: the fully annotated cases are the held-out ones
    test_ids = {c for c, v in annotated.items() if set(v) >= structures}
    train_ids = sorted(set(annotated) - test_ids)
    if len(test_ids) != args.n_test or len(train_ids) != args.n_train:
        print(f"FAILED: expected {args.n_train} clinical and {args.n_test} fully contoured cases in {raw}, found "
              f"{len(train_ids)} and {len(test_ids)}", flush=True)
        raise SystemExit(1)
    run("plan", "nnUNetv2_plan_and_preprocess", "-d", args.dataset_id, "--no_pp", "-np", npr)
    pre = Path(os.environ["nnUNet_preprocessed"]) / raw.name
    (pre / "splits_final.json").write_text(json.dumps([{"train": train_ids, "val": sorted(test_ids)}], indent=1))
    run("plan_cpu", "nnunet-breast", "plan", "-d", args.dataset_id, "--cpu")
    run("preprocess", "nnUNetv2_preprocess", "-d", args.dataset_id, "-c", CONFIG, "-np", npr)
    print(f"  train: {len(train_ids)} clinical cases; held out: {len(test_ids)} fully contoured", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n-train", type=int, default=10)
    ap.add_argument("--n-test", type=int, default=4)
    ap.add_argument("--test-seed", type=int, default=100)
    ap.add_argument("--dataset-id", type=int, default=821)
    ap.add_argument("--trainer", default="nnUNetTrainerEffNetB0")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="a comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--skip-prepare", action="store_true", help="reuse WORK's preprocessed dataset")
    ap.add_argument("-np", "--num-processes", type=int, default=2)
    args = ap.parse_args()
    work = nnunet_work(args.work, args.num_processes)
    if not args.skip_prepare:
        prepare(args, work)
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from learning_curve import curve

    torch.set_num_threads(args.num_processes)
    chosen = args.variants.split(",")
    if not set(chosen) <= set(VARIANTS):
        raise SystemExit(f"--variants: choose from {', '.join(VARIANTS)}")
    variants = {v: f"{v}:{args.trainer}{VARIANTS[v]}" for v in chosen}
    last: dict[str, dict] = {}
    for name, spec in variants.items():
        for line in curve(str(args.dataset_id), CONFIG, 0, spec, args.steps, args.every, args.seed):
            print(json.dumps(line), flush=True)
            last[name] = line
    names = sorted(set().union(*(last[v]["dsc"] for v in variants)))
    sides = ctv_sides(names)
    groups = {"right-side CTVs": sides["R"], "left-side CTVs": sides["L"], "all structures": names}
    mean = {v: {g: float(np.mean([last[v]["dsc"].get(n, 0.0) for n in ns])) for g, ns in groups.items()}
            for v in variants}
    print(f"\n### Partial labels: held-out DSC after {args.steps} iterations ({args.trainer}, {CONFIG}, "
          f"seed {args.seed})\n\n| structure | " + " | ".join(variants) + " |\n" + "|---" * (len(variants) + 1) + "|")
    for n in names:
        print("| " + " | ".join([n, *(f"{last[v]['dsc'].get(n, float('nan')):.3f}" for v in variants)]) + " |")
    for g in groups:
        print("| " + " | ".join([f"**mean, {g}**", *(f"**{mean[v][g]:.3f}**" for v in variants)]) + " |")
    print("| breast CTV voxels in the other side's breast | "
          + " | ".join(f"{last[v]['breast_side_err']:.3f}" for v in variants) + " |")
    result = {"benchmark": "partial_labels", "trainer": args.trainer, "configuration": CONFIG, "steps": args.steps,
              "seed": args.seed, "n_train": args.n_train, "n_test": args.n_test,
              **{v: {g: round(x, 3) for g, x in mean[v].items()} for v in variants},
              "breast_side_err": {v: last[v]["breast_side_err"] for v in variants},
              **{f"ratio_{v}_vs_{chosen[-1]}": {g: round(mean[v][g] / max(mean[chosen[-1]][g], 1e-3), 3)
                                                for g in groups} for v in chosen[:-1]},
              "s_per_step": {v: last[v]["s_per_step"] for v in variants}}
    print(json.dumps(result), flush=True)
    (work / "partial_labels.json").write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
