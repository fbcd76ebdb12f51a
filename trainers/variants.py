"""Named schedule and width variants of our roles, as nnU-Net names its own (``_5epochs``, ...).

A variant = a schedule mixin (``schedules.py``) + width/LR class data + a role (``effnet.py``, ``clips.py``).
Every class must be module-level and named ``nnUNetTrainer*`` so that nnU-Net finds it by name and its spawned
workers can pickle it.
"""
from __future__ import annotations

from nnunet_breast.trainers.baseline import nnUNetTrainerNoLRMirroring
from nnunet_breast.trainers.clips import (
    nnUNetTrainerClipLocation,
    nnUNetTrainerClipSegmentation,
    nnUNetTrainerClipSegmentationPaperInputs,
    nnUNetTrainerClipSingleStage,
)
from nnunet_breast.trainers.effnet import nnUNetTrainerEffNetB0, nnUNetTrainerEffNetB0Paper
from nnunet_breast.trainers.recipes import ForegroundPatches, ForegroundPrior
from nnunet_breast.trainers.schedules import (
    DemoCPUSchedule,
    Epochs,
    QuickDemoCPUSchedule,
    ShortCPUSchedule,
    TinyCPUSchedule,
)


# ---------------------------------------------------------------------------------------------------------------------
# EfficientNet-B0 U-Net and its vanilla baseline
# ---------------------------------------------------------------------------------------------------------------------
class _Epochs5(Epochs):
    num_epochs_override = 5


class _Epochs10(Epochs):
    num_epochs_override = 10


class _Epochs50(Epochs):
    num_epochs_override = 50


class _QuarterWidth:
    """1/4 of B0's widths: CPU tests and the demo."""

    network_overrides = {"width_multiplier": 0.25, "stem_features": 4}


class nnUNetTrainerNoLRMirroring_5epochs(_Epochs5, nnUNetTrainerNoLRMirroring):
    pass


class nnUNetTrainerNoLRMirroring_10epochs(_Epochs10, nnUNetTrainerNoLRMirroring):
    pass


class nnUNetTrainerNoLRMirroring_50epochs(_Epochs50, nnUNetTrainerNoLRMirroring):
    pass


class nnUNetTrainerEffNetB0_5epochs(_Epochs5, nnUNetTrainerEffNetB0):
    pass


class nnUNetTrainerEffNetB0_10epochs(_Epochs10, nnUNetTrainerEffNetB0):
    pass


class nnUNetTrainerEffNetB0_50epochs(_Epochs50, nnUNetTrainerEffNetB0):
    pass


class nnUNetTrainerEffNetB0Paper_5epochs(_Epochs5, nnUNetTrainerEffNetB0Paper):
    pass


class nnUNetTrainerEffNetB0Tiny_2epochs(TinyCPUSchedule, _QuarterWidth, nnUNetTrainerEffNetB0):
    """nnUNetTrainerEffNetB0 at 1/4 width on the tiny CPU schedule: tests. nnU-Net's initialisation: from the
    prior, 4 iterations predict nothing, and on validation cases that lack a structure nnU-Net's Dice is then NaN,
    which ``nnUNetv2_find_best_configuration`` cannot rank (a trained model predicts something)."""

    foreground_prior = None


class nnUNetTrainerEffNetB0PaperTiny_2epochs(TinyCPUSchedule, _QuarterWidth, nnUNetTrainerEffNetB0Paper):
    """nnUNetTrainerEffNetB0Paper at 1/4 width on the tiny CPU schedule: tests."""


class nnUNetTrainerNoLRMirroringShortCPU(ShortCPUSchedule, nnUNetTrainerNoLRMirroring):
    """The vanilla baseline on the short CPU schedule: benchmarks/breast_accuracy.py on CPU."""


class nnUNetTrainerEffNetB0ShortCPU(ShortCPUSchedule, nnUNetTrainerEffNetB0):
    """nnUNetTrainerEffNetB0 (network as planned) on the short CPU schedule: benchmarks/breast_accuracy.py on CPU."""


class nnUNetTrainerEffNetB0PaperShortCPU(ShortCPUSchedule, nnUNetTrainerEffNetB0Paper):
    """The paper's recipe on the short CPU schedule: benchmarks/breast_accuracy.py on CPU."""


class _BreastLongCPU(ShortCPUSchedule):
    """24 epochs x 25 iterations: benchmarks/breast_accuracy.py --cpu-config (200 iterations leave every structure
    but heart and lungs at DSC 0; by 600 the breast CTV and the esophagus have started)."""

    schedule = (24, 25, 2)


class nnUNetTrainerNoLRMirroringLongCPU(_BreastLongCPU, nnUNetTrainerNoLRMirroring):
    """The vanilla baseline on the long CPU schedule (600 iterations)."""


class nnUNetTrainerEffNetB0LongCPU(_BreastLongCPU, nnUNetTrainerEffNetB0):
    """nnUNetTrainerEffNetB0 (network as planned) on the long CPU schedule (600 iterations)."""


class nnUNetTrainerEffNetB0Paper_10epochs(_Epochs10, nnUNetTrainerEffNetB0Paper):
    pass


class nnUNetTrainerEffNetB0DemoCPU(DemoCPUSchedule, nnUNetTrainerEffNetB0):
    """The demo's breast model on CPU: the network as planned (``plan --cpu``: 1/4 width), the demo's schedule."""


class _LearningTestSchedule(DemoCPUSchedule):
    """12 epochs x 50 iterations: the learning test's margin. At 300 iterations one run in about five still
    painted both lungs in both lung outputs (training is not deterministic)."""

    schedule = (12, 50, 1)


class nnUNetTrainerEffNetB0LearningCPU(_LearningTestSchedule, nnUNetTrainerEffNetB0):
    """The demo's trainer on 600 iterations: tests/test_learning.py."""


class nnUNetTrainerEffNetB0QuickCPU(QuickDemoCPUSchedule, nnUNetTrainerEffNetB0):
    """`nnunet-breast demo --quick`: the demo's trainer on 2 x 2 iterations (tests)."""


# ---------------------------------------------------------------------------------------------------------------------
# clip cascade (Res-SE-U-Net)
# ---------------------------------------------------------------------------------------------------------------------
class _TinyClip(TinyCPUSchedule):
    """Features 8, 16, 32, 32, ... on the tiny CPU schedule: tests."""

    feature_base = 8
    feature_cap = 32


class _ShortCPU(ShortCPUSchedule):
    """The clip benchmark's CPU schedule: 10 epochs x 50 iterations, features 16..128, Adam at 1e-3 (the paper's
    1e-4 belongs to its 1000 epochs; 500 iterations at 1e-4 leave the nets near their initialisation)."""

    schedule = (10, 50, 2)
    feature_base = 16
    feature_cap = 128
    adam_lr = 1e-3


class _LongCPU(_ShortCPU):
    """3x the ShortCPU schedule (30 epochs x 50 iterations) for the fine nets: same widths and LR."""

    schedule = (30, 50, 2)


class _ClipDemoCPUSchedule(ForegroundPatches, DemoCPUSchedule):
    """The clip models' CPU demo schedule: 4 epochs x 50 iterations, every patch centred on a clip, Adam at 3e-3
    (when a short run starts finding clips is a matter of chance; measured in docs/benchmarks.md)."""

    schedule = (4, 50, 1)
    foreground_patches = 1.0
    adam_lr = 3e-3


class _DemoCPU(ForegroundPrior):
    """Features 8..64, Adam at 1e-3 (see :class:`_ShortCPU`) and heads at a 1 % foreground prior: the CPU demo."""

    feature_base = 8
    feature_cap = 64
    adam_lr = 1e-3


class nnUNetTrainerClipLocation_5epochs(_Epochs5, nnUNetTrainerClipLocation):
    pass


class nnUNetTrainerClipSegmentation_5epochs(_Epochs5, nnUNetTrainerClipSegmentation):
    pass


class nnUNetTrainerClipSingleStage_5epochs(_Epochs5, nnUNetTrainerClipSingleStage):
    pass


class nnUNetTrainerClipLocationTiny_2epochs(_TinyClip, nnUNetTrainerClipLocation):
    pass


class nnUNetTrainerClipSegmentationTiny_2epochs(_TinyClip, nnUNetTrainerClipSegmentation):
    pass


class nnUNetTrainerClipSegmentationPaperInputsTiny_2epochs(_TinyClip, nnUNetTrainerClipSegmentationPaperInputs):
    pass


class nnUNetTrainerClipSingleStageTiny_2epochs(_TinyClip, nnUNetTrainerClipSingleStage):
    pass


class nnUNetTrainerClipLocationShortCPU(_ShortCPU, nnUNetTrainerClipLocation):
    pass


class nnUNetTrainerClipSegmentationShortCPU(_ShortCPU, nnUNetTrainerClipSegmentation):
    pass


class nnUNetTrainerClipSingleStageShortCPU(_ShortCPU, nnUNetTrainerClipSingleStage):
    pass


class nnUNetTrainerClipSegmentationPaperInputsShortCPU(_ShortCPU, nnUNetTrainerClipSegmentationPaperInputs):
    pass


class nnUNetTrainerClipSegmentationLongCPU(_LongCPU, nnUNetTrainerClipSegmentation):
    pass


class nnUNetTrainerClipSingleStageLongCPU(_LongCPU, nnUNetTrainerClipSingleStage):
    pass


class nnUNetTrainerClipLocationDemoCPU(_ClipDemoCPUSchedule, _DemoCPU, nnUNetTrainerClipLocation):
    pass


class nnUNetTrainerClipSegmentationDemoCPU(_ClipDemoCPUSchedule, _DemoCPU, nnUNetTrainerClipSegmentation):
    pass


class nnUNetTrainerClipSingleStageDemoCPU(_ClipDemoCPUSchedule, _DemoCPU, nnUNetTrainerClipSingleStage):
    pass


class nnUNetTrainerClipLocationQuickCPU(QuickDemoCPUSchedule, _DemoCPU, nnUNetTrainerClipLocation):
    pass


class nnUNetTrainerClipSegmentationQuickCPU(QuickDemoCPUSchedule, _DemoCPU, nnUNetTrainerClipSegmentation):
    pass


class nnUNetTrainerClipSingleStageQuickCPU(QuickDemoCPUSchedule, _DemoCPU, nnUNetTrainerClipSingleStage):
    pass

