"""BAO's label rules (docs/bao.md §4, §5): the teacher's training-time pseudo-label from its
foreground maps, the inference-time normalisation of [learned background, foreground], the
threshold-free labels of AMN's own background channel, and the label CRF that ends them."""
from __future__ import annotations

import numpy as np
import torch

from misc.imutils import read_image
from misc.io.maps import load_maps
from misc.io.png import save_png
from misc.seeds.crf import crf_inference_label


def teacher_pseudo_labels(cam_fg: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BAO's training target (docs/bao.md §4.1): ReLU(M*_c) y_c, divided by its spatial max +
    1e-5 (no min subtracted), background = 1 - the max over classes, argmax (first maximum: a
    tie goes to background). Equivalently: foreground where the max-normalised map exceeds 0.5.

    cam_fg (B, C, h, w) real-valued (channels 1..C of the teacher's M*), labels (B, C) multi-hot
    -> (B, h, w) int64 in {0 background, c+1 class c}; no ignore label."""
    fg = torch.relu(cam_fg) * labels[:, :, None, None]
    fg = fg / (fg.amax(dim=(2, 3), keepdim=True) + 1e-5)
    bg = 1.0 - fg.amax(dim=1, keepdim=True)
    return torch.cat([bg, fg], dim=1).argmax(dim=1)


def reference_min_max(scores: torch.Tensor) -> torch.Tensor:
    """infer_bao's per-channel normalisation (docs/bao.md §4.2), every channel on its own:
    values below min + 1e-5 set to 0, then (s - min - 1e-5) / (max - min + 1e-5). Values at
    the minimum thus end slightly below 0 (-(min + 1e-5) / (max - min + 1e-5)); an all-zero
    channel (an absent class) is -1 everywhere.

    scores (K, H, W) >= 0 (after ReLU) -> (K, H, W), at most 1."""
    lo = scores.amin(dim=(1, 2), keepdim=True)
    hi = scores.amax(dim=(1, 2), keepdim=True)
    kept = torch.where(scores < lo + 1e-5, torch.zeros_like(scores), scores)
    return (kept - lo - 1e-5) / (hi - lo + 1e-5)


def threshold_free_labels(prob: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The two threshold-free labels of AMN's probabilities (docs/bao.md §5.1): (a) the argmax
    of the softmax over [background, present classes], as the reference's per-epoch validation
    of train_amn; (b) BAO's rule: every channel min-max normalised on its own
    (`reference_min_max`), then the argmax (eval_amn_cam adds the label CRF).

    prob (K+1, H, W) in [0, 1], channels `keep` (K+1,) class ids [0, present classes + 1]
    -> (2, H, W) uint8 class ids in 0..C."""
    picks = torch.stack([prob.argmax(dim=0), reference_min_max(prob).argmax(dim=0)])
    return keep[picks].to(torch.uint8)


def crf_label(label: np.ndarray, image_path: str, n_labels: int, gt_prob: float) -> np.ndarray:
    """BAO's label CRF (infer_bao's crf_inference_label, docs/bao.md §4.2) of one (H, W) class-id
    map on its image -> (H, W) uint8 class ids."""
    crf = crf_inference_label(read_image(image_path), label.astype(np.int64), n_labels,
                              gt_prob=gt_prob)
    return crf.astype(np.uint8)


# (map path, image path, output path, n_labels, gt_prob)
CrfJob = tuple[str, str, str, int, float]


def crf_label_one(job: CrfJob) -> str:
    """make_bao's last step for one image (docs/bao.md §4.2): the argmax label stored in its map
    file, refined by the label CRF (gt_prob, n_labels), written as a PNG of class ids 0..C."""
    map_path, image_path, out_path, n_labels, gt_prob = job
    save_png(out_path, crf_label(load_maps(map_path)["label"], image_path, n_labels, gt_prob))
    return out_path
