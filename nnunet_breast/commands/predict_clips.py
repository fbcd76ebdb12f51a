"""Surgical clips on new CTs: the two-stage cascade, or a baseline, with one output format.

  nnunet-breast predict-clips -i CT_DICOM_OR_NIFTI -o OUT -d 502 --stage2-id 503 [-f 0 1 2 3 4] [-device cpu]
  nnunet-breast predict-clips -i IN -o OUT --method single -d 502 -c 3d_clip_fullres -tr nnUNetTrainerClipSingleStage
  nnunet-breast predict-clips -i IN -o OUT --method threshold [--threshold-hu 1500]

Input: a DICOM export (any layout, one or many CT series) or NIfTI files (<case>.nii.gz / <case>_0000.nii.gz).
Output per case: OUT/<case>.nii.gz (clip mask on the CT grid) and OUT/<case>_clips.json (one entry per clip:
centroid in patient mm, volume, max HU; the ROI and models used); OUT/clips.csv one row per case.
Runs nnU-Net's own predictor (fold ensemble, sliding window). Exit 0 on success, 2 on a refused run.
"""
from __future__ import annotations

from pathlib import Path

from nnunet_breast.cli import UserError
from nnunet_breast.clips import MIN_CLIP_MM3

HELP = "predict surgical clips (cascade, single-stage or threshold) -> NIfTI masks + clips.json"


def add_model_arguments(p, stage2: bool = True) -> None:
    p.add_argument("-d", "--dataset-id", type=int, help="clip dataset of stage 1 / the single-stage model")
    p.add_argument("-tr", "--trainer", help="stage-1 trainer (nnUNetTrainerClipLocation; single: "
                                            "nnUNetTrainerClipSingleStage)")
    p.add_argument("-c", "--configuration", help="stage-1 configuration (3d_clip_location; single: 3d_clip_fullres)")
    p.add_argument("-p", "--plans", default="nnUNetPlans")
    p.add_argument("-f", "--folds", nargs="+", help="folds to ensemble (default: all trained folds)")
    p.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth")
    if stage2:
        p.add_argument("--stage2-id", type=int, help="stage-2 dataset (written by `cascade prepare`)")
        p.add_argument("-tr2", "--stage2-trainer", default="nnUNetTrainerClipSegmentation")
        p.add_argument("-c2", "--stage2-configuration", default="3d_clip_segmentation")
        p.add_argument("-f2", "--stage2-folds", nargs="+", help="stage-2 folds (default: all trained folds)")
    p.add_argument("-device", "--device", choices=("cuda", "cpu"), help="default: cuda when available")
    p.add_argument("--disable_tta", action="store_true", help="no test-time mirroring (faster)")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step (nnU-Net's 0.5)")
    p.add_argument("-npp", type=int, default=1, help="nnU-Net preprocessing processes")
    p.add_argument("-nps", type=int, default=1, help="nnU-Net export processes")


def add_arguments(p):
    p.add_argument("-i", "--input", required=True, type=Path, help="DICOM folder or NIfTI file/folder (read only)")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--method", choices=("cascade", "single", "threshold"), default="cascade")
    add_model_arguments(p)
    p.add_argument("--threshold-hu", type=float, default=1500.0, help="threshold method: HU (1500)")
    p.add_argument("--min-clip-mm3", type=float, default=MIN_CLIP_MM3,
                   help=f"drop components smaller than this ({MIN_CLIP_MM3:g} mm^3: half the metal of the "
                        "smallest clip)")
    p.add_argument("--side", choices=("L", "R"), help="treated side, used only when stage 1 finds no clip")
    p.add_argument("--keep-work", action="store_true", help="keep intermediate files in OUT/.work")


def folds_arg(values):
    """nnU-Net's -f values: ints, or 'all'; None when not given (every trained fold)."""
    return None if not values else tuple(v if v == "all" else int(v) for v in values)


def clip_model_refs(method: str, dataset_id, trainer, configuration, stage2_id, stage2_trainer, stage2_configuration,
                    plans: str = "nnUNetPlans", folds=None, stage2_folds=None, checkpoint: str = "checkpoint_final.pth"):
    """(stage 1 or single model, stage 2) for a clip method, with the defaults of each method."""
    from nnunet_breast.inference.predictor import ModelRef

    if method == "threshold":
        return None, None
    if dataset_id is None:
        raise UserError(f"the clip method {method} needs the clip dataset its model was trained on (-d / --clips-d)")
    single = method == "single"
    stage1 = ModelRef(dataset_id, trainer or ("nnUNetTrainerClipSingleStage" if single else "nnUNetTrainerClipLocation"),
                      configuration or ("3d_clip_fullres" if single else "3d_clip_location"), plans, folds_arg(folds),
                      checkpoint)
    if single:
        return stage1, None
    if stage2_id is None:
        raise UserError("the clip cascade needs --stage2-id (the dataset written by `cascade prepare`)")
    return stage1, ModelRef(stage2_id, stage2_trainer, stage2_configuration, plans, folds_arg(stage2_folds), checkpoint)


def clip_options(args):
    from nnunet_breast.clips.predict import ClipPredictOptions
    from nnunet_breast.inference.predictor import default_device

    stage1, stage2 = clip_model_refs(args.method, args.dataset_id, args.trainer, args.configuration, args.stage2_id,
                                     args.stage2_trainer, args.stage2_configuration, args.plans, args.folds,
                                     args.stage2_folds, args.checkpoint)
    return ClipPredictOptions(args.method, stage1, stage2, args.device or default_device(), not args.disable_tta,
                              args.step_size, args.threshold_hu, args.side, args.npp, args.nps, args.keep_work,
                              args.min_clip_mm3)


def run(args) -> int:
    from nnunet_breast.clips.predict import predict_clips
    from nnunet_breast.inference.inputs import InputError, load_inputs

    opts = clip_options(args)
    try:
        cases = load_inputs(args.input)
        if args.output.resolve().is_relative_to(args.input.resolve()) and args.input.is_dir():
            raise UserError(f"the output {args.output} lies inside the input {args.input}; choose another folder")
        args.output.mkdir(parents=True, exist_ok=True)
        results, timings = predict_clips(cases, args.output, opts)
    except (InputError, ValueError) as e:
        raise UserError(str(e)) from None
    for r in results:
        src = f", ROI {r.roi.source}" if r.roi is not None else ""
        print(f"{r.case_id}: {len(r.clips)} clip(s){src} -> {r.files['mask']}")
    print("time: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in timings.items()))
    return 0
