"""The two-stage surgical-clip model around nnU-Net: stage-2 data from stage 1, prediction, baselines.

    prepare.py    out-of-fold stage-1 probability maps -> stage-2 nnU-Net dataset (ROI crops + map channel)
    predict.py    stage 1 -> ROI -> stage 2 -> paste back, through nnU-Net's own predictor; also the
                  single-stage and threshold baselines, all writing the same outputs
    roi.py        the stage-2 ROI from a stage-1 map (box, margin, minimum size, fallback), crop and paste back
    threshold.py  the threshold baseline (HU threshold inside the body mask, connected components)
    table.py      one row per predicted clip: centroid in patient mm, volume, maximum HU (clips.json)
    tumour_bed.py the boost's tumour-bed proposal: convex hull of the clips + a true mm margin
"""

# Smallest clip component any method reports: half the metal of the smallest clip (a medium ligating clip,
# 5 mm x 2 mm: pi * 1 mm^2 * 5 mm ~ 16 mm^3). Here, not in predict.py, so that the CLIs' --help stays light.
MIN_CLIP_MM3 = 8.0
#: the threshold baseline's HU: well above bone and contrast, below a clip's partial-volume core
DEFAULT_THRESHOLD_HU = 1500.0

#: (trainer, configuration) of each clip model as trained by default: the cascade's stage 1 (location net, coarse
#: whole CT) and stage 2 (segmentation net on the ROI), and the single-stage baseline
CLIP_MODEL_DEFAULTS = {
    "stage1": ("nnUNetTrainerClipLocation", "3d_clip_location"),
    "stage2": ("nnUNetTrainerClipSegmentation", "3d_clip_segmentation"),
    "single": ("nnUNetTrainerClipSingleStage", "3d_clip_fullres"),
}
