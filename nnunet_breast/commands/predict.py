"""Contours for new planning CTs: breast structures, surgical clips + tumour-bed proposal, or both.

  nnunet-breast predict -i DICOM_OR_NIFTI -o OUT --model breast -d 501 [-f 0 1 2 3 4]
  nnunet-breast predict -i IN -o OUT --model clips --clips-d 502 --stage2-id 503
  nnunet-breast predict -i IN -o OUT --model both -d 501 --clips-d 502 --stage2-id 503 [-device cuda]

Input: a DICOM export (any layout, one or many patients; non-CT objects are ignored) or NIfTI CTs in HU.
Per case OUT/<case>/: masks/<Structure>.nii.gz, RS.<case>.dcm (RTSTRUCT for the TPS, DICOM input only),
clips.json and masks/CTV_TumorBed_proposal.nii.gz (clip model), preview.png, summary.json. OUT/summary.csv: one
row per finished case in OUT. For the TPS (DICOM input): --structure-set-label, --series-description,
--name-map names.json, --add-to RS.dcm [--on-clash refuse|suffix], --seg (SEG.<case>.dcm, DICOM Segmentation).
Existing case folders are skipped (--overwrite replaces them). -num_parts/-part_id split the cases between
machines as nnUNetv2_predict does; parts may run at the same time into one OUT. Exit 0 on success, 2 on a
refused run (bad input, missing model).
"""
from __future__ import annotations

from nnunet_breast.commands import options

HELP = "predict on new CTs (DICOM or NIfTI) -> NIfTI masks, RTSTRUCT, clips.json, tumour-bed proposal, PNG"


def add_arguments(p):
    options.add_input_output(p)
    p.add_argument("--model", choices=("breast", "clips", "both"), default="breast")
    b = p.add_argument_group("breast model")
    b.add_argument("-d", "--dataset-id", type=int, help="breast dataset the model was trained on")
    b.add_argument("-tr", "--trainer", default="nnUNetTrainerEffNetB0")
    b.add_argument("-c", "--configuration", default="3d_fullres_effnetb0")
    b.add_argument("-f", "--folds", nargs="+", help="folds to ensemble (default: all trained folds)")
    options.add_clip_model(p)
    t = p.add_argument_group("tumour-bed proposal")
    t.add_argument("--margin-mm", type=float, default=10.0, help="margin around the clips' convex hull (10)")
    t.add_argument("--outlier-mm", type=float, default=40.0,
                   help="leave out clips this far from the others' median (40; 0 keeps all)")
    options.add_predictor(p)
    options.add_tps_export(p)
    p.add_argument("-num_parts", type=int, default=1)
    p.add_argument("-part_id", type=int, default=0)
    p.add_argument("--min-island-cc", type=float, default=0.1,
                   help="drop structure parts smaller than this (cc; 0.1); the largest part is always kept")
    p.add_argument("--no-rtstruct", action="store_true")
    p.add_argument("--no-preview", action="store_true")
    p.add_argument("--no-spacing-check", action="store_true", help="predict even on voxel sizes unlike training")
    p.add_argument("--overwrite", action="store_true", help="replace existing case folders")


def build_options(args):
    from nnunet_breast.clips.predict import ClipPredictOptions
    from nnunet_breast.inference.predict import PredictOptions
    from nnunet_breast.inference.predictor import ModelRef, clip_model_refs, default_device, folds_arg

    device = args.device or default_device()
    breast = clips = None
    if args.model in ("breast", "both") and args.dataset_id is not None:
        breast = ModelRef(args.dataset_id, args.trainer, args.configuration, args.plans, folds_arg(args.folds),
                          args.checkpoint)
    if args.model in ("clips", "both"):
        stage1, stage2 = clip_model_refs(**options.clip_model_kwargs(args))
        clips = ClipPredictOptions(args.clips_method, stage1, stage2, device, not args.disable_tta,
                                   threshold_hu=args.threshold_hu, num_processes_preprocessing=args.npp,
                                   num_processes_export=args.nps, min_clip_mm3=args.min_clip_mm3,
                                   fast_path=not args.no_fast_path)
    return PredictOptions(args.model, breast, clips, device, not args.disable_tta, args.min_island_cc, args.margin_mm,
                          args.outlier_mm or None, not args.no_rtstruct, not args.no_preview, args.num_parts,
                          args.part_id, args.overwrite, not args.no_spacing_check,
                          seg=args.seg, rtstruct_settings=options.rtstruct_settings(args),
                          fast_path=not args.no_fast_path)


def run(args) -> int:
    from nnunet_breast.inference.predict import predict

    results = predict(args.input, args.output, build_options(args))
    for r in results:
        if r.skipped:
            print(f"{r.case_id}: exists, skipped (--overwrite to redo)")
            continue
        extra = f", {r.n_clips} clip(s), tumour-bed proposal {r.proposal_cc} cc" if r.n_clips is not None else ""
        rs = f", {r.rtstruct.name}" if r.rtstruct else ""
        if r.seg:
            rs += f", {r.seg.name}" + (f" (empty, left out: {', '.join(r.seg_left_out)})" if r.seg_left_out else "")
        print(f"{r.case_id}: {len(r.structures)} structure(s){extra}{rs} -> {r.folder}")
    print(f"summary: {args.output / 'summary.csv'}")
    return 0
