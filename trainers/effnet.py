"""Trainers (roles) of the EfficientNet-B0 U-Net (Chung et al. 2021): nnU-Net's recipe and the paper's.

The network comes from the plans: configurations written by ``nnunet-breast plan`` name
``EfficientNetUNet3d`` with its kwargs. On any other configuration (e.g. stock ``3d_fullres``) these
trainers build the same network from that configuration's strides and kernel sizes, so
``nnUNetv2_train 501 3d_fullres 0 -tr nnUNetTrainerEffNetB0`` also works. Prediction uses the same
static builder, so a checkpoint always meets the network it was trained with. Schedule variants: ``variants.py``.
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_breast.networks.plans import build_effnet
from nnunet_breast.trainers.cpu import CPUAutocast
from nnunet_breast.trainers.laterality import NoLeftRightMirroring
from nnunet_breast.trainers.partial_labels import PartialLabels
from nnunet_breast.trainers.recipes import AdamWWarmupCosine, ForegroundPrior
from nnunet_breast.trainers.transforms import INTENSITY_TRANSFORMS, transform_name


class nnUNetTrainerEffNetB0(CPUAutocast, NoLeftRightMirroring, PartialLabels, AdamWWarmupCosine, ForegroundPrior,
                            nnUNetTrainer):
    """nnU-Net's trainer (data, augmentation, CE+Dice or the region loss, deep supervision, schedule) with the B0
    U-Net, AdamW 3e-3 with warm-up + cosine and heads at a 1 % foreground prior (``recipes.py``): under nnU-Net's
    SGD (1e-2, momentum 0.99, poly) this network learnt nothing in 200 iterations where AdamW had heart and lungs
    (docs/benchmarks.md). No left-right mirroring for lateral structures (``laterality.py``), partial labels
    (``partial_labels.py``), bf16 on CPUs that compute it natively (``cpu.py``)."""

    network_overrides: dict = {}

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        return build_effnet(configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision,
                            **cls.network_overrides)


class nnUNetTrainerEffNetB0Paper(nnUNetTrainerEffNetB0):
    """The paper's recipe: RMSprop (lr 5e-4, weight decay 1e-4), CE + Dice, scaling/flip/rotation only.

    The paper gives no schedule beyond the initial rate; we keep nnU-Net's poly decay and initialisation.
    nnU-Net's intensity augmentations (noise, blur, brightness, contrast, gamma, low resolution) are dropped, as
    the paper lists only spatial ones.
    """

    foreground_prior = None

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
