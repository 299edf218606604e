"""Losses of the pipeline that are more than one library call."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from misc import dist


def pil_nearest_indices(in_size: int, out_size: int, device=None) -> torch.Tensor:
    """Source indices PIL's NEAREST resize picks: floor((i + 0.5) * in / out)
    (e.g. 512 -> 32 picks 16i + 8), so label downsampling can run on the device."""
    i = torch.arange(out_size, device=device, dtype=torch.float64)
    return ((i + 0.5) * (in_size / out_size)).floor().long().clamp_(max=in_size - 1)


def downsample_labels(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) integer labels -> (B, h, w) with the pixels PIL NEAREST would pick."""
    rows = pil_nearest_indices(label.shape[1], size[0], label.device)
    cols = pil_nearest_indices(label.shape[2], size[1], label.device)
    return label[:, rows][:, :, cols]


def _global_count(mask: torch.Tensor) -> torch.Tensor:
    """Number of True pixels over every rank's share of the batch (no gradient)."""
    count = mask.sum().to(torch.float32)
    return dist.all_reduce_mean(count) * dist.world()[1]


def balanced_smoothed_ce(logits: torch.Tensor, label: torch.Tensor, eps: float) -> torch.Tensor:
    """AMN's per-pixel classification loss (spec §3.5).

    logits: (B, C_out, h, w); label: (B, h, w) in {0..C_out-1, 255}. Soft targets 1 - eps for the
    label class and eps / (C_out - 1) elsewhere; loss = 1/2 mean over background pixels +
    1/2 mean over foreground pixels, both means over the whole global batch (under DDP the counts
    are summed over ranks, so the gradient equals one process's). A term with no pixel is left out
    instead of giving 0/0 = NaN as the reference does.
    """
    n_out = logits.shape[1]
    valid = label != 255
    target = torch.full_like(logits, eps / (n_out - 1))
    target.scatter_(1, torch.where(valid, label, 0).long()[:, None], 1 - eps)
    per_pixel = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
    loss = logits.sum() * 0  # keeps the graph (and DDP's hooks) when both terms are empty
    world_size = dist.world()[1]
    for mask in (label == 0, valid & (label != 0)):
        count = _global_count(mask)
        if count > 0:
            loss = loss + 0.5 * world_size * per_pixel[mask].sum() / count
    return loss
