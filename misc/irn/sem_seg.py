"""make_sem_seg_labels' mechanism (docs/pipeline.md §3.10): the IRN boundary map of an image and
the random walk of the AMN seeds over it into a pseudo-mask."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from misc.imutils import read_image
from misc.irn.random_walk import INFER_RADIUS, random_walk
from misc.seeds.multiscale import strided_size
from misc.seeds.ppmg import ppmg


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


def walked_scores(maps: Mapping[str, np.ndarray], boundary: torch.Tensor, size: tuple[int, int],
                  power: float, beta: float, exp_times: int, radius: int = INFER_RADIUS
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Part (a) of the pseudo-mask, shared by both labelling rules: the random walk of the AMN
    seeds over the boundary map.

    maps: an AMN map file (keys (K,) 0-based classes, cam (K+1, h4, w4) in [0, 1], background
    first); boundary (h4, w4) in [0, 1]. The foreground channels ^ `power` are walked for
    2^exp_times steps (transition weights (1 - boundary)^beta, within `radius`), upsampled x4
    (bilinear),
    cropped to `size` and divided by their global max (over all classes, as the reference).
    Returns (keys (K,) int64, scores (K, H, W) float in [0, 1]); K = 0 gives an empty (0, H, W)."""
    keys = torch.as_tensor(maps["keys"], device=boundary.device).long()
    if len(keys) == 0:
        return keys, torch.zeros((0, *size), device=boundary.device)
    seeds = torch.as_tensor(maps["cam"], device=boundary.device).pow(power)[1:]
    rw = random_walk(seeds, boundary, beta, exp_times, radius)
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    up = up[:, :size[0], :size[1]]
    return keys, up / up.max()


def constant_labels(keys: torch.Tensor, scores: torch.Tensor, bg_thres: float) -> torch.Tensor:
    """The reference's rule (b): argmax over [bg_thres, scores] (first maximum: a tie with the
    background score is background). keys (K,), scores (K, H, W) in [0, 1] -> (H, W) uint8,
    0 background, c + 1 class c."""
    bg = torch.full((1, *scores.shape[1:]), float(bg_thres), dtype=scores.dtype,
                    device=scores.device)
    keys_pad = torch.cat([keys.new_zeros(1), keys + 1])
    return keys_pad[torch.cat([bg, scores]).argmax(0)].to(torch.uint8).cpu()


def label_walk(job: tuple) -> np.ndarray:
    """Rule (b) on one image's walked scores, as make_sem_seg_labels runs it: job = (id, keys
    (K,) int64, scores (K, H, W) float in [0, 1], image path (read for PPMG's CRF only), rule),
    rule ("constant", bg_thres) (tensors, on any device) or ("ppmg", alpha, cv_scale) (numpy
    arrays: a CPU-pool job; PMM's plug point (iii), docs/pmm.md §8). Returns (H, W) uint8,
    0 background, c + 1 class c; all background when K = 0."""
    _, keys, scores, image_path, rule = job
    if len(keys) == 0:
        return np.zeros(tuple(scores.shape[1:]), np.uint8)
    if rule[0] == "ppmg":
        return ppmg(read_image(image_path), np.asarray(scores, np.float32), np.asarray(keys),
                    alpha=rule[1], cv_scale=rule[2])
    return constant_labels(torch.as_tensor(keys), torch.as_tensor(scores), rule[1]).numpy()


def pseudo_mask(maps: Mapping[str, np.ndarray], boundary: torch.Tensor, size: tuple[int, int],
                power: float, beta: float, exp_times: int, bg_thres: float,
                radius: int = INFER_RADIUS) -> torch.Tensor:
    """The reference's pseudo-mask: `walked_scores` then `constant_labels` at `bg_thres`:
    (H, W) uint8 labels, 0 background, c + 1 for class c."""
    keys, scores = walked_scores(maps, boundary, size, power, beta, exp_times, radius)
    if len(keys) == 0:
        return torch.zeros(size, dtype=torch.uint8)
    return constant_labels(keys, scores, bg_thres)
