"""Benchmark: instance pseudo-labels of one VOC-size image, reference-style vs misc.irn.ins_seg.

Run from the repository root:
    python -m bench.bench_ins_seg [--size H W] [--exp_times 8] [--threads T]

Synthetic inputs (docs/pipeline.md §3.12): a 375 x 500 image (stride-4 map 94 x 125), 2 classes,
3 instances (two of class 0, one of class 1): a displacement field pointing to each instance's
centre inside its disc (plus noise), a boundary map with rings on the disc outlines, smooth CAMs.

The reference-style implementation below follows the reference's structure in NumPy: centroid
refinement over the whole field (float32 state, float64 steps), weak-displacement components with
scipy.ndimage.label, one-hot instance maps, the class x instance CAMs, the DENSE random walk (N x N
affinity on the padded grid, cropped, A ** beta column-normalised, squared exp_times times, one
matmul with the seeds), x4 upsampling, global max, background channel, argmax, one-hot, and a
Python loop over channels and their connected components. It prints both times, the speed ratio
(goal >= 20x), whether the segments match (same order, classes, masks) and the largest score gap.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from misc.irn.ins_seg import instance_masks
from misc.irn.path_index import direction_path, directions

RADIUS = 5
CENTRES = ((0.35, 0.25, 0), (0.4, 0.62, 0), (0.72, 0.45, 1))  # (y, x) as a fraction, class


# --------------------------------------- inputs ---------------------------------------------

def make_inputs(h: int, w: int, seed: int = 0) -> dict:
    """cams (2, h, w), keys (2,), boundary (h, w), displacement (2, h, w), float32 tensors."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    radius = 0.16 * min(h, w) * 1.4
    disp = 0.3 * torch.randn(2, h, w, generator=gen)
    boundary = 0.05 * torch.rand(h, w, generator=gen)
    cams = torch.zeros(2, h, w)
    for fy, fx, cls in CENTRES:
        cy, cx = fy * h, fx * w
        dist = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        inside = dist < radius
        disp[0] = torch.where(inside, cy - yy + 0.3 * torch.randn(h, w, generator=gen), disp[0])
        disp[1] = torch.where(inside, cx - xx + 0.3 * torch.randn(h, w, generator=gen), disp[1])
        boundary = torch.maximum(boundary, 0.9 * torch.exp(-((dist - radius) / 1.5) ** 2))
        cams[cls] = torch.maximum(cams[cls], torch.exp(-(dist / (0.8 * radius)) ** 2))
    cams = (cams * (1 + 0.1 * torch.rand(2, h, w, generator=gen))).clamp_min(0)
    return {"cams": cams / cams.amax(dim=(1, 2), keepdim=True), "keys": np.array([0, 1]),
            "boundary": boundary.clamp(0, 1), "displacement": disp}


# ------------------------------------ reference style ---------------------------------------

def ref_centroids(disp: np.ndarray, iterations: int = 300) -> np.ndarray:
    """(2, h, w) int32 centroids; float32 positions, NumPy's float64 promotion in each step."""
    h, w = disp.shape[1:]
    cy = np.repeat(np.arange(h)[:, None], w, axis=1).astype(np.float32)
    cx = np.repeat(np.arange(w)[None, :], h, axis=0).astype(np.float32)
    for _ in range(iterations):
        uy, dy = np.ceil(cy).astype(np.int32), np.floor(cy).astype(np.int32)
        ux, dx = np.ceil(cx).astype(np.int32), np.floor(cx).astype(np.int32)
        fy, fx = cy - dy, cx - dx
        for c, pos in ((0, cy), (1, cx)):
            f = disp[c]
            pos += f[uy, ux] * fy * fx + f[dy, ux] * (1 - fy) * fx + f[uy, dx] * fy * (1 - fx) \
                + f[dy, dx] * (1 - fy) * (1 - fx)
        cy, cx = np.clip(cy, 0, h - 1), np.clip(cx, 0, w - 1)
    return np.stack([np.round(cy).astype(np.int32), np.round(cx).astype(np.int32)])


def one_hot(ids: np.ndarray, n: int | None = None) -> np.ndarray:
    """(n, *ids.shape) bool from non-negative integer ids."""
    n = int(ids.max()) + 1 if n is None else n
    out = np.zeros((n, ids.size), bool)
    out[ids.reshape(-1), np.arange(ids.size)] = True
    return out.reshape(n, *ids.shape)


def ref_instances(disp: np.ndarray) -> np.ndarray:
    """(I, h, w) bool instance maps: weak-displacement components at each pixel's centroid."""
    weak = np.sqrt(disp[1] ** 2 + disp[0] ** 2) < 2.5
    comp = ndimage.label(weak)[0]  # 4-connectivity, 0 = not weak
    cen = ref_centroids(disp)
    clusters = comp[cen[0], cen[1]] + 1
    _, compressed = np.unique(clusters, return_inverse=True)
    return one_hot(compressed.reshape(clusters.shape))


def ref_dense_walk(seeds: torch.Tensor, boundary: torch.Tensor, beta: float,
                   exp_times: int) -> torch.Tensor:
    """(M, h, w): dense affinity of the padded grid, crop, colnorm(A ** beta) ** 2 ** exp_times."""
    h, w = boundary.shape
    hp, wp = h + RADIUS, w + 2 * RADIUS
    pad = np.pad(boundary.numpy(), ((0, RADIUS), (RADIUS, RADIUS)), constant_values=1.0)
    rf = RADIUS - 1
    a = torch.eye(hp * wp)
    for dy, dx in directions(RADIUS):
        peak = np.zeros((hp - rf, wp - 2 * rf), np.float32)
        for py, px in direction_path(dy, dx):
            peak = np.maximum(peak, pad[py:py + hp - rf, rf + px:rf + px + wp - 2 * rf])
        src = (np.arange(hp - rf)[:, None] * wp + np.arange(rf, wp - rf)[None]).reshape(-1)
        dst = src + dy * wp + dx
        aff = torch.from_numpy(1 - peak.reshape(-1))
        a[src, dst] = aff
        a[dst, src] = aff
    a = a.view(hp, wp, hp, wp)[:h, RADIUS:RADIUS + w, :h, RADIUS:RADIUS + w].reshape(h * w, -1)
    t = a.pow(beta)
    t = t / t.sum(dim=0, keepdim=True)
    for _ in range(exp_times):
        t = t @ t
    x = (seeds * (1 - boundary)).reshape(seeds.shape[0], -1)
    return (x @ t).reshape(-1, h, w)


def ref_instance_masks(cams: torch.Tensor, keys: np.ndarray, boundary: torch.Tensor,
                       disp: torch.Tensor, size: tuple[int, int], beta: float, exp_times: int,
                       bg_thres: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score (N,), mask (N, H, W) bool, class (N,)) in the reference's order."""
    inst = torch.from_numpy(ref_instances(disp.numpy()).astype(np.float32))
    seeds = (cams[:, None] * inst[None]).reshape(-1, *cams.shape[1:])
    rw = ref_dense_walk(seeds, boundary, beta, exp_times)
    up = F.interpolate(rw[:, None], scale_factor=4, mode="bilinear", align_corners=False)
    up = up[:, 0, :size[0], :size[1]]
    up = up / up.max()
    with_bg = F.pad(up, (0, 0, 0, 0, 1, 0), value=bg_thres)
    masks = one_hot(with_bg.argmax(0).numpy(), seeds.shape[0] + 1)[1:]
    classes = np.repeat(keys, inst.shape[0])
    up = up.numpy()
    scores, out_masks, out_cls = [], [], []
    for score, mask, cls in zip(up, masks, classes):
        if mask.sum() < 1:
            continue
        for seg in one_hot(ndimage.label(mask)[0])[1:]:
            small = seg.sum() < size[0] * size[1] * 0.01
            scores.append(0.0 if small else float(np.max(score * seg)))
            out_masks.append(seg)
            out_cls.append(cls)
    return np.array(scores), np.array(out_masks).reshape(-1, *size), np.array(out_cls)


# ------------------------------------------- main -------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", nargs=2, type=int, default=(375, 500), metavar=("H", "W"))
    ap.add_argument("--beta", type=float, default=10)
    ap.add_argument("--exp_times", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(args.size)
    h4, w4 = (size[0] - 1) // 4 + 1, (size[1] - 1) // 4 + 1
    inp = make_inputs(h4, w4)
    kw = dict(beta=args.beta, exp_times=args.exp_times)
    print(f"image {size[0]}x{size[1]}, stride-4 map {h4}x{w4} (N = {h4 * w4}), 2 classes, "
          f"3 instances, beta {args.beta}, exp_times {args.exp_times}, "
          f"{torch.get_num_threads()} CPU threads", flush=True)
    instance_masks(inp["cams"], inp["keys"], inp["boundary"], inp["displacement"], size, **kw)
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        ours = instance_masks(inp["cams"], inp["keys"], inp["boundary"], inp["displacement"],
                              size, **kw)
        runs.append(time.perf_counter() - t0)
    t_ours = min(runs)
    print(f"misc.irn.ins_seg.instance_masks: {t_ours:.3f} s (best of 3: "
          f"{', '.join(f'{t:.3f}' for t in runs)}), {len(ours)} segments", flush=True)
    t0 = time.perf_counter()
    score, masks, cls = ref_instance_masks(inp["cams"], inp["keys"], inp["boundary"],
                                           inp["displacement"], size, **kw)
    t_ref = time.perf_counter() - t0
    print(f"reference style (dense walk): {t_ref:.3f} s, {len(score)} segments")
    print(f"speed-up: {t_ref / t_ours:.0f}x (goal >= 20x)")
    same = len(score) == len(ours) and np.array_equal(cls, ours.cls) \
        and np.array_equal(masks, ours.masks())
    gap = float(np.abs(score - ours.score).max()) if same and len(score) else float("nan")
    diff_px = int((masks.any(0) != (ours.labels > 0)).sum()) if masks.size else -1
    print(f"same segments (order, class, mask): {same}; max |score gap| {gap:.3g}; "
          f"foreground pixels differing {diff_px}")
    print("classes:", ours.cls.tolist(), "scores:", np.round(ours.score, 4).tolist())


if __name__ == "__main__":
    main()
