"""Clip cascade vs single-stage Res-SE-U-Net vs threshold: quality on held-out synthetic cases, and speed.

One run, everything through the real nnU-Net CLIs (the same route as tests/test_clip_cascade_nnunet.py):

1. synthetic clip cohorts, --n-train training cases and --n-test held-out cases (other seed), --size slab (default:
   512 x 512 CTs of real-scale anatomy cut to 120 mm of slices around the tumour bed, so that CPU training is
   affordable), small (scaled-down ~96^2 bodies: a location net trained on them flags everything on a real CT)
   or full; one --speed-size case (full: a whole 512 x 512 x 100 CT);
2. convert, stratified splits, stock planning + `nnunet-breast plan --model clips`, preprocess 3d_clip_location
   + 3d_clip_fullres;
3. stage 1 five folds with --npz and the single stage (fold 0), --jobs of them at a time; `cascade prepare`;
   stage 2 (fold 0; with --ablation also the paper's inputs, window + map only), all with one short schedule
   (--trainer-suffix, default ShortCPU: 10 epochs x 50 iterations; --trainer ROLE=NAME swaps one role's trainer,
   e.g. --trainer segmentation=nnUNetTrainerClipSegmentationLongCPU);
4. quality: DSC / HD95 / ASD and clip detection (found / missed / false) on the held-out cases for the cascade
   (stage 1: five-fold ensemble), the single stage and the HU threshold;
5. speed: the whole cascade (stage 1 fold 0 + ROI + stage 2 fold 0) vs the single stage (fold 0) on the
   --speed-size case, same predictor settings (step 0.5, no mirroring), one JSON line with the ratio; the
   quality of both and of the threshold on that whole CT; the cascade once more without prediction's fast path
   (``--no-fast-path``: whole grid, fp32), and that ratio.

    python benchmarks/clip_cascade.py --work /tmp/clipbench [--device cpu] [--n-train 10 --n-test 4] [-np 2]
    python benchmarks/clip_cascade.py --work /tmp/cb --size full --n-train 20 --n-test 5 --device cuda --jobs 6 -np 8
    python benchmarks/clip_cascade.py --work /tmp/clipbench --resume             # go on after an interruption
    python benchmarks/clip_cascade.py --work /tmp/clipbench --skip-training      # reuse trained models
    python benchmarks/clip_cascade.py --work /tmp/clipbench --skip-training --skip-speed --test-seed 300
                                                              # the same models on a second held-out cohort
    python benchmarks/clip_cascade.py --work /tmp/clipbench --resume --skip-speed \
        --trainer segmentation=nnUNetTrainerClipSegmentationLongCPU           # a longer stage 2, same stage 1
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import SimpleITK as sitk

TEST_SEED = 100
SPEED_SEED = 200


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n-train", type=int, default=10)
    ap.add_argument("--n-test", type=int, default=4)
    ap.add_argument("--size", choices=("small", "full", "slab"), default="slab",
                    help="training and held-out cases (slab: real-scale 512^2 anatomy, 120 mm of slices; small: "
                         "scaled-down ~96^2 bodies; full: 512^2 x 100)")
    ap.add_argument("--speed-size", choices=("small", "full"), default="full")
    ap.add_argument("--trainer-suffix", default="ShortCPU", help="ShortCPU (default), Tiny_2epochs, or '' (paper)")
    ap.add_argument("--trainer", action="append", default=[], metavar="ROLE=NAME",
                    help="override one role's trainer (roles: location, segmentation, single, "
                         "segmentation_paper_inputs); repeatable")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1,
                    help="nnUNetv2_train processes at a time (GPU; on a CPU keep 1: nnU-Net gives each CPU "
                         "training all cores, and two at a time on 2 cores ran 4.4x slower per epoch)")
    ap.add_argument("--test-seed", type=int, default=TEST_SEED,
                    help=f"seed of the held-out cohort ({TEST_SEED}); another seed gets folders of its own "
                         "(export_test_seedN, Dataset598_ClipsTestSeedN, pred_*_seedN, ..._seedN.json)")
    ap.add_argument("-np", "--num-processes", type=int, default=1,
                    help="processes for writing, converting, preprocessing and nnU-Net's predictor workers")
    ap.add_argument("--ablation", action="store_true",
                    help="also train and evaluate stage 2 on the paper's inputs (window + map, no metal window)")
    ap.add_argument("--fine-patch", type=int, default=96,
                    help="patch edge of the fine models in voxels on the finest axis (`plan --patch`; 96)")
    ap.add_argument("--resume", action="store_true",
                    help="keep what an earlier run of the same --work finished: cohorts, converted and preprocessed "
                         "data, trained folds (checkpoint_final.pth), the stage-2 dataset")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--skip-quality", action="store_true", help="only the speed comparison (e.g. other hardware)")
    ap.add_argument("--skip-speed", action="store_true", help="only the held-out quality (e.g. another trainer)")
    ap.add_argument("--checkpoint", default="checkpoint_final.pth",
                    help="stage-2 / single-stage checkpoint (checkpoint_best.pth: a run stopped early)")
    args = ap.parse_args()

    from nnunet_breast import env
    from nnunet_breast.synth.cohort import write_cohort

    sfx = args.trainer_suffix
    trainers = {"location": f"nnUNetTrainerClipLocation{sfx}", "segmentation": f"nnUNetTrainerClipSegmentation{sfx}",
                "single": f"nnUNetTrainerClipSingleStage{sfx}"}
    if args.ablation:
        trainers["segmentation_paper_inputs"] = f"nnUNetTrainerClipSegmentationPaperInputs{sfx}"
    for override in args.trainer:
        role, _, name = override.partition("=")
        if role not in trainers or not name:
            ap.error(f"--trainer {override!r}: expected ROLE=NAME with ROLE one of {', '.join(trainers)}")
        trainers[role] = name
    work = args.work.resolve()
    dirs = {v: work / v for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for p in dirs.values():
        p.mkdir(parents=True, exist_ok=True)
    os.environ.update({k: str(v) for k, v in dirs.items()})
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    os.environ.setdefault("nnUNet_compile", "false")
    environ = env.child_environ()
    bindir = Path(sys.executable).parent
    npr = str(max(1, args.num_processes))
    timings: dict[str, float] = {}

    def run(*cmd):
        t0 = time.perf_counter()
        exe = shutil.which(cmd[0], path=f"{bindir}{os.pathsep}{environ.get('PATH', '')}") or cmd[0]
        r = subprocess.run([exe, *map(str, cmd[1:])], capture_output=True, text=True, env=environ)
        if r.returncode != 0:
            raise SystemExit(f"failed: {cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        print(f"  {' '.join(map(str, cmd[:6]))} ... {time.perf_counter() - t0:.0f} s", flush=True)

    def parallel(commands):
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(lambda c: run(*c), commands))

    def phase(name, t0):
        timings[f"{name}_s"] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {timings[f'{name}_s']:.0f} s", flush=True)

    def train(dataset, config, fold, trainer, *extra):
        return ("nnUNetv2_train", dataset, config, fold, "-tr", trainer, *extra, "-device", args.device)

    def todo(*outputs) -> bool:
        """False when --resume and every output of a step exists."""
        return not (args.resume and all(Path(o).exists() for o in outputs))

    def trained(dataset, config, fold, trainer) -> Path:
        name = {"502": "Dataset502_BreastClips", "503": "Dataset503_BreastClipsStage2"}[dataset]
        return dirs["nnUNet_results"] / name / f"{trainer}__nnUNetPlans__{config}" / f"fold_{fold}" / \
            "checkpoint_final.pth"

    if not args.skip_training:
        t0 = time.perf_counter()
        if todo(work / "export_train" / "synth_clips.json"):              # the manifest is written last
            write_cohort("clips", args.n_train, work / "export_train", seed=0, size=args.size, progress=False,
                         num_processes=int(npr))
        pre1 = dirs["nnUNet_preprocessed"] / "Dataset502_BreastClips"
        if todo(dirs["nnUNet_raw"] / "Dataset502_BreastClips" / "dataset.json"):
            run("nnunet-breast", "convert", "clips", "-i", work / "export_train", "-d", "502", "-np", npr,
                "--overwrite")
        if todo(pre1 / "splits_final.json"):
            run("nnunet-breast", "splits", "-d", "502", "--stratify", "side")
        if todo(pre1 / "nnUNetPlans.json"):
            run("nnUNetv2_plan_and_preprocess", "-d", "502", "--no_pp", "-np", npr)
        run("nnunet-breast", "plan", "-d", "502", "--model", "clips", "--patch", args.fine_patch)
        if todo(pre1 / "nnUNetPlans_3d_clip_location", pre1 / "nnUNetPlans_3d_clip_fullres"):
            run("nnUNetv2_preprocess", "-d", "502", "-c", "3d_clip_location", "3d_clip_fullres", "-np", npr, npr)
        phase("data", t0)
        t0 = time.perf_counter()
        jobs = [train("502", "3d_clip_location", f, trainers["location"], "--npz") for f in range(5)] + \
            [train("502", "3d_clip_fullres", 0, trainers["single"])]
        parallel([j for j in jobs if todo(trained(*j[1:4], j[5]))])
        phase("train_stage1_and_single", t0)
        t0 = time.perf_counter()
        pre2 = dirs["nnUNet_preprocessed"] / "Dataset503_BreastClipsStage2"
        if todo(dirs["nnUNet_raw"] / "Dataset503_BreastClipsStage2" / "dataset.json"):
            run("nnunet-breast", "cascade", "prepare", "-d", "502", "--stage2-id", "503", "-tr", trainers["location"],
                "--overwrite", "-np", npr)
        if todo(pre2 / "nnUNetPlans.json"):
            run("nnUNetv2_plan_and_preprocess", "-d", "503", "--no_pp", "-np", npr)
        run("nnunet-breast", "plan", "-d", "503", "--model", "clips", "--patch", args.fine_patch)
        if todo(pre2 / "nnUNetPlans_3d_clip_segmentation"):
            run("nnUNetv2_preprocess", "-d", "503", "-c", "3d_clip_segmentation", "-np", npr)
        phase("cascade_prepare", t0)
        t0 = time.perf_counter()
        jobs = [train("503", "3d_clip_segmentation", 0, t) for k, t in trainers.items() if k.startswith("segm")]
        parallel([j for j in jobs if todo(trained(*j[1:4], j[5]))])
        phase("train_stage2", t0)

    tag = "" if args.test_seed == TEST_SEED else f"_seed{args.test_seed}"
    test_id, test_name = ("599", "ClipsTest") if not tag else ("598", f"ClipsTestSeed{args.test_seed}")
    test_raw = dirs["nnUNet_raw"] / f"Dataset{test_id}_{test_name}"
    if not args.skip_quality:
        if not (work / f"export_test{tag}" / "synth_clips.json").is_file():
            write_cohort("clips", args.n_test, work / f"export_test{tag}", seed=args.test_seed, size=args.size,
                         progress=False, num_processes=int(npr))
        if not (test_raw / "dataset.json").is_file():
            run("nnunet-breast", "convert", "clips", "-i", work / f"export_test{tag}", "-d", test_id, "--name",
                test_name, "-np", npr, "--overwrite")
    if not args.skip_speed and not (work / "export_speed" / "synth_clips.json").is_file():   # manifest: last
        write_cohort("clips", 1, work / "export_speed", seed=SPEED_SEED, size=args.speed_size, progress=False)
    methods = _methods(trainers, args.device, args.checkpoint, min(int(npr), 4))
    result = {"trainers": trainers, "checkpoint": args.checkpoint, "size": args.size, "n_train": args.n_train,
              "n_test": args.n_test, "test_seed": args.test_seed, "device": args.device}
    result_file = work / f"clip_cascade_benchmark{tag}.json"
    if not args.skip_quality:
        t0 = time.perf_counter()
        result["quality"] = evaluate_methods(work, test_raw, methods, tag)
        phase("evaluate", t0)
        result_file.write_text(json.dumps(result, indent=2))
        print(markdown(result["quality"]), flush=True)
    if args.skip_speed:
        result["timings"] = timings
        result_file.write_text(json.dumps(result, indent=2))
        return 0
    t0 = time.perf_counter()
    speed = time_methods(work, methods, args.speed_size)
    phase("speed", t0)
    result.update(speed=speed, timings=timings)
    print(f"speed case {speed['shape_zyx']} (fold 0 models): " + "; ".join(
        f"{m} DSC {q['dsc']:.3f}, {q['clips_found']} found / {q['clips_missed']} missed / {q['clips_false']} false"
        for m, q in speed["quality"].items()))
    result_file.write_text(json.dumps(result, indent=2))
    print(json.dumps({"benchmark": "clip_cascade", "device": args.device, "cascade_s": speed["cascade_s"],
                      "single_s": speed["single_s"], "speedup": speed["speedup"],
                      "cascade_no_fast_path_s": speed["cascade_no_fast_path_s"],
                      "fast_path_speedup": speed["fast_path_speedup"],
                      "speed_case_shape_zyx": speed["shape_zyx"]}))
    return 0


def _methods(trainers: dict, device: str, checkpoint: str, processes: int) -> dict:
    """Method name -> function(folds of stage 1 or None for all) -> ClipPredictOptions."""
    from nnunet_breast.clips.predict import ClipPredictOptions
    from nnunet_breast.inference.predictor import ModelRef

    common = dict(device=device, use_mirroring=False, num_processes_preprocessing=processes,
                  num_processes_export=processes)

    def cascade(stage2_trainer):
        return lambda folds1: ClipPredictOptions(
            "cascade", ModelRef(502, trainers["location"], "3d_clip_location", folds=folds1),
            ModelRef(503, stage2_trainer, "3d_clip_segmentation", folds=(0,), checkpoint=checkpoint), **common)

    methods = {"cascade": cascade(trainers["segmentation"]),
               "single": lambda folds1: ClipPredictOptions(
                   "single", ModelRef(502, trainers["single"], "3d_clip_fullres", folds=(0,), checkpoint=checkpoint),
                   None, **common),
               "threshold": lambda folds1: ClipPredictOptions("threshold", **common)}
    if "segmentation_paper_inputs" in trainers:
        methods["cascade_paper_inputs"] = cascade(trainers["segmentation_paper_inputs"])
    return methods


def evaluate_methods(work, test_raw: Path, methods: dict, tag: str = "") -> dict:
    from nnunet_breast.clips.predict import predict_clips
    from nnunet_breast.evaluation.clip_scores import score_clip_mask, summarise_clip_scores
    from nnunet_breast.inference.inputs import load_inputs

    cases = load_inputs(test_raw / "imagesTr")
    out = {}
    for method, options in methods.items():
        preds, _ = predict_clips(cases, work / f"pred_{method}{tag}", options(None), progress=False)
        scores, rows = [], []
        for p in preds:
            ref_img = sitk.ReadImage(str(test_raw / "labelsTr" / f"{p.case_id}.nii.gz"))
            scores.append(score_clip_mask(p.case_id, sitk.GetArrayFromImage(ref_img) > 0, p.mask,
                                          ref_img.GetSpacing()[::-1]))
            rows.append({**scores[-1].as_dict(), "roi": p.roi.source if p.roi else "",
                         "roi_size_zyx": list(p.roi.size) if p.roi else None})
        out[method] = {"cases": rows, **summarise_clip_scores(scores)}
        print(f"  evaluated {method}: DSC {out[method]['dsc_mean']:.3f}", flush=True)
    return out


def time_methods(work, methods: dict, speed_size: str) -> dict:
    """Wall time of single stage vs cascade (fold 0 each) on the speed case, and their (and the threshold's)
    quality on it: the whole CT, which training never showed when the cohort is cut to slabs."""
    from nnunet_breast.clips.predict import predict_clips
    from nnunet_breast.evaluation.clip_scores import score_clip_mask
    from nnunet_breast.inference.inputs import load_inputs
    from nnunet_breast.synth.cohort import make_case

    cases = load_inputs(work / "export_speed")
    ref = make_case("clips", 0, SPEED_SEED, speed_size).masks["Clips"]
    spacing = cases[0].image.GetSpacing()[::-1]
    res = {"shape_zyx": list(cases[0].image.GetSize()[::-1]), "quality": {}}
    for method in ("single", "cascade", "threshold"):
        t0 = time.perf_counter()
        preds, stages = predict_clips(cases, work / f"speed_{method}", methods[method]((0,)), progress=False)
        res[f"{method}_s"] = round(time.perf_counter() - t0, 2)
        res[f"{method}_stages_s"] = {k: round(v, 2) for k, v in stages.items()}
        if preds[0].roi is not None:
            res["roi_size_zyx"] = list(preds[0].roi.size)
            res["roi_source"] = preds[0].roi.source
        res["quality"][method] = score_clip_mask(preds[0].case_id, ref, preds[0].mask, spacing).as_dict()
    res["speedup"] = round(res["single_s"] / res["cascade_s"], 2)
    t0 = time.perf_counter()
    _, stages = predict_clips(cases, work / "speed_cascade_no_fast_path",
                              dataclasses.replace(methods["cascade"]((0,)), fast_path="off"), progress=False)
    res["cascade_no_fast_path_s"] = round(time.perf_counter() - t0, 2)
    res["cascade_no_fast_path_stages_s"] = {k: round(v, 2) for k, v in stages.items()}
    res["fast_path_speedup"] = round(res["cascade_no_fast_path_s"] / res["cascade_s"], 2)
    return res


def markdown(q: dict) -> str:
    lines = ["| method | DSC | HD95 (mm) | ASD (mm) | clips found | missed | false |", "|---|---|---|---|---|---|---|"]
    for m, r in q.items():
        lines.append(f"| {m} | {r['dsc_mean']:.3f} | {r['hd95_mm_mean']:.2f} | {r['assd_mm_mean']:.2f} | "
                     f"{r['clips_found']} | {r['clips_missed']} | {r['clips_false']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
