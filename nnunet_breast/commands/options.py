"""Argument groups shared by commands, so that an option is spelled one way everywhere (argparse only).

``predict`` and ``predict-clips`` both take the clip model as

  --clips-method {cascade,single,threshold} --clips-d ID [--clips-tr T] [--clips-c C] [--clips-f F ...]
  --stage2-id ID [--stage2-tr T] [--stage2-c C] [--stage2-f F ...] [--threshold-hu HU] [--min-clip-mm3 V]

and nnU-Net's predictor options as nnUNetv2_predict spells them (-p, -chk, -device, --disable_tta, -step_size, -npp,
-nps) and --no-fast-path. ``predict``, ``serve`` and ``watch`` share every prediction option (:func:`add_prediction`).
Defaults of the clip models: :data:`nnunet_breast.clips.CLIP_MODEL_DEFAULTS`, filled in by
:func:`nnunet_breast.inference.predictor.clip_model_refs`.
"""
from __future__ import annotations

from pathlib import Path

from nnunet_breast.clips import CLIP_MODEL_DEFAULTS, DEFAULT_THRESHOLD_HU, MIN_CLIP_MM3

CLIP_METHODS = ("cascade", "single", "threshold")


def add_input_output(p) -> None:
    p.add_argument("-i", "--input", required=True, type=Path, help="DICOM folder or NIfTI file/folder (read only)")
    p.add_argument("-o", "--output", required=True, type=Path)


def add_clip_model(p):
    """The clip-model group; read it back with :func:`clip_model_kwargs`."""
    (t1, c1), (t2, c2), (ts, cs) = (CLIP_MODEL_DEFAULTS[k] for k in ("stage1", "stage2", "single"))
    g = p.add_argument_group("clip model")
    g.add_argument("--clips-method", choices=CLIP_METHODS, default="cascade",
                   help="cascade: stage 1 (whole CT) -> ROI -> stage 2 (default); single: one model on the whole CT; "
                        "threshold: HU threshold inside the body (no model)")
    g.add_argument("--clips-d", type=int, help="clip dataset of stage 1 / the single-stage model")
    g.add_argument("--clips-tr", help=f"stage-1 trainer ({t1}; single: {ts})")
    g.add_argument("--clips-c", help=f"stage-1 configuration ({c1}; single: {cs})")
    g.add_argument("--clips-f", nargs="+", help="stage-1 folds (default: all trained folds)")
    g.add_argument("--stage2-id", type=int, help="stage-2 dataset (written by `cascade prepare`)")
    g.add_argument("--stage2-tr", help=f"stage-2 trainer ({t2})")
    g.add_argument("--stage2-c", help=f"stage-2 configuration ({c2})")
    g.add_argument("--stage2-f", nargs="+", help="stage-2 folds (default: all trained folds)")
    g.add_argument("--threshold-hu", type=float, default=DEFAULT_THRESHOLD_HU,
                   help=f"threshold method: HU ({DEFAULT_THRESHOLD_HU:g})")
    g.add_argument("--min-clip-mm3", type=float, default=MIN_CLIP_MM3,
                   help=f"drop clip components smaller than this ({MIN_CLIP_MM3:g} mm^3: half the metal of the "
                        "smallest clip)")
    return g


def clip_model_kwargs(args) -> dict:
    """The clip-model options as keyword arguments of :func:`nnunet_breast.inference.predictor.clip_model_refs`."""
    return {"method": args.clips_method, "dataset_id": args.clips_d, "trainer": args.clips_tr,
            "configuration": args.clips_c, "folds": args.clips_f, "stage2_id": args.stage2_id,
            "stage2_trainer": args.stage2_tr, "stage2_configuration": args.stage2_c, "stage2_folds": args.stage2_f,
            "plans": args.plans, "checkpoint": args.checkpoint}


def add_tps_export(p):
    """What a department configures for the DICOM it imports; read back with :func:`rtstruct_settings`."""
    g = p.add_argument_group("TPS export (DICOM input)")
    g.add_argument("--structure-set-label", help="StructureSetLabel, at most 16 characters (NNUNET_AUTO; with "
                                                 "--add-to the original's)")
    g.add_argument("--series-description", default="nnunet_breast auto-contours",
                   help="SeriesDescription of the RTSTRUCT, as the TPS lists it")
    g.add_argument("--name-map", type=Path, help='JSON {"<catalog name>": "<your ROI name>", ...}: institution names '
                                                 "written to the RTSTRUCT instead of the TG-263 ones")
    g.add_argument("--add-to", type=Path, nargs="+", metavar="RS.dcm",
                   help="write our ROIs into a copy of this existing structure set of an input CT (one per CT; "
                        "the file itself is never changed)")
    g.add_argument("--on-clash", choices=("refuse", "suffix"), default="refuse",
                   help="--add-to: an ROI name the structure set already has: refuse (default) or add ours as "
                        "<name>_AI")
    g.add_argument("--seg", action="store_true", help="also write SEG.<case>.dcm, a DICOM Segmentation of the CT")
    return g


def rtstruct_settings(args):
    """The TPS-export options as :class:`nnunet_breast.dicom.rtstruct_export.RTStructSettings`."""
    from nnunet_breast.dicom.rtstruct_export import RTStructSettings, load_name_map

    return RTStructSettings(args.structure_set_label, args.series_description,
                            load_name_map(args.name_map) if args.name_map else {}, tuple(args.add_to or ()),
                            args.on_clash)


def add_predictor(p):
    """nnU-Net's predictor options, spelled as nnUNetv2_predict spells them."""
    g = p.add_argument_group("nnU-Net predictor")
    g.add_argument("-p", "--plans", default="nnUNetPlans", help="plans of every model (nnUNetPlans)")
    g.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth")
    g.add_argument("-device", "--device", choices=("cuda", "cpu"), help="default: cuda when available")
    g.add_argument("--disable_tta", action="store_true", help="no test-time mirroring (faster)")
    g.add_argument("-step_size", type=float, default=0.5,
                   help="sliding-window step as a fraction of the patch (nnU-Net's 0.5; 0.75: fewer patches, faster)")
    g.add_argument("-npp", type=int, default=1,
                   help="nnU-Net preprocessing processes of the clip models (1; the breast model predicts one CT at a "
                        "time in this process)")
    g.add_argument("-nps", type=int, default=1, help="nnU-Net export processes of the clip models (1)")
    g.add_argument("--fast-path", choices=("box", "grid", "off"), default="box",
                   help="patches for the body's bounding box + 20 mm only, in bf16 on CPUs that compute bf16 natively: "
                        "box (default): the box tiled with the fewest patches, masks independent of the field of "
                        "view; grid: nnU-Net's own tiles that meet the box, nnU-Net's masks inside it; off: nnU-Net's "
                        "predictor unchanged (every patch, fp32 on a CPU)")
    g.add_argument("--no-fast-path", dest="fast_path", action="store_const", const="off",
                   help="the same as --fast-path off")
    return g


def add_prediction(p):
    """What to predict and how (``predict``, and ``serve`` / ``watch``, which predict each case as it does); read it
    back with :func:`predict_options`."""
    p.add_argument("--model", choices=("breast", "clips", "both"), default="breast")
    b = p.add_argument_group("breast model")
    b.add_argument("-d", "--dataset-id", type=int, help="breast dataset the model was trained on")
    b.add_argument("-tr", "--trainer", default="nnUNetTrainerEffNetB0")
    b.add_argument("-c", "--configuration", default="3d_fullres_effnetb0")
    b.add_argument("-f", "--folds", nargs="+", help="folds to ensemble (default: all trained folds)")
    add_clip_model(p)
    t = p.add_argument_group("tumour-bed proposal")
    t.add_argument("--margin-mm", type=float, default=10.0, help="margin around the clips' convex hull (10)")
    t.add_argument("--outlier-mm", type=float, default=40.0,
                   help="leave out clips this far from the others' median (40; 0 keeps all)")
    add_predictor(p)
    add_tps_export(p)
    p.add_argument("--min-island-cc", type=float, default=0.1,
                   help="drop structure parts smaller than this (cc; 0.1); the largest part is always kept")
    p.add_argument("--no-rtstruct", action="store_true")
    p.add_argument("--no-preview", action="store_true")
    p.add_argument("--no-qa-report", action="store_true", help="no qa_report.html per case")
    p.add_argument("--no-spacing-check", action="store_true", help="predict even on voxel sizes unlike training")


def predict_options(args):
    """The prediction options as :class:`nnunet_breast.inference.predict.PredictOptions`."""
    from nnunet_breast.clips.predict import ClipPredictOptions
    from nnunet_breast.inference.predict import PredictOptions
    from nnunet_breast.inference.predictor import ModelRef, clip_model_refs, default_device, folds_arg

    device = args.device or default_device()
    breast = clips = None
    if args.model in ("breast", "both") and args.dataset_id is not None:
        breast = ModelRef(args.dataset_id, args.trainer, args.configuration, args.plans, folds_arg(args.folds),
                          args.checkpoint)
    if args.model in ("clips", "both"):
        stage1, stage2 = clip_model_refs(**clip_model_kwargs(args))
        clips = ClipPredictOptions(args.clips_method, stage1, stage2, device, not args.disable_tta,
                                   tile_step_size=args.step_size, threshold_hu=args.threshold_hu,
                                   num_processes_preprocessing=args.npp, num_processes_export=args.nps,
                                   min_clip_mm3=args.min_clip_mm3,
                                   fast_path=args.fast_path)
    return PredictOptions(args.model, breast, clips, device, not args.disable_tta, args.min_island_cc, args.margin_mm,
                          args.outlier_mm or None, not args.no_rtstruct, not args.no_preview,
                          check_spacing=not args.no_spacing_check, seg=args.seg, tile_step_size=args.step_size,
                          rtstruct_settings=rtstruct_settings(args), fast_path=args.fast_path,
                          qa_report=not args.no_qa_report)
