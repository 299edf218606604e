"""A teacher network that follows its student (BAO's self-training, docs/bao.md §4.1): a full
copy, or an exponential moving average of the parameters with a cosine momentum schedule."""
from __future__ import annotations

import math

import torch


def cosine_momentum(k: int, n: int, base: float) -> float:
    """BAO's momentum at iteration k of n: 1 + (base - 1) (1 + cos(pi k / n)) / 2, rising from
    `base` at k = 0 through (1 + base) / 2 at k = n / 2 to 1 at k = n (docs/bao.md §4.1)."""
    return 1.0 + 0.5 * (base - 1.0) * (1.0 + math.cos(math.pi * k / n))


@torch.no_grad()
def copy_into(teacher: torch.nn.Module, student: torch.nn.Module) -> None:
    """teacher <- student: every parameter and buffer (BatchNorm statistics too), in place."""
    teacher.load_state_dict(student.state_dict())


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """theta_t <- m theta_t + (1 - m) theta_s on the parameters only; the teacher's buffers
    (BatchNorm statistics) stay its own, as BAO's update."""
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
