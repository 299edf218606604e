"""Benchmark: all thresholds in one pass (ThresholdSweep) vs one pass per threshold.

Run from the repository root:  python -m bench.bench_threshold_sweep
Synthetic VOC-sized maps are held in memory, so the reference-style time counts compute only
(the reference also re-reads every map file once per threshold, which this leaves out).
"""
from __future__ import annotations

import time

import numpy as np

from misc.eval.metrics import ThresholdSweep, confusion_matrix, mean_iou

N_CLASSES = 21
THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 20)]  # 0.05 .. 0.95


def make_data(n_images: int = 30, shape: tuple[int, int] = (375, 500), seed: int = 0):
    """[(scores (K,H,W) float32 in [0,1], keys (K,), gt (H,W) uint8)] with K = 2."""
    rng = np.random.default_rng(seed)
    data = []
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
    for _ in range(n_images):
        keys = np.sort(rng.choice(20, 2, replace=False)).astype(np.int64)
        scores = np.empty((2,) + shape, np.float32)
        for k in range(2):  # a blob per class plus noise, max-normalised like a CAM
            cy, cx, r = rng.random(), rng.random() * 1.3, 0.1 + 0.3 * rng.random()
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            s = blob + 0.1 * rng.random(shape)
            scores[k] = s / (s.max() + 1e-5)
        gt = np.where(scores.max(0) > 0.3 + 0.1 * rng.standard_normal(shape),
                      keys[scores.argmax(0)] + 1, 0).astype(np.uint8)
        gt[rng.random(shape) < 0.02] = 255
        data.append((scores, keys, gt))
    return data


def per_threshold(data) -> np.ndarray:
    """The reference's way: for each threshold, pad + argmax + bincount for every image."""
    mious = []
    for t in THRESHOLDS:
        conf = np.zeros((N_CLASSES, N_CLASSES), np.int64)
        for scores, keys, gt in data:
            padded = np.pad(scores, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=t)
            keys_pad = np.pad(keys + 1, (1, 0), mode="constant")
            conf += confusion_matrix(keys_pad[np.argmax(padded, axis=0)], gt, N_CLASSES)
        mious.append(mean_iou(conf))
    return np.array(mious)


def one_pass(data) -> np.ndarray:
    sweep = ThresholdSweep(N_CLASSES, THRESHOLDS)
    for scores, keys, gt in data:
        sweep.add(scores, keys, gt)
    return sweep.mious()


def main() -> None:
    data = make_data()
    print(f"{len(data)} images {data[0][0].shape}, {len(THRESHOLDS)} thresholds")
    t0 = time.perf_counter()
    ref = per_threshold(data)
    t1 = time.perf_counter()
    fast = one_pass(data)
    t2 = time.perf_counter()
    if not np.array_equal(ref, fast):
        raise SystemExit(f"mIoU mismatch:\nref  {ref}\nfast {fast}")
    best = int(np.argmax(fast))
    print(f"mIoUs equal; best threshold {THRESHOLDS[best]} mIoU {fast[best]:.4f}")
    print(f"per-threshold passes: {t1 - t0:.3f} s")
    print(f"one-pass sweep:       {t2 - t1:.3f} s")
    print(f"speed-up:             {(t1 - t0) / (t2 - t1):.1f}x")


if __name__ == "__main__":
    main()
