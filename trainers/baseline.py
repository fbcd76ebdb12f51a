"""Vanilla nnU-Net as the baseline of our comparisons, under the same clinical-data rules as our trainers.

``nnUNetTrainerNoLRMirroring``: nnU-Net's network and recipe, without mirroring along the patient's left-right
axis when the dataset has lateral structures, and with the partial-label loss when the dataset records
structures a case did not annotate (on a fully annotated dataset: vanilla nnU-Net minus left-right mirroring),
and bf16 on CPUs that compute it natively, as ours (so that CPU timings compare like with like).
Comparisons against vanilla use it, so that both sides follow the same rules.
``nnUNetTrainerTiny_2epochs`` applies the tiny schedule to nnU-Net's own PlainConvUNet exactly as planned (stages,
kernels, strides) with every stage's feature count divided by 4 and capped at 64.
"""
from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_breast.trainers.cpu import CPUAutocast
from nnunet_breast.trainers.laterality import NoLeftRightMirroring
from nnunet_breast.trainers.partial_labels import PartialLabels
from nnunet_breast.trainers.schedules import TinyCPUSchedule


def shrink_widths(arch_kwargs: dict, divisor: int = 4, cap: int = 64, floor: int = 4) -> dict:
    kwargs = dict(arch_kwargs)
    kwargs["features_per_stage"] = [max(floor, min(cap, f // divisor)) for f in kwargs["features_per_stage"]]
    return kwargs


class nnUNetTrainerNoLRMirroring(CPUAutocast, NoLeftRightMirroring, PartialLabels, nnUNetTrainer):
    """Vanilla nnU-Net under the breast trainers' clinical-data rules (module docstring)."""


class nnUNetTrainerTiny_2epochs(TinyCPUSchedule, nnUNetTrainerNoLRMirroring):
    """Planned PlainConvUNet at 1/4 width (max 64 features) on the tiny CPU schedule."""

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        return get_network_from_plans(
            configuration_manager.network_arch_class_name,
            shrink_widths(configuration_manager.network_arch_init_kwargs),
            configuration_manager.network_arch_init_kwargs_req_import,
            num_input_channels, num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)
