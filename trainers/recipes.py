"""Optimisation recipes as mixins (put them before nnU-Net's trainer in the bases)."""
from __future__ import annotations

import math

import torch

from nnunet_breast.trainers.lr_schedule import LinearWarmupCosineLRScheduler


class AdamWWarmupCosine:
    """AdamW, linear warm-up over the first ``warmup_fraction`` of the epochs, cosine decay to 0."""

    adamw_lr: float = 3e-3
    adamw_weight_decay: float = 1e-4
    warmup_fraction: float = 0.05

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr, self.weight_decay = self.adamw_lr, self.adamw_weight_decay

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, LinearWarmupCosineLRScheduler(optimizer, self.initial_lr, self.num_epochs,
                                                        self.warmup_fraction)


class ForegroundPatches:
    """``foreground_patches``: the share of a batch's patches that nnU-Net centres on a foreground voxel (its
    ``oversample_foreground_percent``, 0.33 by default): the demo's clip schedule centres every patch on a clip,
    so that its 200 iterations see a clip in every patch (when a short run starts finding clips is chance:
    docs/benchmarks.md, clip demo)."""

    foreground_patches: float = 0.33

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.oversample_foreground_percent = self.foreground_patches


class ForegroundPrior:
    """Output heads start at a foreground prior (RetinaNet's prior initialisation: weights ~ N(0, 0.01), bias
    log(p / (1 - p))). From nnU-Net's default initialisation every sigmoid output starts anywhere, and a short
    training still paints half the CT with every structure (noise in previews, millions of RTSTRUCT points);
    from "background" a model shows what it has learnt. None: nnU-Net's initialisation."""

    foreground_prior: float | None = 0.01

    def initialize(self):
        super().initialize()
        if self.foreground_prior:
            set_foreground_prior(self.network, self.foreground_prior, self.label_manager.has_regions)


def set_foreground_prior(network: torch.nn.Module, prior: float, region_based: bool) -> None:
    """Segmentation heads (``decoder.seg_layers``) re-initialised so that foreground starts at ``prior``.

    Region-based (sigmoid per region): every output gets log(p / (1 - p)). Softmax: background 0 and each
    foreground class log(p / (1 - p)), i.e. about ``prior`` each when there are few classes.
    """
    net = getattr(network, "_orig_mod", network)
    net = getattr(net, "module", net)
    logit = math.log(prior / (1.0 - prior))
    with torch.no_grad():
        for head in net.decoder.seg_layers:
            head.weight.normal_(0.0, 0.01)
            head.bias.fill_(logit)
            if not region_based:
                head.bias[0] = 0.0
