"""Schedules as data: mixins that set a trainer's epochs x iterations (put them first in the bases).

``TinyCPUSchedule`` (tests), ``ShortCPUSchedule`` (benchmarks), ``DemoCPUSchedule`` (the CPU demo) and
``QuickDemoCPUSchedule`` (``demo --quick``): short schedules without test-time mirroring. :class:`Epochs` makes
nnU-Net's ``_Xepochs`` variants.
"""
from __future__ import annotations

import torch


class CPUSchedule:
    """Mixin (put it first in the bases): a short schedule without test-time mirroring.

    Subclasses set ``schedule = (epochs, iterations per epoch, validation iterations per epoch)``.
    """

    schedule: tuple[int, int, int] = (2, 2, 1)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = self.schedule

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch, None


class TinyCPUSchedule(CPUSchedule):
    """2 epochs of 2 iterations, one validation iteration: tests."""

    schedule = (2, 2, 1)


class ShortCPUSchedule(CPUSchedule):
    """8 epochs x 25 iterations (benchmarks on CPU): enough to compare methods trained alike; far from
    converged."""

    schedule = (8, 25, 2)


class DemoCPUSchedule(CPUSchedule):
    """14 epochs x 50 iterations: `nnunet-breast demo` on CPU, about 10 minutes on 2 cores; the breast CTVs start
    in the second half of it, with no margin (docs/benchmarks.md, demo timings)."""

    schedule = (14, 50, 1)


class QuickDemoCPUSchedule(DemoCPUSchedule):
    """`nnunet-breast demo --quick` (tests): 2 x 2 iterations."""

    schedule = (2, 2, 1)


class Epochs:
    """Mixin for nnU-Net's ``_Xepochs`` variants: ``num_epochs`` set, everything else as the role."""

    num_epochs_override: int = 1000

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.num_epochs_override
