"""Optimisers and schedules of the reference pipeline."""
from __future__ import annotations

import torch


class PolyOptimizer(torch.optim.SGD):
    """SGD whose per-group lr follows lr0 * (1 - step/max_step)^power, updated before each step.

    The reference builds SGD(params, lr, weight_decay) positionally, so its SGD momentum equals
    the weight decay (1e-4, spec §2.3 / Q2). `momentum=None` reproduces that quirk; pass 0.9 for
    ordinary momentum SGD. Weight decay comes from each group's 'weight_decay'.
    """

    def __init__(self, params, lr: float, weight_decay: float, max_step: int,
                 power: float = 0.9, momentum: float | None = None):
        super().__init__(params, lr=lr, weight_decay=weight_decay,
                         momentum=weight_decay if momentum is None else momentum)
        self.max_step, self.power, self.global_step = max_step, power, 0
        self._initial_lr = [g["lr"] for g in self.param_groups]

    def step(self, closure=None):
        if self.global_step < self.max_step:
            factor = (1 - self.global_step / self.max_step) ** self.power
            for group, lr0 in zip(self.param_groups, self._initial_lr):
                group["lr"] = lr0 * factor
        self.global_step += 1
        return super().step(closure)
