"""Schedules as data: mixins that set a trainer's epochs x iterations (put them first in the bases).

``TinyCPUSchedule`` (tests), ``ShortCPUSchedule`` (benchmarks), ``DemoCPUSchedule`` (the CPU demo; heads start
from a foreground prior) and ``QuickDemoCPUSchedule`` (``demo --quick``): short schedules without test-time
mirroring. :func:`epochs` makes nnU-Net's ``_Xepochs`` variants.
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
    """8 epochs x 40 iterations: `nnunet-breast demo` on CPU, a few minutes on the CPU configuration.

    The output layers start from a 1 % foreground prior (RetinaNet's prior initialisation: weights ~ N(0, 0.01),
    bias log(p / (1 - p))): from the default initialisation every sigmoid/softmax output starts anywhere, and after
    a few dozen iterations the model still paints half the CT with every structure, which is noise in the previews
    and millions of contour points in an RTSTRUCT. Starting from "background" the short run shows what it learnt.
    """

    schedule = (8, 40, 1)
    foreground_prior = 0.01

    def initialize(self):
        super().initialize()
        set_foreground_prior(self.network, self.foreground_prior, self.label_manager.has_regions)


class QuickDemoCPUSchedule(DemoCPUSchedule):
    """`nnunet-breast demo --quick` (tests): the demo's initialisation on the tiny 2 x 2 schedule."""

    schedule = (2, 2, 1)


def set_foreground_prior(network: torch.nn.Module, prior: float, region_based: bool) -> None:
    """Segmentation heads (``decoder.seg_layers``) re-initialised so that foreground starts at ``prior``.

    Region-based (sigmoid per region): every output gets log(p / (1 - p)). Softmax: background 0 and each
    foreground class log(p / (1 - p)), i.e. about ``prior`` each when there are few classes.
    """
    import math

    net = getattr(network, "_orig_mod", network)
    net = getattr(net, "module", net)
    logit = math.log(prior / (1.0 - prior))
    with torch.no_grad():
        for head in net.decoder.seg_layers:
            head.weight.normal_(0.0, 0.01)
            head.bias.fill_(logit)
            if not region_based:
                head.bias[0] = 0.0


class Epochs:
    """Mixin for nnU-Net's ``_Xepochs`` variants: ``num_epochs`` set, everything else as the role."""

    num_epochs_override: int = 1000

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.num_epochs_override
