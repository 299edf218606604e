"""Benchmark: PPMG (CVS + per-class CRFs, docs/pmm.md) over the CPU pool vs a per-image serial
loop, in the same run, on synthetic VOC-sized images and maps; the labels are checked equal.

Run from the repository root:  python -m bench.bench_ppmg [n_images] [workers]
The pool is the one the IR-label steps and eval_cam's PPMG rows use (misc.engine.workers.map_jobs);
its time includes starting the spawned workers.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from misc.engine.workers import map_jobs
from misc.seeds.ppmg import ppmg

SHAPE = (375, 500)


def make_image(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 (H, W, 3) with textured objects, maps (2, H, W) in [0, 1], keys (2,))."""
    rng = np.random.default_rng(seed)
    h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w] / max(SHAPE)
    img = (40 + 30 * rng.random((h, w, 3))).astype(np.float32)
    maps = np.empty((2, h, w), np.float32)
    for k in range(2):  # an object blob per class, its own colour, and a peaky CAM on it
        cy, cx, r = 0.2 + 0.4 * rng.random(), 0.2 + 0.9 * rng.random(), 0.08 + 0.15 * rng.random()
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(60, 180, 3)
        s = blob ** (1 + 2 * rng.random()) + 0.05 * rng.random(SHAPE)
        maps[k] = s / s.max()
    keys = np.sort(rng.choice(20, 2, replace=False)).astype(np.int64)
    return np.clip(img, 0, 255).astype(np.uint8), maps, keys


def one(job: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    return ppmg(*job)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 1)
    data = [make_image(s) for s in range(n)]
    print(f"{n} images {SHAPE}, 2 classes each, alpha 11, cv_scale 0.3; pool of {workers}")
    t0 = time.perf_counter()
    serial = [one(job) for job in data]
    t1 = time.perf_counter()
    # map_jobs yields in completion order: tag each job with its index to compare
    pooled = dict(map_jobs(_indexed, list(enumerate(data)), workers, "ppmg", 1))
    t2 = time.perf_counter()
    if not all(np.array_equal(serial[i], pooled[i]) for i in range(n)):
        raise SystemExit("pooled labels differ from the serial loop")
    print("labels equal; foreground share", f"{np.mean([(s > 0).mean() for s in serial]):.3f}")
    print(f"serial loop: {n / (t1 - t0):.2f} images/s ({t1 - t0:.2f} s)")
    print(f"pool:        {n / (t2 - t1):.2f} images/s ({t2 - t1:.2f} s)")
    print(f"ratio:       {(t1 - t0) / (t2 - t1):.2f}x")


def _indexed(job: tuple[int, tuple]) -> tuple[int, np.ndarray]:
    return job[0], one(job[1])


if __name__ == "__main__":
    main()
