"""Trainers for the EfficientNet-B0 U-Net (Chung et al. 2021).

The network comes from the plans: configurations written by ``nnunet-breast plan`` name
``EfficientNetUNet3d`` with its kwargs. On any other configuration (e.g. stock ``3d_fullres``) these
trainers build the same network from that configuration's strides and kernel sizes, so
``nnUNetv2_train 501 3d_fullres 0 -tr nnUNetTrainerEffNetB0`` also works. Prediction uses the same
static builder, so a checkpoint always meets the network it was trained with.
"""
from __future__ import annotations

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_breast.planning import EFFNET_CLASS, effnet_architecture
from nnunet_breast.trainers.augmentation import INTENSITY_TRANSFORMS, transform_name
from nnunet_breast.trainers.tiny import DemoCPUSchedule, QuickDemoCPUSchedule, ShortCPUSchedule, TinyCPUSchedule


def effnet_from_configuration(configuration_manager, num_input_channels, num_output_channels,
                              enable_deep_supervision, **overrides):
    arch = configuration_manager.configuration["architecture"]
    if arch["network_class_name"] == EFFNET_CLASS:
        kwargs = dict(arch["arch_kwargs"], **overrides)
        required = arch["_kw_requires_import"]
    else:
        ours = effnet_architecture(arch["arch_kwargs"]["strides"], arch["arch_kwargs"]["kernel_sizes"], **overrides)
        kwargs, required = ours["arch_kwargs"], ours["_kw_requires_import"]
    return get_network_from_plans(EFFNET_CLASS, kwargs, required, num_input_channels, num_output_channels,
                                  allow_init=True, deep_supervision=enable_deep_supervision)


class nnUNetTrainerEffNetB0(nnUNetTrainer):
    """nnU-Net's recipe (SGD + poly LR, CE+Dice or the region loss, deep supervision) with the B0 U-Net."""

    network_overrides: dict = {}

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        return effnet_from_configuration(configuration_manager, num_input_channels, num_output_channels,
                                         enable_deep_supervision, **cls.network_overrides)


class nnUNetTrainerEffNetB0Paper(nnUNetTrainerEffNetB0):
    """The paper's recipe: RMSprop (lr 5e-4, weight decay 1e-4), CE + Dice, scaling/flip/rotation only.

    The paper gives no schedule beyond the initial rate; we keep nnU-Net's poly decay. nnU-Net's intensity
    augmentations (noise, blur, brightness, contrast, gamma, low resolution) are dropped, as the paper lists
    only spatial ones.
    """

    INTENSITY_TRANSFORMS = INTENSITY_TRANSFORMS

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 5e-4
        self.weight_decay = 1e-4

    def configure_optimizers(self):
        from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

        optimizer = torch.optim.RMSprop(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    @staticmethod
    def get_training_transforms(*args, **kwargs):
        pipeline = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        pipeline.transforms = [t for t in pipeline.transforms
                               if transform_name(t) not in INTENSITY_TRANSFORMS]
        return pipeline


class nnUNetTrainerEffNetB0_5epochs(nnUNetTrainerEffNetB0):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 5


class nnUNetTrainerEffNetB0_10epochs(nnUNetTrainerEffNetB0):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 10


class nnUNetTrainerEffNetB0_50epochs(nnUNetTrainerEffNetB0):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 50


class nnUNetTrainerEffNetB0Paper_5epochs(nnUNetTrainerEffNetB0Paper):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 5


class nnUNetTrainerEffNetB0Tiny_2epochs(TinyCPUSchedule, nnUNetTrainerEffNetB0):
    """nnUNetTrainerEffNetB0 at 1/4 width on the tiny CPU schedule: tests and the demo."""

    network_overrides = {"width_multiplier": 0.25, "stem_features": 4}


class nnUNetTrainerEffNetB0PaperTiny_2epochs(TinyCPUSchedule, nnUNetTrainerEffNetB0Paper):
    """nnUNetTrainerEffNetB0Paper at 1/4 width on the tiny CPU schedule: tests."""

    network_overrides = {"width_multiplier": 0.25, "stem_features": 4}


class nnUNetTrainerEffNetB0ShortCPU(ShortCPUSchedule, nnUNetTrainerEffNetB0):
    """nnUNetTrainerEffNetB0 at 1/2 width on the short CPU schedule: the demo."""

    network_overrides = {"width_multiplier": 0.5, "stem_features": 8}


class nnUNetTrainerEffNetB0DemoCPU(DemoCPUSchedule, nnUNetTrainerEffNetB0):
    """nnUNetTrainerEffNetB0 at 1/4 width on the demo's CPU schedule (about 2 s per iteration on 2 cores)."""

    network_overrides = {"width_multiplier": 0.25, "stem_features": 4}


class nnUNetTrainerEffNetB0QuickCPU(QuickDemoCPUSchedule, nnUNetTrainerEffNetB0):
    """`nnunet-breast demo --quick`: 1/4 width, 2 x 2 iterations, foreground-prior heads (tests)."""

    network_overrides = {"width_multiplier": 0.25, "stem_features": 4}
