"""Build the stage-2 (segmentation net) dataset of the clip cascade from stage 1's out-of-fold maps.

  nnunet-breast convert clips -i EXPORT -d 502
  nnUNetv2_plan_and_preprocess -d 502 --no_pp && nnunet-breast plan -d 502 --model clips
  nnUNetv2_preprocess -d 502 -c 3d_clip_location
  nnUNetv2_train 502 3d_clip_location FOLD -tr nnUNetTrainerClipLocation --npz       # FOLD = 0 .. 4
  nnunet-breast cascade prepare -d 502 --stage2-id 503
  nnUNetv2_plan_and_preprocess -d 503 --no_pp && nnunet-breast plan -d 503 --model clips
  nnUNetv2_preprocess -d 503 -c 3d_clip_segmentation
  nnUNetv2_train 503 3d_clip_segmentation FOLD -tr nnUNetTrainerClipSegmentation

Per case: ROI = predicted clip voxels (probability >= --threshold) + --margin-mm, at least --min-size-mm
per axis (96 voxels x 2 mm); CT (raw HU) and probability cropped to it as channels 0 and 1, label likewise;
cascade_rois.json records every ROI, its source (prediction or fallback when stage 1 found nothing) and
labelled clip voxels left outside. Stage 1's splits are copied so that the folds of both stages agree.
"""
from __future__ import annotations

HELP = "clip cascade: build the stage-2 dataset from stage-1 out-of-fold probability maps"


def add_arguments(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    prep = sub.add_parser("prepare", help="stage-2 dataset (ROI crops + probability channel)",
                          description=__doc__)
    prep.add_argument("-d", "--dataset-id", required=True, type=int, help="stage-1 (whole-CT clip) dataset")
    prep.add_argument("--stage2-id", required=True, type=int, help="id of the stage-2 dataset to write")
    prep.add_argument("--name", help="stage-2 dataset name (default: <stage-1 name>Stage2)")
    prep.add_argument("-tr", "--trainer", default="nnUNetTrainerClipLocation", help="stage-1 trainer")
    prep.add_argument("-p", "--plans", default="nnUNetPlans", help="stage-1 plans")
    prep.add_argument("-c", "--configuration", default="3d_clip_location", help="stage-1 configuration")
    prep.add_argument("--threshold", type=float, default=0.5, help="clip probability threshold (0.5)")
    prep.add_argument("--margin-mm", type=float, default=10.0, help="margin around the predicted clips (10)")
    prep.add_argument("--min-size-mm", type=float, default=192.0,
                      help="minimum ROI edge per axis, mm (192 = 96 voxels at 2 mm)")
    prep.add_argument("--no-map", action="store_true",
                      help="CT crops only (ablation: nnUNetTrainerClipSegmentationNoMap); the ROI still from stage 1")
    prep.add_argument("--overwrite", action="store_true", help="replace an existing stage-2 dataset")
    prep.add_argument("-np", "--num-processes", type=int, default=1, help="cases cropped in parallel")


def run(args) -> int:
    from nnunet_breast.clips.prepare import prepare_stage2
    from nnunet_breast.clips.roi import RoiSettings

    settings = RoiSettings(args.threshold, args.margin_mm, args.min_size_mm)
    result = prepare_stage2(args.dataset_id, args.stage2_id, name=args.name, trainer=args.trainer,
                            plans=args.plans, configuration=args.configuration, settings=settings,
                            with_map=not args.no_map, overwrite=args.overwrite,
                            num_processes=max(1, args.num_processes))
    n = len(result.rois)
    print(f"{result.dataset_dir}: {n} cases; ROI from the stage-1 prediction in {n - len(result.fallbacks)}, "
          f"fallback in {len(result.fallbacks)}")
    if result.clips_cut:
        print(f"  warning: labelled clip voxels outside the ROI in {len(result.clips_cut)} case(s): "
              f"{', '.join(result.clips_cut[:5])} (see cascade_rois.json)")
    print(f"next: nnUNetv2_plan_and_preprocess -d {args.stage2_id} --no_pp && nnunet-breast plan -d {args.stage2_id} "
          f"--model clips && nnUNetv2_preprocess -d {args.stage2_id} -c 3d_clip_segmentation")
    return 0
