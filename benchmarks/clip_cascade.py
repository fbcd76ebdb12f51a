"""Clip cascade vs single-stage Res-SE-U-Net vs threshold: quality on held-out synthetic cases, and speed.

One run, everything through the real nnU-Net CLIs (the same route as tests/test_clip_cascade_nnunet.py):

1. synthetic clip cohorts: --n-train training cases, --n-test held-out cases (other seed), one --speed-size case;
2. convert, stock planning + `nnunet-breast plan --model clips`, preprocess 3d_clip_location + 3d_clip_fullres;
3. stage 1 five folds with --npz, `cascade prepare`, stage 2 (fold 0), single stage on 3d_clip_fullres (fold 0),
   all with the same short schedule (--trainer-suffix, default ShortCPU: 10 epochs x 50 iterations);
4. quality: DSC / HD95 / ASD and clip detection (found / missed / false) on the held-out cases for the cascade,
   the single stage and the HU threshold;
5. speed: the whole cascade (stage 1 fold 0 + ROI + stage 2 fold 0) vs the single stage (fold 0) on the
   --speed-size case, same predictor settings (step 0.5, no mirroring), one JSON line with the ratio.

    python benchmarks/clip_cascade.py --work /tmp/clipbench [--device cpu] [--n-train 10 --n-test 4]
    python benchmarks/clip_cascade.py --work /tmp/clipbench --skip-training      # reuse trained models
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n-train", type=int, default=10)
    ap.add_argument("--n-test", type=int, default=4)
    ap.add_argument("--speed-size", choices=("small", "full"), default="full")
    ap.add_argument("--trainer-suffix", default="ShortCPU", help="ShortCPU (default), Tiny_2epochs, or '' (paper)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--checkpoint", default="checkpoint_final.pth",
                    help="stage-2 / single-stage checkpoint (checkpoint_best.pth: a run stopped early)")
    args = ap.parse_args()

    from nnunet_breast import env
    from nnunet_breast.synth.cohort import write_cohort

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
    t1, t2, ts = (f"nnUNetTrainerClip{n}{args.trainer_suffix}" for n in ("Location", "Segmentation", "SingleStage"))

    def run(*cmd):
        t0 = time.perf_counter()
        r = subprocess.run([str(bindir / cmd[0]), *map(str, cmd[1:])], capture_output=True, text=True, env=environ)
        if r.returncode != 0:
            sys.exit(f"failed: {cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        print(f"  {' '.join(map(str, cmd[:4]))} ... {time.perf_counter() - t0:.0f} s", flush=True)

    timings = {}
    if not args.skip_training:
        t0 = time.perf_counter()
        write_cohort("clips", args.n_train, work / "export_train", seed=0, size="small", progress=False)
        write_cohort("clips", args.n_test, work / "export_test", seed=100, size="small", progress=False)
        run("nnunet-breast", "convert", "clips", "-i", work / "export_train", "-d", "502", "-np", "1", "--overwrite")
        run("nnunet-breast", "convert", "clips", "-i", work / "export_test", "-d", "599", "--name", "ClipsTest",
            "-np", "1", "--overwrite")
        run("nnUNetv2_plan_and_preprocess", "-d", "502", "--no_pp", "-np", "1")
        run("nnunet-breast", "plan", "-d", "502", "--model", "clips")
        run("nnUNetv2_preprocess", "-d", "502", "-c", "3d_clip_location", "3d_clip_fullres", "-np", "1", "1")
        for fold in range(5):
            run("nnUNetv2_train", "502", "3d_clip_location", fold, "-tr", t1, "--npz", "-device", args.device)
        run("nnunet-breast", "cascade", "prepare", "-d", "502", "--stage2-id", "503", "-tr", t1, "--overwrite")
        run("nnUNetv2_plan_and_preprocess", "-d", "503", "--no_pp", "-np", "1")
        run("nnunet-breast", "plan", "-d", "503", "--model", "clips")
        run("nnUNetv2_preprocess", "-d", "503", "-c", "3d_clip_segmentation", "-np", "1")
        run("nnUNetv2_train", "503", "3d_clip_segmentation", "0", "-tr", t2, "-device", args.device)
        run("nnUNetv2_train", "502", "3d_clip_fullres", "0", "-tr", ts, "-device", args.device)
        timings["pipeline_and_training_s"] = round(time.perf_counter() - t0, 1)

    if not (work / "export_speed" / "synth_clips.json").is_file():      # the manifest is written last
        write_cohort("clips", 1, work / "export_speed", seed=200, size=args.speed_size, progress=False)
    quality = evaluate_methods(work, dirs, t1, t2, ts, args.device, args.checkpoint)
    speed = time_methods(work, t1, t2, ts, args.device, args.checkpoint)
    result = {"quality": quality, "speed": speed, "trainers": [t1, t2, ts], "checkpoint": args.checkpoint,
              "n_train": args.n_train,
              "n_test": args.n_test, **timings}
    (work / "clip_cascade_benchmark.json").write_text(json.dumps(result, indent=2))
    print(markdown(quality))
    print(json.dumps({"benchmark": "clip_cascade", "cascade_s": speed["cascade_s"], "single_s": speed["single_s"],
                      "speedup": speed["speedup"], "speed_case_shape_zyx": speed["shape_zyx"]}))
    return 0


def _opts(method, t1, t2, ts, device, checkpoint, folds1=None):
    from nnunet_breast.clips.predict import ClipPredictOptions
    from nnunet_breast.nnunet_predict import ModelRef

    if method == "cascade":
        return ClipPredictOptions("cascade", ModelRef(502, t1, "3d_clip_location", folds=folds1),
                                  ModelRef(503, t2, "3d_clip_segmentation", folds=(0,), checkpoint=checkpoint), device,
                                  use_mirroring=False)
    if method == "single":
        return ClipPredictOptions("single", ModelRef(502, ts, "3d_clip_fullres", folds=(0,), checkpoint=checkpoint),
                                  None, device, use_mirroring=False)
    return ClipPredictOptions("threshold", device=device)


def evaluate_methods(work, dirs, t1, t2, ts, device, checkpoint) -> dict:
    from nnunet_breast.clips.predict import predict_clips
    from nnunet_breast.evaluation.clip_detection import detect_clips
    from nnunet_breast.evaluation.metrics import structure_metrics
    from nnunet_breast.inputs import load_inputs

    test_raw = next(dirs["nnUNet_raw"].glob("Dataset599_*"))
    cases = load_inputs(test_raw / "imagesTr")
    out = {}
    for method in ("cascade", "single", "threshold"):
        preds, _ = predict_clips(cases, work / f"pred_{method}", _opts(method, t1, t2, ts, device, checkpoint),
                                  progress=False)
        rows = []
        for p in preds:
            ref_img = sitk.ReadImage(str(test_raw / "labelsTr" / f"{p.case_id}.nii.gz"))
            ref = sitk.GetArrayFromImage(ref_img) > 0
            sp = ref_img.GetSpacing()[::-1]
            m = structure_metrics(ref, p.mask, sp)
            det = detect_clips(ref, p.mask, sp)
            rows.append({"case_id": p.case_id, "dsc": m.dsc, "hd95": m.hd95, "asd": m.assd,
                         "found": det.true_positives, "missed": det.missed, "false": det.false_positives,
                         "roi": p.roi.source if p.roi else ""})
        out[method] = {"cases": rows,
                       "dsc_mean": float(np.nanmean([r["dsc"] for r in rows])),
                       "hd95_mean": float(np.nanmean([r["hd95"] for r in rows])),
                       "asd_mean": float(np.nanmean([r["asd"] for r in rows])),
                       "found": sum(r["found"] for r in rows), "missed": sum(r["missed"] for r in rows),
                       "false": sum(r["false"] for r in rows)}
    return out


def time_methods(work, t1, t2, ts, device, checkpoint) -> dict:
    from nnunet_breast.clips.predict import predict_clips
    from nnunet_breast.inputs import load_inputs

    cases = load_inputs(work / "export_speed")
    res = {"shape_zyx": list(cases[0].image.GetSize()[::-1])}
    for method in ("single", "cascade"):
        t0 = time.perf_counter()
        opts = _opts(method, t1, t2, ts, device, checkpoint, (0,))
        preds, stages = predict_clips(cases, work / f"speed_{method}", opts, progress=False)
        res[f"{method}_s"] = round(time.perf_counter() - t0, 2)
        res[f"{method}_stages_s"] = {k: round(v, 2) for k, v in stages.items()}
        if preds[0].roi is not None:
            res["roi_size_zyx"] = list(preds[0].roi.size)
            res["roi_source"] = preds[0].roi.source
    res["speedup"] = round(res["single_s"] / res["cascade_s"], 2)
    return res


def markdown(q: dict) -> str:
    lines = ["| method | DSC | HD95 (mm) | ASD (mm) | clips found | missed | false |", "|---|---|---|---|---|---|---|"]
    for m, r in q.items():
        lines.append(f"| {m} | {r['dsc_mean']:.3f} | {r['hd95_mean']:.2f} | {r['asd_mean']:.2f} | {r['found']} | "
                     f"{r['missed']} | {r['false']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
