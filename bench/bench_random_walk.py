"""Benchmark: the random walk of make_sem_seg_labels, dense reference vs sparse steps.

Run from the repository root:
    python -m bench.bench_random_walk [--device cpu|cuda] [--size H W] [--classes K] [--threads T]

At a VOC-size stride-4 map (default 94 x 125, N = 11750 vertices), with a smooth random boundary
map (ridges along the level set of a smooth field) and smooth random seeds (relu(field) ** 1.3),
beta 10, exp_times 8, radius 5, times
  * misc.irn.random_walk.dense_random_walk: the reference's N x N affinity, colnorm(A ** beta),
    8 squarings, x . T (N = 11750: 550 MB per N x N matrix, 8 matmuls of 3.2 TFLOP each);
  * misc.irn.random_walk.random_walk: sparse operator built once, 256 sparse steps (best of 3);
and reports both times, the speed ratio (goal >= 100x), the largest difference and the share of
pixels whose label agrees after the reference's normalisation (divide by the global max, prepend
a constant 0.25 background channel, argmax; goal >= 99.9%). TF32 is off on CUDA. Also prints the
host memory of IRN training affinity labels per batch (reference arrays vs our label maps).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from misc.irn.random_walk import dense_random_walk, random_walk

BG_THRES = 0.25


def smooth_field(shape: tuple[int, ...], h: int, w: int, gen: torch.Generator) -> Tensor:
    """Zero-mean, unit-std random field (*shape, h, w), smooth over ~8 pixels."""
    coarse = torch.randn(*shape, h // 8 + 2, w // 8 + 2, generator=gen)
    field = F.interpolate(coarse.view(-1, 1, *coarse.shape[-2:]), size=(h, w), mode="bicubic",
                          align_corners=False).view(*shape, h, w)
    return (field - field.mean()) / field.std()


def make_inputs(h: int, w: int, k: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """seeds (k, h, w) >= 0 and boundary (h, w) in (0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    boundary = 0.95 * torch.exp(-(smooth_field((), h, w, gen) / 0.25) ** 2)
    boundary = (boundary + 0.05 * torch.rand(h, w, generator=gen)).clamp(0, 1)
    seeds = smooth_field((k,), h, w, gen).clamp_min(0) ** 1.3
    return seeds, boundary


def labels(rw: Tensor) -> Tensor:
    """Reference normalisation: global max, constant background channel, argmax. (h, w) int."""
    rw = rw / rw.max()
    bg = torch.full_like(rw[:1], BG_THRES)
    return torch.cat([bg, rw]).argmax(dim=0)


def timed(fn: Callable[[], Tensor], device: torch.device) -> tuple[Tensor, float]:
    """Result and wall time of fn(), synchronising CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def label_memory(batch: int = 32, n_dirs: int = 152, n_src: int = 13090, side: int = 128) -> None:
    """Arithmetic: reference float32 (3, D, Ns) per sample vs our uint8 (side, side) label."""
    ref, ours = 3 * n_dirs * n_src * 4, side * side
    print(f"IRN label memory per sample: reference 3x{n_dirs}x{n_src} float32 = {ref:,} B "
          f"({ref / 2**20:.2f} MiB); ours {side}x{side} uint8 = {ours:,} B ({ours / 2**10:.0f} KiB)")
    print(f"per batch of {batch}: reference {batch * ref / 2**20:.1f} MiB, "
          f"ours {batch * ours / 2**10:.0f} KiB ({ref / ours:.0f}x less)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--size", nargs=2, type=int, default=(94, 125), metavar=("H", "W"))
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--beta", type=float, default=10)
    ap.add_argument("--exp_times", type=int, default=8)
    ap.add_argument("--radius", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    (h, w), k = args.size, args.classes
    seeds, boundary = (t.to(device) for t in make_inputs(h, w, k))
    kw = dict(beta=args.beta, exp_times=args.exp_times, radius=args.radius)
    print(f"device {device} ({torch.get_num_threads()} CPU threads), map {h}x{w} (N = {h * w}), "
          f"K = {k}, beta {args.beta}, exp_times {args.exp_times} "
          f"({2 ** args.exp_times} steps), radius {args.radius}")
    random_walk(seeds, boundary, **kw)  # warm-up (CUDA context, cached path index)
    runs = [timed(lambda: random_walk(seeds, boundary, **kw), device) for _ in range(3)]
    sparse, t_sparse = runs[0][0], min(t for _, t in runs)
    print(f"sparse: {t_sparse:.3f} s (best of 3: {', '.join(f'{t:.3f}' for _, t in runs)})",
          flush=True)
    dense, t_dense = timed(lambda: dense_random_walk(seeds, boundary, **kw), device)
    print(f"dense : {t_dense:.3f} s")
    print(f"speed-up: {t_dense / t_sparse:.0f}x (goal >= 100x)")
    diff = (sparse - dense).abs().max().item()
    print(f"max |sparse - dense| = {diff:.3g} (dense max {dense.max().item():.3g})")
    same = (labels(sparse) == labels(dense)).float().mean().item()
    print(f"same label: {100 * same:.3f}% of {h * w} pixels (goal >= 99.9%)")
    label_memory()


if __name__ == "__main__":
    main()
