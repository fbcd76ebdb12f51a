"""Short CPU schedules for tests and the demo, and vanilla nnU-Net at a fraction of its width (the baseline).

``TinyCPUSchedule`` is a mixin: 2 epochs of 2 iterations, one validation iteration, no test-time mirroring.
``nnUNetTrainerTiny_2epochs`` applies it to nnU-Net's own PlainConvUNet exactly as planned (stages,
kernels, strides) with every stage's feature count divided by 4 and capped at 64.
"""
from __future__ import annotations

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans


class TinyCPUSchedule:
    """Mixin (put it first in the bases): a schedule that runs a fold in well under a minute on 2 cores."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch, None


def shrink_widths(arch_kwargs: dict, divisor: int = 4, cap: int = 64, floor: int = 4) -> dict:
    kwargs = dict(arch_kwargs)
    kwargs["features_per_stage"] = [max(floor, min(cap, f // divisor)) for f in kwargs["features_per_stage"]]
    return kwargs


class nnUNetTrainerTiny_2epochs(TinyCPUSchedule, nnUNetTrainer):
    """Planned PlainConvUNet at 1/4 width (max 64 features) on the tiny CPU schedule."""

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        return get_network_from_plans(
            configuration_manager.network_arch_class_name,
            shrink_widths(configuration_manager.network_arch_init_kwargs),
            configuration_manager.network_arch_init_kwargs_req_import,
            num_input_channels, num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)
