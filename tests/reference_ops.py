"""Independent numpy versions of the small operations the value tests compare against
(written from their definitions, not from the code under test)."""
from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def _axis_taps(n_in: int, n_out: int):
    """Per output index: (i0, i1, weight of i1) of bilinear, align_corners=False
    (source coordinate (o + 0.5) * n_in / n_out - 0.5, clamped at 0, edge-replicated)."""
    taps = []
    for o in range(n_out):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        taps.append((i0, i1, src - i0))
    return taps


def bilinear(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) -> (C, H, W) bilinear resize, align_corners=False, by explicit loops."""
    a = np.asarray(a, np.float64)
    rows, cols = _axis_taps(a.shape[1], size[0]), _axis_taps(a.shape[2], size[1])
    out = np.zeros((a.shape[0],) + tuple(size))
    for y, (y0, y1, wy) in enumerate(rows):
        for x, (x0, x1, wx) in enumerate(cols):
            out[:, y, x] = ((1 - wy) * ((1 - wx) * a[:, y0, x0] + wx * a[:, y0, x1])
                            + wy * ((1 - wx) * a[:, y1, x0] + wx * a[:, y1, x1]))
    return out


def softmax(z: np.ndarray, axis: int = 0) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def pil_bicubic_rescale(img: np.ndarray, scale: float) -> np.ndarray:
    """uint8 (H, W, 3) -> (round(H*s), round(W*s), 3) by PIL BICUBIC; unchanged for s = 1."""
    h, w = img.shape[:2]
    size = (int(round(w * scale)), int(round(h * scale)))
    if size == (w, h):
        return img
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


def pil_nearest(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) -> size (h, w) by PIL NEAREST."""
    return np.asarray(Image.fromarray(label).resize((size[1], size[0]), Image.NEAREST))


def normalise(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W): (x / 255 - ImageNet mean) / std."""
    return ((img / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32).transpose(2, 0, 1)


def miou(pairs, n_classes: int) -> tuple[float, list[float]]:
    """mIoU over (prediction, ground truth) label-map pairs: IoU_c = |pred = c and gt = c| /
    |pred = c or gt = c| over the pixels whose GT is not 255, summed over all pairs; the mean
    skips classes absent from both. Returns (mIoU, per-class IoU with nan for absent)."""
    inter, union = np.zeros(n_classes), np.zeros(n_classes)
    for pred, gt in pairs:
        valid = np.asarray(gt) != 255
        for c in range(n_classes):
            p, g = (np.asarray(pred) == c) & valid, (np.asarray(gt) == c) & valid
            inter[c] += (p & g).sum()
            union[c] += (p | g).sum()
    iou = [inter[c] / union[c] if union[c] else float("nan") for c in range(n_classes)]
    return float(np.nanmean(iou)), iou
