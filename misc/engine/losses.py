"""Losses of the pipeline that are more than one library call."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from misc import imutils
from misc.engine import dist


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


def global_count(mask: torch.Tensor) -> torch.Tensor:
    """Number of True entries over every rank's share of the batch (no gradient)."""
    count = mask.sum().to(torch.float32)
    return dist.all_reduce_mean(count) * dist.world()[1]


def global_masked_mean(values: torch.Tensor, mask: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """sum(values[mask]) / (count + eps) with the count taken over the global batch, scaled so
    that DDP's gradient averaging yields the one-process gradient (0 when the count is 0)."""
    count = global_count(mask) + eps
    if count == 0:
        return values.sum() * 0
    return dist.world()[1] * (values * mask).sum() / count


def balanced_smoothed_ce(logits: torch.Tensor, label: torch.Tensor, eps: float,
                         fg_weight: float = 1.0) -> torch.Tensor:
    """AMN's per-pixel classification loss (docs/pipeline.md §3.5).

    logits: (B, C_out, h, w); label: (B, h, w) in {0..C_out-1, 255}. Soft targets 1 - eps for the
    label class and eps / (C_out - 1) elsewhere; loss = 1/2 mean over background pixels +
    1/2 mean over foreground pixels, both means over the whole global batch (under DDP the counts
    are summed over ranks, so the gradient equals one process's). A term with no pixel is left out
    instead of giving 0/0 = NaN as the reference does. `fg_weight` multiplies the foreground
    mean (BAO's --w_pcl when it is made to count, docs/quirks.md Q26; 1: AMN's loss).
    """
    n_out = logits.shape[1]
    valid = label != 255
    target = torch.full_like(logits, eps / (n_out - 1))
    target.scatter_(1, torch.where(valid, label, 0).long()[:, None], 1 - eps)
    per_pixel = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
    return 0.5 * (global_masked_mean(per_pixel, label == 0)
                  + fg_weight * global_masked_mean(per_pixel, valid & (label != 0)))


def irn_loss(affinity: torch.Tensor, pair_disp: torch.Tensor, targets: torch.Tensor,
             bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor) -> dict:
    """IRN's losses (docs/pipeline.md §3.9), means over the global batch.

    affinity: (B, D, N) in [0, 1]; pair_disp: (B, 2, D, N) = D(p) - D(p+d); targets: (2, D, 1)
    direction vectors; bg_pos / fg_pos / neg: (B, D, N) bool. Returns the four terms and 'total'.
    """
    pos_bg = global_masked_mean(-torch.log(affinity + 1e-5), bg_pos, 1e-5)
    pos_fg = global_masked_mean(-torch.log(affinity + 1e-5), fg_pos, 1e-5)
    neg_term = global_masked_mean(-torch.log(1 + 1e-5 - affinity), neg, 1e-5)
    dp_fg = global_masked_mean((pair_disp - targets).abs().sum(1), fg_pos, 1e-5) / 2
    dp_bg = global_masked_mean(pair_disp.abs().sum(1), bg_pos, 1e-5) / 2
    terms = {"pos_bg": pos_bg, "pos_fg": pos_fg, "neg": neg_term, "dp_fg": dp_fg, "dp_bg": dp_bg}
    terms["total"] = (pos_bg / 2 + pos_fg / 2 + neg_term) / 2 + (dp_fg + dp_bg) / 2
    return terms


PUF_MODES = ("none", "clamp", "pow", "ignore")


def pretended_under_fitting(per_pixel: torch.Tensor, mode: str, beta: float,
                            k: float) -> torch.Tensor:
    """PMM's PUF on a per-pixel CE (docs/pmm.md §5): (B, h, w) with ignored pixels at 0.

    When the mean of `per_pixel` over ALL its pixels (ignored ones counted as 0; this process's
    batch only, no all-reduce) is below `beta`: `clamp` min(ℓ, k) (a clamped pixel passes no
    gradient), `pow` ℓ ** k, `ignore` ℓ · 1[ℓ <= k]; otherwise, and for `none`, ℓ unchanged.
    """
    if mode == "none":
        return per_pixel
    if mode not in PUF_MODES:
        raise ValueError(f"PUF mode {mode!r} is not one of {PUF_MODES}")
    if per_pixel.detach().mean() >= beta:
        return per_pixel
    if mode == "clamp":
        return torch.where(per_pixel > k, per_pixel.detach().clamp(max=k), per_pixel)
    if mode == "pow":
        return per_pixel.clamp(min=1e-12) ** k  # the clamp keeps d(ℓ^k)/dℓ finite at ℓ = 0
    return per_pixel * (per_pixel <= k)


def pixel_ce(logits: torch.Tensor, label: torch.Tensor, balanced: bool, puf: str = "none",
             puf_beta: float = 0.5, puf_k: float = 0.5) -> torch.Tensor:
    """Cross-entropy of (B, C, h, w) logits against (B, h, w) labels (255 ignored).

    Plain: mean over the non-ignored pixels of the global batch. Balanced (AdvCAM / AMN form):
    1/2 mean over background pixels + 1/2 mean over foreground pixels; a term without pixels is
    left out (0) instead of 0/0. Means use global-batch counts, so DDP gives the 1-process loss.
    `puf` (not "none"): PMM's pretended under-fitting on the per-pixel CE before the mean
    (`pretended_under_fitting`, decided on this process's batch).
    """
    valid = label != imutils.IGNORE
    per_pixel = F.cross_entropy(logits, torch.where(valid, label, 0), reduction="none")
    per_pixel = pretended_under_fitting(per_pixel * valid, puf, puf_beta, puf_k)
    if not balanced:
        return global_masked_mean(per_pixel, valid)
    return 0.5 * (global_masked_mean(per_pixel, label == 0)
                  + global_masked_mean(per_pixel, valid & (label != 0)))
