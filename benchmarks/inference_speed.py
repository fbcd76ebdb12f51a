"""Whole planning CT, DICOM in -> RTSTRUCT out: the breast model vs vanilla nnU-Net's predictor, and the clips.

One run, one process after the set-up:

1. set-up (CLIs): ``synth --cohort breast --size full`` (--n-plan cases) converted and planned as a user would
   (``nnUNetv2_plan_and_preprocess --no_pp``, ``nnunet-breast plan --cpu``, ``nnUNetv2_preprocess -c 3d_fullres
   3d_cpu_effnetb0``: the trainers initialise against their data); the speed case is one more CT
   (``synth --cohort clips --size full --with-structures``, seed 200: clips and breast anatomy in one CT);
2. one **randomly initialised** fold-0 checkpoint per model (``trainer.initialize()`` + ``save_checkpoint``): the
   sliding window costs the same for any weights. Output masks are meaningless; post-processing and the RTSTRUCT
   are timed on what these weights paint (the masks' voxel counts are printed);
3. timed, same predictor settings (step 0.5, no mirroring, fold 0, ``-npp 1 -nps 1``, every core):
   * ``ours``: ``nnunet-breast predict``'s library call, DICOM in, masks + RTSTRUCT + preview out, with the fast
     path (default: ``box`` tiling), its ``grid`` tiling (nnU-Net's tiles that meet the body's box) and with
     ``--no-fast-path``; configuration --configuration (``3d_fullres_effnetb0``, the
     default of ``predict``) and, for CPU sites, ``3d_cpu_effnetb0``;
   * ``vanilla``: nnU-Net's own ``nnUNetPredictor`` with ``nnUNetTrainer`` / ``3d_fullres`` on the same CT as
     NIfTI (what ``nnUNetv2_predict`` does: label map only; no DICOM reading, no RTSTRUCT);
   * ``clips`` and ``both`` (``--clip-results``: the ``nnUNet_results`` of ``benchmarks/clip_cascade.py``,
     fold 0 of stage 1 and 2): the cascade alone and both models in one ``predict``.
Stages (seconds): ``read`` (DICOM or NIfTI), ``load`` (model + checkpoint), ``network`` (sliding window),
``nnunet`` (nnU-Net's preprocessing, export and hand-over around the network), ``decode`` (probabilities -> masks),
``write`` (islands, RTSTRUCT, preview, masks). Prints Markdown and one JSON line; the ratios are against vanilla
measured in the same run (``--resume`` keeps rows measured earlier in WORK, e.g. to add the clip rows).

    python benchmarks/inference_speed.py --work /tmp/is [--device cpu|cuda] [--clip-results /tmp/cb/nnUNet_results]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

from steps import nnunet_work, run_step

DATASET = 531
CLIP_DATASETS = (502, 503)
SPEED_SEED = 200


def setup(work: Path, n_plan: int, processes: int) -> None:
    def run(step: str, *cmd) -> None:
        run_step(work, step, *cmd, resume=True)

    npr = str(processes)
    run("synth_plan", "nnunet-breast", "synth", "--cohort", "breast", "--size", "full", "--n", n_plan, "--out",
        work / "export_plan", "--labels", "full", "-np", npr)
    run("convert", "nnunet-breast", "convert", "breast", "-i", work / "export_plan", "-d", DATASET, "-np", npr)
    run("plan", "nnUNetv2_plan_and_preprocess", "-d", DATASET, "--no_pp", "-np", npr)
    run("plan_ours", "nnunet-breast", "plan", "-d", DATASET, "--cpu")
    # the trainers' initialize() looks at the preprocessed data (3d_fullres_effnetb0 shares 3d_fullres')
    run("preprocess", "nnUNetv2_preprocess", "-d", DATASET, "-c", "3d_fullres", "3d_cpu_effnetb0", "-np", npr)
    run("synth_speed", "nnunet-breast", "synth", "--cohort", "clips", "--size", "full", "--with-structures",
        "--labels", "full", "--n", 1, "--seed", SPEED_SEED, "--out", work / "export_speed")


def random_checkpoint(trainer_name: str, configuration: str) -> None:
    """fold_0/checkpoint_final.pth of a freshly initialised trainer (nnU-Net's own initialisation)."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    torch.manual_seed(0)
    trainer = get_trainer_from_args(str(DATASET), configuration, 0, trainer_name, "nnUNetPlans",
                                    device=torch.device("cpu"))
    path = Path(trainer.output_folder) / "checkpoint_final.pth"
    if not path.exists():
        trainer.initialize()
        trainer.save_checkpoint(str(path))
        pre = Path(trainer.preprocessed_dataset_folder_base)       # what on_train_start copies beside the folds
        for src, dst in (("nnUNetPlans.json", "plans.json"), ("dataset.json", "dataset.json"),
                         ("dataset_fingerprint.json", "dataset_fingerprint.json")):
            shutil.copy(pre / src, Path(trainer.output_folder_base) / dst)


class Stages:
    """Seconds per stage, by wrapping the functions ``predict`` calls (nothing in the package is changed)."""

    def __init__(self):
        self.s: dict[str, float] = defaultdict(float)
        self.patches = 0

    def timed(self, stage: str, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.s[stage] += time.perf_counter() - t0
        return wrapper

    def counted(self, fn):
        """``patches``: how many patches the network ran (one call per patch without mirroring)."""
        def wrapper(*a, **k):
            self.patches += 1
            return fn(*a, **k)
        return wrapper

    @contextlib.contextmanager
    def patched(self, module, **stages):
        """``module.<name>`` timed as stage ``stages[name]`` while the block runs; the predictor's sliding
        window is timed as ``network`` on every predictor ``make_predictor`` builds."""
        saved = {name: getattr(module, name) for name in stages}
        for name, stage in stages.items():
            setattr(module, name, self.timed(stage, saved[name]))
        if "make_predictor" in stages:
            def make(*a, **k):
                p = saved["make_predictor"](*a, **k)
                p.predict_sliding_window_return_logits = self.timed(
                    "network", p.predict_sliding_window_return_logits)
                p._internal_maybe_mirror_and_predict = self.counted(p._internal_maybe_mirror_and_predict)
                return p
            module.make_predictor = self.timed(stages["make_predictor"], make)
        try:
            yield self
        finally:
            for name, fn in saved.items():
                setattr(module, name, fn)

    def report(self, total: float, inner: str | None = None) -> dict:
        out = {k: round(v, 2) for k, v in self.s.items()}
        if inner in out:    # nnU-Net's share of its predictor call: everything but the network
            out["nnunet"] = round(out.pop(inner) - out.get("network", 0.0), 2)
        return {"total_s": round(total, 2), "stages_s": out, "patches": self.patches}


def time_ours(work: Path, name: str, opts) -> dict:
    import nnunet_breast.clips.predict as clip_module
    import nnunet_breast.inference.predict as module

    out = work / f"out_{name}"
    shutil.rmtree(out, ignore_errors=True)
    stages = Stages()
    t0 = time.perf_counter()
    with stages.patched(module, read_input="read", make_predictor="load", predict_probabilities="predict",
                        _write_case="write"), \
            stages.patched(clip_module, make_predictor="load", predict_files="predict"):
        results = module.predict(work / "export_speed", out, opts, progress=False)
    total = time.perf_counter() - t0
    row = stages.report(total, inner="predict")
    row["stages_s"]["decode_and_clips"] = round(total - sum(row["stages_s"].values()), 2)
    masks = sorted((results[0].folder / "masks").glob("*.nii.gz"))
    row["mask_files"] = len(masks)
    print(f"  {name}: {total:.1f} s {row['stages_s']}", flush=True)
    return row


def time_write_reference(work: Path, opts) -> dict:
    """``predict``'s write stage (islands, RTSTRUCT, preview, masks) on the speed case's own 20 structures: the
    random weights paint nothing, and an empty structure set is cheaper to write than a real one."""
    from nnunet_breast.inference import predict as module
    from nnunet_breast.inference.inputs import list_inputs, read_input
    from nnunet_breast.structures.catalog import BY_NAME
    from nnunet_breast.synth.cohort import make_case
    from nnunet_breast.util.workdir import private_work_folder

    case = read_input(list_inputs(work / "export_speed")[0])
    ref = make_case("clips", 0, SPEED_SEED, "full", structures=True).masks
    masks = {n: case.from_lps(m.astype(bool)) for n, m in ref.items() if n in BY_NAME and n != "Clips"}
    out = work / "out_write_reference"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    with private_work_folder(out) as w:
        t0 = time.perf_counter()
        module._write_case(case, out, w / "cases" / case.case_id, masks, None, opts)
        row = {"total_s": round(time.perf_counter() - t0, 2), "structures": len(masks)}
    print(f"  write, reference structures: {row}", flush=True)
    return row


def time_vanilla(work: Path, device: str) -> dict:
    import SimpleITK as sitk

    import nnunet_breast.inference.predictor as module
    from nnunet_breast.inference.inputs import list_inputs, read_input
    from nnunet_breast.inference.predictor import ModelRef

    nifti = work / "vanilla_in" / "speed_0000.nii.gz"
    if not nifti.exists():          # the CT as nnUNetv2_predict takes it (our reader's LPS image, as ours gets it)
        nifti.parent.mkdir(exist_ok=True)
        sitk.WriteImage(read_input(list_inputs(work / "export_speed")[0]).lps(), str(nifti))
    stages = Stages()
    t0 = time.perf_counter()
    with stages.patched(module, make_predictor="load", predict_files="predict"):
        predictor = module.make_predictor(ModelRef(DATASET, "nnUNetTrainer", "3d_fullres", folds=(0,)), device,
                                          use_mirroring=False, fast_path="off")
        module.predict_files(predictor, [[nifti]], [work / "vanilla_out" / "speed"], save_probabilities=False)
    row = stages.report(time.perf_counter() - t0, inner="predict")
    print(f"  vanilla: {row['total_s']:.1f} s {row['stages_s']}", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--configuration", default="3d_fullres_effnetb0")
    ap.add_argument("--n-plan", type=int, default=3, help="synthetic cases nnU-Net plans from (3)")
    ap.add_argument("--clip-results", type=Path, help="nnUNet_results of benchmarks/clip_cascade.py (502, 503)")
    ap.add_argument("--skip", action="append", default=[],
                    choices=("vanilla", "no_fast_path", "grid", "cpu_config", "both"),
                    help="leave out a row (repeatable)")
    ap.add_argument("--resume", action="store_true", help="keep the rows an earlier run of this --work measured")
    ap.add_argument("-np", "--num-processes", type=int, default=2, help="processes for the set-up CLIs")
    args = ap.parse_args()
    work = nnunet_work(args.work, 1)
    print("[setup]", flush=True)
    setup(work, args.n_plan, args.num_processes)
    models = {"ours": ("nnUNetTrainerEffNetB0", args.configuration), "vanilla": ("nnUNetTrainer", "3d_fullres"),
              "cpu_config": ("nnUNetTrainerEffNetB0", "3d_cpu_effnetb0")}
    for key, (trainer, config) in models.items():
        if key not in args.skip:
            random_checkpoint(trainer, config)
    if args.clip_results:
        for d in CLIP_DATASETS:
            src = next(args.clip_results.resolve().glob(f"Dataset{d:03d}_*"))
            link = work / "nnUNet_results" / src.name
            if not link.exists():
                link.symlink_to(src, target_is_directory=True)

    from nnunet_breast.clips.predict import ClipPredictOptions
    from nnunet_breast.inference.predict import PredictOptions
    from nnunet_breast.inference.predictor import ModelRef

    def breast(config: str) -> ModelRef:
        return ModelRef(DATASET, "nnUNetTrainerEffNetB0", config, folds=(0,))

    common = dict(device=args.device, use_mirroring=False)
    clips = ClipPredictOptions(
        "cascade", ModelRef(502, "nnUNetTrainerClipLocationShortCPU", "3d_clip_location", folds=(0,)),
        ModelRef(503, "nnUNetTrainerClipSegmentationLongCPU", "3d_clip_segmentation", folds=(0,)), **common)
    runs = {"ours": PredictOptions(breast=breast(args.configuration), **common)}
    if "grid" not in args.skip:
        runs["ours_grid"] = PredictOptions(breast=breast(args.configuration), fast_path="grid", **common)
    if "no_fast_path" not in args.skip:
        runs["ours_no_fast_path"] = PredictOptions(breast=breast(args.configuration), fast_path="off", **common)
    if "cpu_config" not in args.skip:
        runs["ours_cpu_config"] = PredictOptions(breast=breast("3d_cpu_effnetb0"), **common)
    if args.clip_results:
        runs["clips"] = PredictOptions(model="clips", clips=clips, **common)
        if "both" not in args.skip:
            runs["both"] = PredictOptions(model="both", breast=breast(args.configuration), clips=clips, **common)
    print("[timing]", flush=True)
    import torch

    result = {"benchmark": "inference_speed", "device": args.device, "threads": torch.get_num_threads(),
              "configuration": args.configuration, "weights": "random init (nnU-Net's), fold 0"}
    rows = work / "rows"
    rows.mkdir(exist_ok=True)

    def row(name: str, measure) -> None:
        saved = rows / f"{name}_{args.device}.json"
        if not (args.resume and saved.exists()):
            saved.write_text(json.dumps(measure()))
        result[name] = json.loads(saved.read_text())

    for name, opts in runs.items():
        row(name, lambda: time_ours(work, name, opts))
    row("write_reference", lambda: time_write_reference(work, runs["ours"]))
    if "vanilla" not in args.skip:
        row("vanilla", lambda: time_vanilla(work, args.device))
    from nnunet_breast.inference.inputs import list_inputs, read_input

    ct = read_input(list_inputs(work / "export_speed")[0]).image
    result["speed_case"] = {"size_xyz": list(ct.GetSize()), "spacing_xyz": [round(v, 3) for v in ct.GetSpacing()]}
    if "vanilla" in result:
        base = result["vanilla"]["total_s"]
        result["speedup_vs_vanilla"] = {n: round(base / result[n]["total_s"], 2) for n in runs}
    if "ours_no_fast_path" in result:
        result["fast_path_speedup"] = round(result["ours_no_fast_path"]["total_s"] / result["ours"]["total_s"], 2)
    print(markdown(result))
    print(json.dumps(result), flush=True)
    (work / "inference_speed.json").write_text(json.dumps(result) + "\n")
    return 0


def markdown(result: dict) -> str:
    rows = [k for k in ("vanilla", "ours", "ours_grid", "ours_no_fast_path", "ours_cpu_config", "clips", "both")
            if k in result]
    stages = ("read", "load", "network", "nnunet", "decode_and_clips", "write")
    lines = [f"| run | total (s) | {' | '.join(stages)} | patches | vs vanilla |", "|---" * (len(stages) + 4) + "|"]
    for r in rows:
        s = result[r]["stages_s"]
        ratio = result.get("speedup_vs_vanilla", {}).get(r, "")
        lines.append(f"| {r} | {result[r]['total_s']:.1f} | "
                     + " | ".join(f"{s[k]:.1f}" if k in s else "" for k in stages)
                     + f" | {result[r].get('patches', '')} | {ratio} |")
    if "write_reference" in result:
        w = result["write_reference"]
        lines.append(f"\nwrite stage on the case's {w['structures']} reference structures: {w['total_s']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
