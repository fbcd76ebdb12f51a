"""Learning-rate schedules nnU-Net does not have (nnU-Net steps them once per epoch)."""
from __future__ import annotations

import math

from torch.optim.lr_scheduler import _LRScheduler


class LinearWarmupCosineLRScheduler(_LRScheduler):
    """Linear warm-up over ``warmup_fraction`` of ``max_steps`` (epochs), then cosine annealing to ``min_lr``.

    ``lr(e) = initial * (e + 1) / W`` for ``e < W`` (W = max(1, round(fraction * max_steps))), then
    ``min + (initial - min) * (1 + cos(pi * (e - W) / (max_steps - W))) / 2``: ``initial`` at ``e = W``, close to
    ``min_lr`` at the last epoch ``max_steps - 1``. ``step(current_epoch)`` as nnU-Net's ``PolyLRScheduler``.
    """

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_fraction: float = 0.05,
                 min_lr: float = 0.0, current_step: int | None = None):
        self.optimizer = optimizer
        self.initial_lr = float(initial_lr)
        self.max_steps = int(max_steps)
        self.min_lr = float(min_lr)
        self.warmup_steps = min(max(1, int(round(warmup_fraction * self.max_steps))), max(1, self.max_steps - 1)) \
            if warmup_fraction > 0 else 0
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.initial_lr * (step + 1) / self.warmup_steps
        span = max(1, self.max_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.initial_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def get_lr(self):   # used once by _LRScheduler.__init__
        return [self.lr_at(max(0, self.last_epoch))] * len(self.optimizer.param_groups)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        new_lr = self.lr_at(int(current_step))
        for group in self.optimizer.param_groups:
            group["lr"] = new_lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return self._last_lr
