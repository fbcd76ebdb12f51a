"""EfficientNet-B0 U-Net (ours; the paper's preset) vs vanilla nnU-Net: held-out accuracy, s/iteration, size.

One run, everything through the real CLIs as subprocesses (logs: WORK/logs/<step>.log):

1. synthetic breast cohorts (`nnunet-breast synth`): --n-train cases as clinics export them (--train-seed, treated
   side only, some structures missing) and --n-test fully contoured held-out cases (--test-seed), --size small;
2. `convert breast` (--dataset-id, held-out cases +1), stratified splits (min(5, n-train) folds), stock
   planning + 3d_fullres preprocessing, `nnunet-breast plan` (3d_fullres_effnetb0 + the paper preset), the
   paper preset's preprocessing; --cpu-config: vanilla and ours on `plan --cpu`'s 3d_cpu / 3d_cpu_effnetb0
   instead (one coarse dataset, the same patch and batch; what a CPU trains far enough to compare);
3. --folds of vanilla (NoLRMirroring: nnU-Net under the same laterality and partial-label rules), ours and
   paper, equal epochs x iterations: trainer = role + --schedule (ShortCPU on cpu: 8 x 25 iterations;
   _10epochs on cuda); --trainer ROLE=NAME swaps one (e.g. vanilla=nnUNetTrainerTiny_2epochs);
   s/iteration = median epoch time of nnU-Net's training logs (epoch 0 left out; an epoch also holds its
   few validation iterations) / iterations per epoch (debug.json);
4. `nnUNetv2_predict` the held-out cases (no TTA, probabilities), `nnunet-breast evaluate`, paired Wilcoxon
   vs vanilla per structure and on per-case mean DSC (evaluation.compare.paired_row: not-evaluated and NaN
   pairs left out);
5. parameters and GFLOP of one forward pass on one patch, each network built by its trainer from the plans.
Writes WORK/breast_accuracy.md (printed) and WORK/breast_accuracy.json (the JSON line printed last).

    python benchmarks/breast_accuracy.py --work /tmp/ba [--device cpu] [--n-train 10 --n-test 4] [-np 2]
    python benchmarks/breast_accuracy.py --work /tmp/ba --device cuda --size full --n-train 20 -np 8
    python benchmarks/breast_accuracy.py --work /tmp/ba --cpu-config --models vanilla,ours --schedule LongCPU
    python benchmarks/breast_accuracy.py --work /tmp/ba --resume                  # go on after an interruption
    python benchmarks/breast_accuracy.py --work /tmp/ba --skip-training --models vanilla,ours
    nnUNet_n_proc_DA=0 python benchmarks/breast_accuracy.py --work /tmp/t --n-train 6 --n-test 2 \\
        --cpu-config --models vanilla,ours --schedule Tiny_2epochs --trainer vanilla=nnUNetTrainerTiny_2epochs \\
        --trainer ours=nnUNetTrainerEffNetB0LearningCPU     # tests/test_learning.py (in-process augmentation)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TEST_SEED = 100
MODEL_HEAD = ("| model | trainer | configuration | mean DSC | s / iteration | iterations | parameters (M) "
              "| GFLOP / patch | patch | per-case mean DSC - vanilla | wins / ties / losses | Wilcoxon p |")
ROLES = {"vanilla": "nnUNetTrainerNoLRMirroring", "ours": "nnUNetTrainerEffNetB0",
         "paper": "nnUNetTrainerEffNetB0Paper"}


def main() -> int:
    from nnunet_breast import env
    from nnunet_breast.planning import CPU_CONFIG, CPU_VANILLA_CONFIG, EFFNET_CONFIG, PAPER_CONFIG, PAPER_PLANS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n-train", type=int, default=10)
    ap.add_argument("--n-test", type=int, default=4)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--test-seed", type=int, default=TEST_SEED)
    ap.add_argument("--size", choices=("small", "full", "slab"), default="small")
    ap.add_argument("--dataset-id", type=int, default=811, help="training dataset (811); held-out: +1")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--cpu-config", action="store_true",
                    help="vanilla and ours on `plan --cpu`'s configurations (3d_cpu, 3d_cpu_effnetb0: the same coarse "
                         "data, patch and batch): the comparison a CPU can train far enough")
    ap.add_argument("--schedule", help="trainer suffix (ShortCPU on cpu, _10epochs on cuda; also Tiny_2epochs)")
    ap.add_argument("--trainer", action="append", default=[], metavar="ROLE=NAME",
                    help=f"one role's trainer (roles: {', '.join(ROLES)}); repeatable")
    ap.add_argument("--models", default=",".join(ROLES), help="comma-separated roles (default: all three)")
    ap.add_argument("--folds", default="0", help="comma-separated folds to train and predict with (0)")
    ap.add_argument("-np", "--num-processes", type=int, default=1)
    ap.add_argument("--resume", action="store_true",
                    help="keep what an earlier run of the same --work (same cohort options) finished")
    ap.add_argument("--skip-training", action="store_true", help="reuse the trained models (and their data)")
    args = ap.parse_args()

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or set(models) - set(ROLES):
        ap.error(f"--models {args.models!r}: roles are {', '.join(ROLES)}")
    sfx = args.schedule if args.schedule is not None else ("ShortCPU" if args.device == "cpu" else "_10epochs")
    trainers = {role: base + sfx for role, base in ROLES.items()}
    for override in args.trainer:
        role, _, name = override.partition("=")
        if role not in ROLES or not name:
            ap.error(f"--trainer {override!r}: expected ROLE=NAME with ROLE one of {', '.join(ROLES)}")
        trainers[role] = name
    for role in models:
        if trainer_class(trainers[role]) is None:
            ap.error(f"no trainer class {trainers[role]} ({role}); pick another --schedule or --trainer {role}=NAME")
    setup = {"vanilla": (CPU_VANILLA_CONFIG if args.cpu_config else "3d_fullres", "nnUNetPlans"),
             "ours": (CPU_CONFIG if args.cpu_config else EFFNET_CONFIG, "nnUNetPlans"),
             "paper": (PAPER_CONFIG, PAPER_PLANS)}
    folds = [int(f) for f in args.folds.split(",")]
    if args.n_train < 2 or args.n_test < 1:
        ap.error("--n-train must be at least 2 (a training and a validation case), --n-test at least 1")

    work = args.work.resolve()
    dirs = {v: work / v for v in env.NNUNET_PATH_VARS}
    for p in [*dirs.values(), work / "logs"]:
        p.mkdir(parents=True, exist_ok=True)
    npr = str(max(1, args.num_processes))
    extra = {"nnUNet_compile": "false", "nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA", "1")} \
        if args.device == "cpu" else {}
    environ = env.child_environ(**{k: str(v) for k, v in dirs.items()}, **extra,
                                nnUNet_def_n_proc=os.environ.get("nnUNet_def_n_proc", npr))
    bindir = Path(sys.executable).parent

    def run(step: str, *cmd) -> None:
        t0, log = time.perf_counter(), work / "logs" / f"{step}.log"
        exe = shutil.which(cmd[0], path=f"{bindir}{os.pathsep}{environ.get('PATH', '')}") or cmd[0]
        step_environ = environ
        if step.startswith("plan") and environ.get("nnUNet_n_proc_DA") == "0":     # in-process augmentation for
            step_environ = dict(environ, nnUNet_n_proc_DA="1")   # training; nnU-Net's planner: set_num_threads(it)
        with open(log, "w") as f:
            r = subprocess.run([exe, *map(str, cmd[1:])], stdout=f, stderr=subprocess.STDOUT, env=step_environ,
                               check=False)
        if r.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            print(f"FAILED ({r.returncode}): {' '.join(map(str, cmd))}\n--- {log} (tail) ---\n{tail}", flush=True)
            raise SystemExit(1)
        print(f"  {step}: {' '.join(map(str, cmd[:4]))} ... {time.perf_counter() - t0:.0f} s", flush=True)

    def todo(*outputs) -> bool:
        """False when --resume and every output of a step exists."""
        return not (args.resume and all(Path(o).exists() for o in outputs))

    train_id, test_id = args.dataset_id, args.dataset_id + 1
    train_name, test_name = f"Dataset{train_id:03d}_BreastRT", f"Dataset{test_id:03d}_BreastRTTest"
    pre = dirs["nnUNet_preprocessed"] / train_name
    for kind, n, seed, labels, did, name in (("train", args.n_train, args.train_seed, "clinical", train_id, "BreastRT"),
                                            ("test", args.n_test, args.test_seed, "full", test_id, "BreastRTTest")):
        if kind == "train" and args.skip_training:
            continue
        export = work / f"export_{kind}_seed{seed}"
        synthesized = todo(export / "synth_breast.json")                   # the manifest is written last
        if synthesized:
            run(f"synth_{kind}", "nnunet-breast", "synth", "--cohort", "breast", "--n", n, "--out", export, "--seed",
                seed, "--size", args.size, "--labels", labels, "-np", npr)
        if synthesized or todo(dirs["nnUNet_raw"] / f"Dataset{did:03d}_{name}" / "dataset.json"):
            run(f"convert_{kind}", "nnunet-breast", "convert", "breast", "-i", export, "-d", did, "--name", name,
                "-np", npr, "--overwrite")
    if not args.skip_training:
        if todo(pre / "splits_final.json"):
            run("splits", "nnunet-breast", "splits", "-d", train_id, "--stratify", "side", "--folds",
                min(5, args.n_train))
        if args.cpu_config and todo(pre / "nnUNetPlans.json"):
            run("plan", "nnUNetv2_plan_and_preprocess", "-d", train_id, "--no_pp", "-np", npr)
        elif todo(pre / "nnUNetPlans.json", pre / "nnUNetPlans_3d_fullres"):
            run("plan_and_preprocess", "nnUNetv2_plan_and_preprocess", "-d", train_id, "-c", "3d_fullres", "-np", npr)
        run("plan_ours", "nnunet-breast", "plan", "-d", train_id, *(["--cpu"] if args.cpu_config else []))
        if args.cpu_config and todo(pre / f"nnUNetPlans_{CPU_CONFIG}"):
            run("preprocess_cpu", "nnUNetv2_preprocess", "-d", train_id, "-c", CPU_CONFIG, "-np", npr)
        if "paper" in models and todo(pre / f"{PAPER_PLANS}_{PAPER_CONFIG}"):
            run("preprocess_paper", "nnUNetv2_preprocess", "-d", train_id, "-plans_name", PAPER_PLANS, "-c",
                PAPER_CONFIG, "-np", npr)
    raw_train, raw_test = dirs["nnUNet_raw"] / train_name, dirs["nnUNet_raw"] / test_name
    encodings = [json.loads((r / "dataset.json").read_text())["nnunet_breast"]["encoding"]
                 for r in (raw_train, raw_test)]
    if encodings[0] != encodings[1]:
        print(f"FAILED: {raw_test} encodes labels unlike {raw_train}; predictions could not be scored", flush=True)
        return 1

    results = {}
    for role in models:
        tr, (config, plans) = trainers[role], setup[role]
        model_dir = dirs["nnUNet_results"] / train_name / f"{tr}__{plans}__{config}"
        plans_args = ("-p", plans) if plans != "nnUNetPlans" else ()
        for f in folds if not args.skip_training else ():
            fold_dir = model_dir / f"fold_{f}"
            if todo(fold_dir / "checkpoint_final.pth"):
                cont = ("--c",) if args.resume and fold_dir.is_dir() else ()
                run(f"train_{role}_fold{f}", "nnUNetv2_train", train_id, config, f, "-tr", tr, *plans_args,
                    "-device", args.device, *cont)
        tag = f"{role}__{tr}__fold{'_'.join(map(str, folds))}__seed{args.test_seed}"   # each its own folders
        out, ev = work / "pred" / tag, work / "eval" / tag
        cases = sorted(p.name[: -len(".nii.gz")] for p in (raw_test / "labelsTr").glob("*.nii.gz"))
        predicted = todo(*[out / f"{c}.npz" for c in cases])
        if predicted:
            run(f"predict_{role}", "nnUNetv2_predict", "-i", raw_test / "imagesTr", "-o", out, "-d", train_id, "-c",
                config, "-tr", tr, *plans_args, "-f", *folds, "-device", args.device, "--disable_tta",
                "--save_probabilities", "-npp", npr, "-nps", npr, "--disable_progress_bar")
        if predicted or todo(ev / "metrics.csv"):
            run(f"evaluate_{role}", "nnunet-breast", "evaluate", "--ref", raw_test / "labelsTr", "--pred", out, "-d",
                test_id, "-o", ev, "-np", npr)
        summary = json.loads((ev / "summary.json").read_text())
        epoch_s, iters, epochs = epoch_times([model_dir / f"fold_{f}" for f in folds])
        results[role] = {"trainer": tr, "configuration": config, "plans": plans, "mean_dsc": summary["mean_dsc"],
                         "s_per_iter": epoch_s / iters if iters else None, "iterations": epochs * iters,
                         **network_size(pre, tr, plans, config),
                         "per_structure": {s: {"dsc": v["dsc_mean"], "hd95": v["hd95_mean"]}
                                           for s, v in summary["per_structure"].items()},
                         "rows": read_rows(ev / "metrics.csv")}
    paired_vs_vanilla(results)
    return report(work, args, results)


def trainer_class(name: str):
    """The trainer class nnUNetv2_train would use (ours, or nnU-Net's own), None when there is none."""
    import nnunet_breast.trainers as ours

    if hasattr(ours, name):
        return getattr(ours, name)
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        return recursive_find_trainer_class_by_name(name)
    except RuntimeError:     # nnU-Net: "Could not find the requested nnunet_trainer class ..."
        return None


def epoch_times(fold_dirs: list[Path]) -> tuple[float, int, int]:
    """(median epoch seconds without epoch 0, iterations per epoch, epochs) from nnU-Net's fold folders.

    Every ``training_log_*.txt`` counts (a resumed training writes another); a repeated epoch keeps its last time.
    """
    times, iters, epochs = [], 0, 0
    for fold in fold_dirs:
        per_epoch, epoch = {}, None
        for log in sorted(fold.glob("training_log_*.txt")):
            for line in log.read_text(errors="replace").splitlines():
                if m := re.search(r"Epoch (\d+)\s*$", line):
                    epoch = int(m.group(1))
                elif (m := re.search(r"Epoch time: ([\d.]+) s", line)) and epoch is not None:
                    per_epoch[epoch] = float(m.group(1))
        times += [t for e, t in per_epoch.items() if e > 0]
        if (fold / "debug.json").is_file():
            debug = json.loads((fold / "debug.json").read_text())
            iters, epochs = int(debug["num_iterations_per_epoch"]), int(debug["num_epochs"])
    return (statistics.median(times) if times else math.nan), iters, epochs


def network_size(pre: Path, trainer: str, plans: str, config: str) -> dict:
    """Parameters (M) and GFLOP of one forward pass on one patch (batch 1, no deep-supervision heads) of the
    network ``trainer`` builds from the plans; counted on the meta device (shapes only, no compute)."""
    import torch
    from network_speed import gflops
    from nnunetv2.utilities.label_handling.label_handling import (
        determine_num_input_channels,
    )
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(json.loads((pre / f"{plans}.json").read_text()))
    cm = pm.get_configuration(config)
    dataset_json = json.loads((pre / "dataset.json").read_text())
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    net = trainer_class(trainer).build_network_architecture(pm, cm, n_in, n_out, False).to("meta").eval()
    x = torch.empty((1, n_in, *cm.patch_size), device="meta")
    return {"params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 3), "gflop": round(gflops(net, x), 2),
            "patch_zyx": list(cm.patch_size)}


def read_rows(metrics_csv: Path) -> dict[tuple[str, str], dict]:
    with open(metrics_csv, newline="") as f:
        return {(r["case_id"], r["structure"]): r for r in csv.DictReader(f)}


def case_mean_dsc(rows: dict, case: str) -> float:
    """Mean DSC over the structures evaluated in a case (the reference has them)."""
    from nnunet_breast.evaluation.metrics import is_evaluated

    v = [float(r["dsc"]) for (c, _), r in rows.items() if c == case and is_evaluated(r) and r["dsc"] != ""]
    v = [x for x in v if math.isfinite(x)]
    return sum(v) / len(v) if v else math.nan


def paired_vs_vanilla(results: dict) -> None:
    """Adds the paired Wilcoxon of every other model vs vanilla: per structure (DSC) and on per-case mean DSC."""
    from nnunet_breast.evaluation.compare import paired_row

    if "vanilla" not in results:
        return
    a = results["vanilla"]["rows"]
    for role, res in results.items():
        if role == "vanilla":
            continue
        b = res["rows"]
        common = sorted(set(a) & set(b))
        for s, v in res["per_structure"].items():
            pairs = [(a[k], b[k]) for k in common if k[1] == s]
            v["dsc_p_vs_vanilla"] = paired_row(s, "dsc", True, pairs)["wilcoxon_p"]
        cases = sorted({c for c, _ in common})
        t = paired_row("case mean", "dsc", True, [({"dsc": case_mean_dsc(a, c), "evaluated": True},
                                                    {"dsc": case_mean_dsc(b, c), "evaluated": True}) for c in cases])
        res["case_mean_dsc_diff_vs_vanilla"] = t["mean_diff_b_minus_a"]
        res["case_mean_dsc_p_vs_vanilla"] = t["wilcoxon_p"]
        res["case_wins_ties_losses_vs_vanilla"] = [t["b_wins"], t["ties"], t["b_losses"]]


def fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def clean(v):
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [clean(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


def report(work: Path, args, results: dict) -> int:
    roles = list(results)
    others = [r for r in roles if r != "vanilla" and "vanilla" in roles]
    structures = list(results[roles[0]]["per_structure"])
    head = ["structure", *(f"{r} {m}" for r in roles for m in ("DSC", "HD95 mm")),
            *(f"p {r} vs vanilla" for r in others)]
    title = (f"# Held-out accuracy: {args.n_test} fully contoured cases, models trained on {args.n_train} "
             f"clinical cases (fold(s) {args.folds}, {args.device}, size {args.size})")
    lines = [title, "",
             "p: two-sided paired Wilcoxon on DSC (pairs whose reference lacks the structure left out).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in structures:
        cells = [fmt(results[r]["per_structure"][s][m], f) for r in roles for m, f in (("dsc", ".3f"), ("hd95", ".1f"))]
        cells += [fmt(results[r]["per_structure"][s].get("dsc_p_vs_vanilla"), ".3g") for r in others]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    cells = [c for r in roles for c in (f"**{fmt(results[r]['mean_dsc'])}**", "")] + [""] * len(others)
    lines.append("| **mean DSC** | " + " | ".join(cells) + " |")
    lines += ["", MODEL_HEAD, "|---" * MODEL_HEAD.count(" | ") + "|---|"]
    for r in roles:
        m = results[r]
        lines.append(f"| {r} | {m['trainer']} | {m['configuration']} | {fmt(m['mean_dsc'])} "
                     f"| {fmt(m['s_per_iter'], '.3f')} | {m['iterations']} | {m['params_M']:.2f} | {m['gflop']:.1f} "
                     f"| {'x'.join(map(str, m['patch_zyx']))} "
                     f"| {fmt(m.get('case_mean_dsc_diff_vs_vanilla'), '+.3f')} "
                     f"| {' / '.join(map(str, m.get('case_wins_ties_losses_vs_vanilla', ['-'])))} "
                     f"| {fmt(m.get('case_mean_dsc_p_vs_vanilla'), '.3g')} |")
    md = "\n".join(lines) + "\n"
    (work / "breast_accuracy.md").write_text(md)
    print(md, flush=True)

    keep = ("trainer", "configuration", "plans", "mean_dsc", "s_per_iter", "iterations", "params_M", "gflop",
            "patch_zyx", "case_mean_dsc_diff_vs_vanilla", "case_mean_dsc_p_vs_vanilla")
    models = {r: {k: results[r][k] for k in keep if k in results[r]} for r in roles}
    v, o = models.get("vanilla"), models.get("ours")
    ratio = o["s_per_iter"] / v["s_per_iter"] if v and o and v["s_per_iter"] and o["s_per_iter"] else None
    diff = o["mean_dsc"] - v["mean_dsc"] if v and o and None not in (v["mean_dsc"], o["mean_dsc"]) else None
    iterations = {m["iterations"] for m in models.values()}
    if len(iterations) != 1:                       # --trainer gave models other schedules
        iterations = {r: m["iterations"] for r, m in models.items()}
    line = clean({"benchmark": "breast_accuracy", "device": args.device,
                  "iterations": iterations.pop() if isinstance(iterations, set) else iterations,
                  "n_train": args.n_train, "n_test": args.n_test, "size": args.size,
                  "seeds": {"train": args.train_seed, "test": args.test_seed},
                  "folds": [int(f) for f in args.folds.split(",")],
                  "models": models, "ratio_s_per_iter_ours_vs_vanilla": ratio, "mean_dsc_diff_ours_minus_vanilla": diff,
                  "goal_met": {"ours_mean_dsc_ge_vanilla_minus_0.01": None if diff is None else bool(diff >= -0.01),
                               "ours_s_per_iter_lt_half_vanilla": None if ratio is None else bool(ratio < 0.5)}})
    text = json.dumps(line, allow_nan=False)
    (work / "breast_accuracy.json").write_text(text + "\n")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
