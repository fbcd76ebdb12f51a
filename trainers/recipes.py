"""Optimisation recipes as mixins (put them before the role in the bases)."""
from __future__ import annotations

import torch

from nnunet_breast.trainers.lr_schedule import LinearWarmupCosineLRScheduler


class AdamWWarmupCosine:
    """AdamW, linear warm-up over the first ``warmup_fraction`` of the epochs, cosine decay to 0."""

    adamw_lr: float = 1e-3
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
