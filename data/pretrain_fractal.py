"""A ResNet-50 pretrained on formula-driven images: fractal categories (FractalDB-style).

Unlike data/pretrain_backbone.py (shape x texture x hue: the very cues that define the toy's
classes), this task shares no class definition with any toy dataset. In the spirit of FractalDB
(Kataoka et al., ACCV 2020), each category is an iterated function system (IFS): 2-4 random
contractive affine maps of the plane. An image of a category is its attractor drawn by the
chaos game, with per-image variation: a small jitter of the maps' parameters, random colours
per map, position, scale, rotation and mirror, and a random gradient background. Categories
whose attractor fills too little of its bounding square (a curve, a few points) are rejected.
The label is the category alone: colour, placement and background carry no information.

The output has the same format as data/pretrain_backbone.py's (a torchvision-format ResNet-50
state_dict, loadable with `net.resnet50.load_backbone_weights`, and a JSON sidecar), and reuses
its training loop, learning-rate schedule, BN re-estimation and bf16/channels_last handling.

    python -m data.pretrain_fractal --out data/cache/resnet50_fractal.pth --steps 400

Measured (2 idle cores, bf16): 400 steps in 173.9 s, but the loss stays at ln(100) and the
held-out accuracy at chance (1.2%): the task is not learned in this budget, and the toy's CAM
classifier on this backbone reaches val mAP 53.4 (CAM seed 18.5 mIoU) against 74.0 (40.6) on
data/pretrain_backbone.py's. Not the toy's default until a recipe learns.
"""
from __future__ import annotations

import argparse
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from data.pretrain_backbone import (
    BATCH_SIZE,
    IMAGE_SIZE,
    all_cpu_threads,
    init_weights,
    recompute_bn_stats,
    save_backbone,
    train,
)
from misc.imutils import IMAGENET_MEAN, IMAGENET_STD
from misc.precision import native_bf16
from net.resnet50 import ResNet50

DEFAULT_FRACTAL_PATH = Path(__file__).resolve().parent / "cache" / "resnet50_fractal.pth"
DEFAULT_STEPS = 400        # the same budget as the synthetic-shape pretraining
N_CATEGORIES = 100         # ~128 images per category in 400 steps of 32 (FractalDB-100 scale)
MAX_MAPS = 4
MIN_FILL = 0.10            # occupied fraction of a 32x32 raster of the attractor's square
FILL_GRID = 32
CHAINS = 96                # parallel chaos-game chains per image
ITERS, BURN_IN = 56, 8     # 96 x 48 = 4608 points per 64 px image (~1 per pixel)
JITTER = 0.03              # relative per-image parameter noise (FractalDB's intra-category variation)


@dataclass(frozen=True)
class Categories:
    """IFS categories: maps (n, MAX_MAPS, 2, 3) = [A | b], probs (n, MAX_MAPS) (0 = unused)."""
    maps: np.ndarray
    probs: np.ndarray
    seed: int
    rejected: int  # candidates rejected as degenerate while drawing them


# -------------------------------------------- IFS ------------------------------------------------

def random_ifs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """2-4 affine maps with random linear parts rescaled to a spectral norm in [0.3, 0.9]
    (contractive, so the attractor exists and the chaos game converges); each map is chosen
    with a probability proportional to |det A| (+ a floor), so the maps spread the points
    evenly over the attractor."""
    k = int(rng.integers(2, MAX_MAPS + 1))
    a = rng.uniform(-1, 1, (k, 2, 2))
    a *= (rng.uniform(0.3, 0.9, k) / np.linalg.norm(a, ord=2, axis=(1, 2)))[:, None, None]
    maps = np.concatenate([a, rng.uniform(-1, 1, (k, 2, 1))], axis=2)
    p = np.abs(np.linalg.det(a)) + 0.02
    return maps, p / p.sum()


def chaos_game(rng: np.random.Generator, maps: np.ndarray, probs: np.ndarray,
               chains: int = CHAINS, iters: int = ITERS, burn_in: int = BURN_IN
               ) -> tuple[np.ndarray, np.ndarray]:
    """Points on the attractors of a batch of IFS, all chains advanced at once.

    maps (B, K, 2, 3), probs (B, K) -> points (B, chains * (iters - burn_in), 2) and the index
    of the map that produced each point (for colouring), same leading shape."""
    b = maps.shape[0]
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0  # guard against rounding: every draw picks some map
    x = rng.uniform(-1, 1, (b, chains, 2))
    rows = np.arange(b)[:, None]
    pts, ids = [], []
    for t in range(iters):
        k = (rng.random((b, chains, 1)) > cum[:, None, :]).sum(-1)
        m = maps[rows, k]                                  # (B, chains, 2, 3)
        x = np.einsum("bcij,bcj->bci", m[..., :2], x) + m[..., 2]
        if t >= burn_in:
            pts.append(x)
            ids.append(k)
    return np.concatenate(pts, axis=1), np.concatenate(ids, axis=1)


def fill_ratio(points: np.ndarray, grid: int = FILL_GRID) -> float:
    """Occupied fraction of a grid x grid raster of the points' bounding square (the longer
    side): ~1/grid for a line, small for a few isolated points."""
    lo, hi = points.min(0), points.max(0)
    span = float((hi - lo).max())
    if not np.isfinite(span) or span < 1e-6:
        return 0.0
    cells = np.minimum(((points - lo) / span * grid).astype(int), grid - 1)
    return len(np.unique(cells[:, 0] * grid + cells[:, 1])) / grid ** 2


def make_categories(n: int = N_CATEGORIES, seed: int = 0,
                    min_fill: float = MIN_FILL) -> Categories:
    """`n` IFS categories drawn from `seed`, rejecting those whose attractor (8k points of a
    canonical chaos game) fills less than `min_fill` of its bounding square."""
    rng = np.random.default_rng([seed, 10])
    maps = np.zeros((n, MAX_MAPS, 2, 3))
    probs = np.zeros((n, MAX_MAPS))
    found = rejected = 0
    while found < n:
        m, p = random_ifs(rng)
        pts, _ = chaos_game(rng, m[None], p[None], chains=128, iters=72)
        if fill_ratio(pts[0]) < min_fill:
            rejected += 1
            continue
        maps[found, :len(m)], probs[found, :len(p)] = m, p
        found += 1
    return Categories(maps, probs, seed, rejected)


@functools.lru_cache(maxsize=4)
def cached_categories(n: int = N_CATEGORIES, seed: int = 0) -> Categories:
    """make_categories, computed once per process (~1 s for 100 categories)."""
    return make_categories(n, seed)


# ------------------------------------------ rendering --------------------------------------------

def place(rng: np.random.Generator, pts: np.ndarray, size: int) -> np.ndarray:
    """Pixel coordinates (B, P, 2) of the points: each cloud centred, rotated, maybe mirrored,
    scaled so its longer extent spans 50-95 % of the image, and shifted at random."""
    b = len(pts)
    lo, hi = pts.min(1, keepdims=True), pts.max(1, keepdims=True)
    pts = (pts - (lo + hi) / 2) / np.maximum((hi - lo).max(-1, keepdims=True), 1e-6)
    theta = rng.uniform(0, 2 * np.pi, (b, 1))
    scale = size * rng.uniform(0.5, 0.95, (b, 1))
    cos, sin = np.cos(theta) * scale, np.sin(theta) * scale
    mirror = np.where(rng.random((b, 1)) < 0.5, -1.0, 1.0)
    x, y = pts[..., 0] * mirror, pts[..., 1]  # plain arithmetic: einsum is 5x slower here
    shift = size / 2 + rng.uniform(-0.2, 0.2, (b, 1, 2)) * size
    return np.stack([cos * x - sin * y, sin * x + cos * y], -1) + shift


def backgrounds(rng: np.random.Generator, b: int, size: int) -> np.ndarray:
    """(B, size, size, 3) float backgrounds in [0, 1]: a random colour with a linear gradient."""
    ramp = np.linspace(-0.5, 0.5, size)
    angle = rng.uniform(0, 2 * np.pi, b)
    grad = (np.cos(angle)[:, None, None] * ramp[None, None, :]
            + np.sin(angle)[:, None, None] * ramp[None, :, None])            # (B, H, W)
    base = rng.uniform(0, 1, (b, 1, 1, 3))
    return np.clip(base + rng.uniform(0, 0.5, (b, 1, 1, 1)) * grad[..., None], 0, 1)


def splat(xy: np.ndarray, ids: np.ndarray, colours: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Draw the points over `bg` (B, S, S, 3): per pixel the mean colour of its points, with an
    opacity growing with their count. colours (B, K, 3) per map; ids (B, P) map per point."""
    b, size = bg.shape[0], bg.shape[1]
    px = np.floor(xy).astype(np.int64)
    inside = ((px >= 0) & (px < size)).all(-1)
    flat = (np.arange(b)[:, None] * size * size + px[..., 1] * size + px[..., 0])[inside]
    col = colours[np.arange(b)[:, None], ids][inside]                         # (N, 3)
    n_px = b * size * size
    count = np.bincount(flat, minlength=n_px).astype(np.float64)
    rgb = np.stack([np.bincount(flat, col[:, c], minlength=n_px) for c in range(3)], -1)
    rgb /= np.maximum(count, 1)[:, None]
    alpha = (1 - np.exp(-1.5 * count))[:, None]
    out = bg.reshape(n_px, 3) * (1 - alpha) + rgb * alpha
    return out.reshape(bg.shape)


def render(rng: np.random.Generator, cats: Categories, labels: np.ndarray,
           size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 (B, size, size, 3) images of the given categories (jittered maps, random colours,
    placement and background)."""
    b = len(labels)
    maps = cats.maps[labels] * (1 + JITTER * rng.standard_normal((b, MAX_MAPS, 2, 3)))
    pts, ids = chaos_game(rng, maps, cats.probs[labels])
    colours = rng.uniform(0, 1, (b, MAX_MAPS, 3))
    img = splat(place(rng, pts, size), ids, colours, backgrounds(rng, b, size))
    return (img * 255 + 0.5).astype(np.uint8)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W), ImageNet-normalised like misc.imutils.normalize."""
    mean, std = np.float32(IMAGENET_MEAN), np.float32(IMAGENET_STD)
    x = (img.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def fractal_batcher(cats: Categories, size: int = IMAGE_SIZE
                    ) -> Callable[[np.random.Generator, int], tuple[torch.Tensor, torch.Tensor]]:
    """batches(rng, n) -> (normalised (n, 3, size, size) images, (n,) category labels), each
    rendered on the fly (cheaper than the network's step; see docs in the module summary)."""
    def batches(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = rng.integers(len(cats.maps), size=n)
        return to_tensor(render(rng, cats, labels, size)), torch.from_numpy(labels)
    return batches


# ------------------------------------------- training --------------------------------------------

@torch.no_grad()
def accuracy(model: torch.nn.Module, batches: Callable, rng: np.random.Generator, n: int,
             batch_size: int) -> float:
    """Top-1 accuracy on `n` fresh renderings (eval mode, running BN statistics)."""
    model.eval()
    hits = []
    for start in range(0, n, batch_size):
        x, y = batches(rng, min(batch_size, n - start))
        hits.append(model(x).argmax(1) == y)
    return float(torch.cat(hits).float().mean())


def pretrain(steps: int = DEFAULT_STEPS, seed: int = 0, batch_size: int = BATCH_SIZE,
             n_categories: int = N_CATEGORIES, log: Callable[[str], None] = print
             ) -> tuple[dict[str, torch.Tensor], dict]:
    """Pretrain ResNet50(strides=(2,2,2,2), ordinary BN) to classify fractal categories.
    Returns (state_dict in torchvision key format, summary dict)."""
    start = time.perf_counter()
    cats = cached_categories(n_categories, seed)
    batches = fractal_batcher(cats)
    with all_cpu_threads():
        torch.manual_seed(seed)
        model = ResNet50(strides=(2, 2, 2, 2), fixed_bn=False, num_classes=n_categories)
        init_weights(model)
        amp = native_bf16("cpu")
        loss = train(model, steps, np.random.default_rng([seed, 0]), batch_size, amp,
                     batches=batches, loss_fn=F.cross_entropy, desc="pretrain fractal")
        model.to(memory_format=torch.contiguous_format)
        full = steps >= 50  # tiny test runs keep BN re-estimation and evaluation tiny
        eval_batch = 64 if full else batch_size
        recompute_bn_stats(model, np.random.default_rng([seed, 1]),
                           max(2, min(20, steps // 10)), eval_batch, make_batch=batches)
        n_eval = 512 if full else 2 * batch_size
        acc = accuracy(model, batches, np.random.default_rng([seed, 2]), n_eval, eval_batch)
    summary = {"task": "fractal", "steps": steps, "seed": seed, "batch_size": batch_size,
               "image_size": IMAGE_SIZE, "bf16": amp, "categories": n_categories,
               "rejected_categories": cats.rejected, "min_fill": MIN_FILL,
               "final_train_loss": round(loss, 4), "heldout_accuracy": round(acc, 4),
               "chance": round(1 / n_categories, 4), "eval_samples": n_eval,
               "seconds": round(time.perf_counter() - start, 1)}
    log(f"fractal pretraining: {steps} steps in {summary['seconds']} s, final loss {loss:.3f}, "
        f"held-out accuracy {acc:.1%} on {n_eval} fresh renderings of {n_categories} categories "
        f"(chance {1 / n_categories:.1%})")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, summary


def ensure_fractal_backbone(path: str | Path = DEFAULT_FRACTAL_PATH, steps: int = DEFAULT_STEPS,
                            seed: int = 0, log: Callable[[str], None] = print,
                            force: bool = False, batch_size: int = BATCH_SIZE,
                            n_categories: int = N_CATEGORIES) -> Path:
    """Return `path`, pretraining and writing the backbone (and <stem>.json) first if it is
    missing (or `force`)."""
    path = Path(path)
    if path.is_file() and not force:
        log(f"fractal backbone present: {path}")
        return path
    log(f"pretraining a ResNet-50 on {n_categories} fractal categories ({steps} steps) -> {path}")
    state, summary = pretrain(steps, seed, batch_size, n_categories, log=log)
    save_backbone(path, state, summary)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_FRACTAL_PATH))
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--categories", type=int, default=N_CATEGORIES)
    parser.add_argument("--force", action="store_true", help="rebuild even if the file exists")
    args = parser.parse_args(argv)
    ensure_fractal_backbone(args.out, args.steps, args.seed, force=args.force,
                            n_categories=args.categories)


if __name__ == "__main__":
    main()
