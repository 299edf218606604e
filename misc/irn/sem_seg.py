"""make_sem_seg_labels' mechanism (docs/pipeline.md §3.10): the IRN boundary map of an image and
the random walk of the AMN seeds over it into a pseudo-mask."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from misc.irn.random_walk import INFER_RADIUS, random_walk
from misc.seeds.multiscale import strided_size


def boundary_map(model: torch.nn.Module, img: torch.Tensor, pad_to: int) -> torch.Tensor:
    """Boundary probability (h4, w4) in [0, 1] of one normalised image (3, H, W): the mean of
    the edge logits of the image and its mirror, then a sigmoid. The pair is zero-padded on the
    right/bottom to `pad_to` when the image fits (the reference pads VOC to 512), so padded
    images see the same context as in the reference; larger images are not padded.

    `model` maps (2, 3, h, w) to (edge logits (2, 1, h4', w4'), displacement)."""
    h, w = img.shape[1:]
    pair = torch.stack([img, img.flip(-1)])
    if h <= pad_to and w <= pad_to:
        pair = F.pad(pair, (0, pad_to - w, 0, pad_to - h))
    h4, w4 = strided_size((h, w), 4)
    edge = model(pair)[0][:, 0, :h4, :w4]
    return torch.sigmoid((edge[0] + edge[1].flip(-1)) / 2)


def pseudo_mask(maps: Mapping[str, np.ndarray], boundary: torch.Tensor, size: tuple[int, int],
                power: float, beta: float, exp_times: int, bg_thres: float,
                radius: int = INFER_RADIUS) -> torch.Tensor:
    """Random walk of the AMN seeds over the boundary map -> (H, W) uint8 labels, 0 background,
    c + 1 for class c.

    maps: an AMN map file (keys (K,) 0-based classes, cam (K+1, h4, w4) in [0, 1], background
    first); boundary (h4, w4) in [0, 1]. The foreground channels ^ `power` are walked for
    2^exp_times steps (transition weights (1 - boundary)^beta, within `radius`), upsampled x4 (bilinear) and
    cropped to `size`, divided by their global max, and compared with a constant background
    score `bg_thres`."""
    keys = torch.as_tensor(maps["keys"], device=boundary.device)
    if len(keys) == 0:
        return torch.zeros(size, dtype=torch.uint8)
    seeds = torch.as_tensor(maps["cam"], device=boundary.device).pow(power)[1:]
    rw = random_walk(seeds, boundary, beta, exp_times, radius)
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    up = up[:, :size[0], :size[1]]
    up = up / up.max()
    scores = torch.cat([torch.full_like(up[:1], bg_thres), up])
    keys_pad = torch.cat([keys.new_zeros(1), keys + 1])
    return keys_pad[scores.argmax(0)].to(torch.uint8).cpu()
