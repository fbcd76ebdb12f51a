"""nnU-Net trainers of this package.

The classes live here, in the installed package, so that nnU-Net's spawn-based worker pools can pickle
them. nnU-Net finds them through the ``nnUNet_extTrainer`` folder, which only re-exports these names
(``nnunet_breast/ext_trainers``; ``nnunet-breast env`` prints the export line).
"""
from nnunet_breast.trainers.effnet import (nnUNetTrainerEffNetB0, nnUNetTrainerEffNetB0_5epochs,
                                           nnUNetTrainerEffNetB0_10epochs,
                                           nnUNetTrainerEffNetB0_50epochs, nnUNetTrainerEffNetB0Paper,
                                           nnUNetTrainerEffNetB0Paper_5epochs, nnUNetTrainerEffNetB0PaperTiny_2epochs,
                                           nnUNetTrainerEffNetB0Tiny_2epochs, nnUNetTrainerEffNetB0ShortCPU,
                                           nnUNetTrainerEffNetB0DemoCPU, nnUNetTrainerEffNetB0QuickCPU)
from nnunet_breast.trainers.clips import (nnUNetTrainerClipLocation, nnUNetTrainerClipLocation_5epochs,
                                          nnUNetTrainerClipLocationNoBinary, nnUNetTrainerClipLocationTiny_2epochs,
                                          nnUNetTrainerClipSegmentation, nnUNetTrainerClipSegmentation_5epochs,
                                          nnUNetTrainerClipSegmentationNoMap,
                                          nnUNetTrainerClipSegmentationTiny_2epochs, nnUNetTrainerClipSingleStage,
                                          nnUNetTrainerClipSingleStageTiny_2epochs, nnUNetTrainerClipLocationShortCPU,
                                          nnUNetTrainerClipSegmentationShortCPU, nnUNetTrainerClipSingleStageShortCPU,
                                          nnUNetTrainerClipSingleStage_5epochs, nnUNetTrainerClipLocationDemoCPU,
                                          nnUNetTrainerClipSegmentationDemoCPU, nnUNetTrainerClipSingleStageDemoCPU,
                                          nnUNetTrainerClipLocationQuickCPU, nnUNetTrainerClipSegmentationQuickCPU,
                                          nnUNetTrainerClipSingleStageQuickCPU)
from nnunet_breast.trainers.tiny import nnUNetTrainerTiny_2epochs

__all__ = ["nnUNetTrainerTiny_2epochs", "nnUNetTrainerEffNetB0", "nnUNetTrainerEffNetB0_5epochs", "nnUNetTrainerEffNetB0_10epochs",
           "nnUNetTrainerEffNetB0_50epochs", "nnUNetTrainerEffNetB0Paper", "nnUNetTrainerEffNetB0Paper_5epochs",
           "nnUNetTrainerEffNetB0Tiny_2epochs", "nnUNetTrainerEffNetB0PaperTiny_2epochs", "nnUNetTrainerEffNetB0ShortCPU", "nnUNetTrainerEffNetB0DemoCPU", "nnUNetTrainerEffNetB0QuickCPU",
           "nnUNetTrainerClipLocation", "nnUNetTrainerClipLocationNoBinary", "nnUNetTrainerClipSegmentation",
           "nnUNetTrainerClipSegmentationNoMap", "nnUNetTrainerClipLocation_5epochs",
           "nnUNetTrainerClipSegmentation_5epochs", "nnUNetTrainerClipLocationTiny_2epochs",
           "nnUNetTrainerClipSegmentationTiny_2epochs", "nnUNetTrainerClipSingleStage",
           "nnUNetTrainerClipSingleStageTiny_2epochs", "nnUNetTrainerClipLocationShortCPU",
           "nnUNetTrainerClipSegmentationShortCPU", "nnUNetTrainerClipSingleStageShortCPU",
           "nnUNetTrainerClipSingleStage_5epochs", "nnUNetTrainerClipLocationDemoCPU",
           "nnUNetTrainerClipSegmentationDemoCPU", "nnUNetTrainerClipSingleStageDemoCPU",
           "nnUNetTrainerClipLocationQuickCPU", "nnUNetTrainerClipSegmentationQuickCPU",
           "nnUNetTrainerClipSingleStageQuickCPU"]
