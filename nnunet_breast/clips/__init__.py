"""The two-stage surgical-clip model around nnU-Net: stage-2 data from stage 1, prediction, baselines.

    prepare.py    out-of-fold stage-1 probability maps -> stage-2 nnU-Net dataset (ROI crops + map channel)
    predict.py    stage 1 -> ROI -> stage 2 -> paste back, through nnU-Net's own predictor; also the
                  single-stage and threshold baselines, all writing the same outputs
    threshold.py  the threshold baseline (HU threshold inside the body mask, connected components)
    table.py      one row per predicted clip: centroid in patient mm, volume, maximum HU (clips.json)

The ROI geometry itself (box, margin, minimum size, fallback, crop, paste back) is
:mod:`nnunet_breast.clips.roi`.
"""

# Smallest clip component any method reports: half the metal of the smallest clip (a medium ligating clip,
# 5 mm x 2 mm: pi * 1 mm^2 * 5 mm ~ 16 mm^3). Here, not in predict.py, so that the CLIs' --help stays light.
MIN_CLIP_MM3 = 8.0
