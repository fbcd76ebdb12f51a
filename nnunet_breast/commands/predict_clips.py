"""Surgical clips on new CTs: the two-stage cascade, or a baseline, with one output format.

  nnunet-breast predict-clips -i CT_DICOM_OR_NIFTI -o OUT --clips-d 502 --stage2-id 503 [--clips-f 0 1 2 3 4] \\
                              [-device cpu]
  nnunet-breast predict-clips -i IN -o OUT --clips-method single --clips-d 502
  nnunet-breast predict-clips -i IN -o OUT --clips-method threshold [--threshold-hu 1500]

The clip-model options are spelled as in `nnunet-breast predict --model clips`: --clips-method, --clips-d,
--clips-tr, --clips-c, --clips-f for stage 1 (or the single-stage model), --stage2-id, --stage2-tr,
--stage2-c, --stage2-f for stage 2. Input: a DICOM export (any layout, one or many CT series) or NIfTI files
(<case>.nii.gz / <case>_0000.nii.gz). Output per case: OUT/<case>.nii.gz (clip mask on the CT grid) and
OUT/<case>_clips.json (one entry per clip: centroid in patient mm, volume, max HU; the ROI and models used);
OUT/clips.csv one row per case. Runs nnU-Net's own predictor (fold ensemble, sliding window). Exit 0 on
success, 2 on a refused run.
"""
from __future__ import annotations

from nnunet_breast.commands import options

HELP = "predict surgical clips (cascade, single-stage or threshold) -> NIfTI masks + clips.json"


def add_arguments(p):
    options.add_input_output(p)
    options.add_clip_model(p)
    options.add_predictor(p)
    p.add_argument("--side", choices=("L", "R"), help="treated side, used only when stage 1 finds no clip")
    p.add_argument("--keep-work", action="store_true", help="keep intermediate files in OUT/.work")


def run(args) -> int:
    from nnunet_breast.clips.predict import ClipPredictOptions, predict_clips_from
    from nnunet_breast.inference.predictor import clip_model_refs, default_device

    stage1, stage2 = clip_model_refs(**options.clip_model_kwargs(args))
    opts = ClipPredictOptions(args.clips_method, stage1, stage2, args.device or default_device(),
                              use_mirroring=not args.disable_tta, tile_step_size=args.step_size,
                              threshold_hu=args.threshold_hu, side=args.side, num_processes_preprocessing=args.npp,
                              num_processes_export=args.nps, keep_work=args.keep_work, min_clip_mm3=args.min_clip_mm3,
                              fast_path=args.fast_path)
    results, timings = predict_clips_from(args.input, args.output, opts)
    for r in results:
        src = f", ROI {r.roi.source}" if r.roi is not None else ""
        print(f"{r.case_id}: {len(r.clips)} clip(s){src} -> {r.files['mask']}")
    print("time: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in timings.items()))
    return 0
