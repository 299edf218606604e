"""A "pretrained" ResNet-50 without ImageNet: pretraining on separate synthetic data.

The synthetic task shows 48 px images of one large shape on a cluttered background and asks
for three attributes of it, each with its own softmax group of the fc layer: SHAPE (4), TEXTURE
(4) and HUE (6 bins around the colour circle), i.e. 96 combinations. Separate groups give every
attribute a full-strength gradient, so the backbone becomes sensitive to shape, texture and
fine hue within a few hundred steps. It never uses the toy dataset's classes or labels; it only
shares generic low-level statistics with it (smooth-noise backgrounds, flat distractors,
stripes/checker/dot textures, colour blobs), which is what a backbone should bring.

The result is a torchvision-format ResNet-50 state_dict (fc.* included), loadable with
`net.resnet50.load_backbone_weights` into `ResNet50()`, plus a JSON sidecar with the summary.

    python -m data.pretrain_backbone --out data/cache/resnet50_synthetic.pth --steps 400
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from data.toy_dataset import hsv, polygon_mask, render_background, smooth_noise, texture
from misc.artifacts import atomic_path, save_checkpoint
from misc.imutils import normalize
from misc.precision import low_precision, native_bf16, prepare_model
from net.resnet50 import ResNet50

DEFAULT_BACKBONE_PATH = Path(__file__).resolve().parent / "cache" / "resnet50_synthetic.pth"
# ~0.28 s per step at 48 px on an idle 2-core CPU with bf16; fewer steps (200 or 250) gave IRN
# weaker features and pseudo-masks below the AMN seed (README, "Toy profile")
DEFAULT_STEPS = 400
BATCH_SIZE = 32
IMAGE_SIZE = 48
LR = 2e-3
WEIGHT_DECAY = 0.05

SHAPES = ("disc", "square", "triangle", "ring")
TEXTURES = ("plain", "stripes", "checker", "dots")
N_HUES = 6                                   # hue bins of width 1/6 around the colour circle
GROUPS = (len(SHAPES), len(TEXTURES), N_HUES)  # softmax groups of the fc layer
N_OUTPUTS = sum(GROUPS)                      # fc.weight is (N_OUTPUTS, 2048)
N_COMBINATIONS = int(np.prod(GROUPS))


# ---------------------------------------- synthetic data ----------------------------------------

def shape_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """Boolean (size, size) mask of one randomly placed, scaled and rotated shape."""
    radius = 0.5 * size * rng.uniform(0.4, 0.8)
    cx, cy = rng.uniform(0.75 * radius, size - 0.75 * radius, 2)
    n = {"disc": 32, "ring": 32, "square": 4, "triangle": 3}[shape]
    t = rng.uniform(0, 2 * np.pi) + np.arange(n) * 2 * np.pi / n
    aspect = rng.uniform(0.7, 1.0)
    rot = rng.uniform(0, np.pi)

    def poly(r: float) -> np.ndarray:
        x, y = r * np.cos(t), r * aspect * np.sin(t)
        return np.stack([cx + x * np.cos(rot) - y * np.sin(rot),
                         cy + x * np.sin(rot) + y * np.cos(rot)], 1)

    mask = polygon_mask(size, size, poly(radius))
    if shape == "ring":
        mask &= ~polygon_mask(size, size, poly(radius * rng.uniform(0.45, 0.6)))
    return mask


def synthetic_sample(rng: np.random.Generator,
                     size: int = IMAGE_SIZE) -> tuple[np.ndarray, tuple[int, int, int]]:
    """One uint8 (size, size, 3) image and its (shape, texture, hue bin) labels."""
    s, t, h = (int(rng.integers(n)) for n in GROUPS)
    img = render_background(rng, size, size, (1, 5))
    mask = shape_mask(rng, SHAPES[s], size)
    hue = (h + rng.uniform(0.15, 0.85)) / N_HUES  # keep away from the bin edges
    colour = hsv(hue, rng.uniform(0.35, 1.0), rng.uniform(0.45, 1.0))
    tex = texture(rng, TEXTURES[t], size, size, rng.uniform(4, 9))
    contrast = rng.uniform(0.2, 0.4) if TEXTURES[t] != "plain" else 0.15
    obj = colour * (1 + contrast * tex)[..., None]
    img[mask] = obj[mask]
    img = img * (1 + 0.08 * smooth_noise(rng, size, size, 3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), (s, t, h)


def synthetic_batch(rng: np.random.Generator, n: int,
                    size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised (n, 3, size, size) float batch (ImageNet mean/std) and (n, 3) labels."""
    samples = [synthetic_sample(rng, size) for _ in range(n)]
    x = np.stack([normalize(img).transpose(2, 0, 1) for img, _ in samples])
    return torch.from_numpy(x), torch.tensor([y for _, y in samples])


# ------------------------------------------- training -------------------------------------------

def group_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over the attribute groups of the softmax cross-entropy."""
    return sum(F.cross_entropy(part, y[:, g])
               for g, part in enumerate(logits.split(GROUPS, dim=1)))


def group_predict(logits: torch.Tensor) -> torch.Tensor:
    """(n, 3) predicted attribute labels."""
    return torch.stack([part.argmax(1) for part in logits.split(GROUPS, dim=1)], dim=1)


def init_weights(model: nn.Module) -> None:
    """He init for convs; zero gamma on each block's last BN so blocks start as identities."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 0.0 if name.endswith("bn3") else 1.0)
            nn.init.zeros_(m.bias)


def lr_at(step: int, steps: int, base: float = LR) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to zero."""
    warm = max(1, steps // 20)
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


Batches = Callable[[np.random.Generator, int], tuple[torch.Tensor, torch.Tensor]]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train(model: nn.Module, steps: int, rng: np.random.Generator, batch_size: int,
          amp: bool = False, batches: Batches = synthetic_batch, loss_fn: Loss = group_loss,
          desc: str = "pretrain backbone") -> float:
    """AdamW with warm-up + cosine (faster than SGD from scratch in a few hundred steps);
    returns the mean loss of the last 10 % of steps. `amp`: forward in bf16, channels_last
    (1.6x per step on a 2-core CPU with native bf16). `batches(rng, n)` -> (x, y) and
    `loss_fn(logits, y)` default to this module's task (data/pretrain_fractal.py passes its own)."""
    forward = low_precision(prepare_model(model, amp), torch.device("cpu"), amp, amp)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # BN and biases
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR,
                            fused=True)  # one kernel: 63 -> 15 ms per step on a 2-core CPU
    model.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=2.0)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        x, y = batches(rng, batch_size)
        loss = loss_fn(forward(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretraining loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
    return float(np.mean(losses[-max(1, steps // 10):]))


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, rng: np.random.Generator, batches: int,
                       batch_size: int, make_batch: Batches = synthetic_batch) -> None:
    """Replace the running BN statistics by exact averages over fresh batches of the final
    weights (the EMA collected during training lags behind the changing weights)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    for _ in range(batches):
        model(make_batch(rng, batch_size)[0])
    for bn in bns:
        bn.momentum = 0.1


@torch.no_grad()
def evaluate(model: nn.Module, rng: np.random.Generator, n: int,
             batch_size: int) -> tuple[float, list[float]]:
    """Accuracy on `n` fresh synthetic samples (eval mode, running BN statistics): the joint
    accuracy (all three attributes right, chance 1/96) and the accuracy per attribute."""
    model.eval()
    hits = []
    for start in range(0, n, batch_size):
        x, y = synthetic_batch(rng, min(batch_size, n - start))
        hits.append(group_predict(model(x)) == y)
    hits_t = torch.cat(hits).float()
    return float(hits_t.min(1).values.mean()), [round(float(a), 4) for a in hits_t.mean(0)]


@contextlib.contextmanager
def all_cpu_threads() -> Iterator[None]:
    """torch uses every CPU core this process may run on, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def save_backbone(path: Path, state: dict[str, torch.Tensor], summary: dict) -> None:
    """Write the state_dict and its JSON summary (<stem>.json), each atomically."""
    save_checkpoint(path, state)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")


def pretrain(steps: int = DEFAULT_STEPS, seed: int = 0, batch_size: int = BATCH_SIZE,
             log: Callable[[str], None] = print) -> tuple[dict[str, torch.Tensor], dict]:
    """Pretrain ResNet50(strides=(2,2,2,2), ordinary BN) on the synthetic task.
    Returns (state_dict in torchvision key format, summary dict)."""
    start = time.perf_counter()
    with all_cpu_threads():
        torch.manual_seed(seed)
        model = ResNet50(strides=(2, 2, 2, 2), fixed_bn=False, num_classes=N_OUTPUTS)
        init_weights(model)
        amp = native_bf16("cpu")
        loss = train(model, steps, np.random.default_rng([seed, 0]), batch_size, amp)
        model.to(memory_format=torch.contiguous_format)
        full = steps >= 50  # tiny test runs also keep BN re-estimation and evaluation tiny
        eval_batch = 64 if full else batch_size
        recompute_bn_stats(model, np.random.default_rng([seed, 1]),
                           batches=max(2, min(20, steps // 10)), batch_size=eval_batch)
        n_eval = 512 if full else 2 * batch_size
        acc, per_group = evaluate(model, np.random.default_rng([seed, 2]), n_eval, eval_batch)
    summary = {"steps": steps, "seed": seed, "batch_size": batch_size, "image_size": IMAGE_SIZE,
               "bf16": amp,
               "groups": dict(zip(("shape", "texture", "hue"), GROUPS)),
               "final_train_loss": round(loss, 4), "heldout_accuracy": round(acc, 4),
               "chance": round(1 / N_COMBINATIONS, 4),
               "heldout_accuracy_per_group": dict(zip(("shape", "texture", "hue"), per_group)),
               "eval_samples": n_eval, "seconds": round(time.perf_counter() - start, 1)}
    log(f"synthetic pretraining: {steps} steps in {summary['seconds']} s, final loss "
        f"{loss:.3f}, held-out accuracy {acc:.1%} on {n_eval} fresh samples (all of shape, "
        f"texture, hue right; chance {1 / N_COMBINATIONS:.1%}); per attribute "
        f"shape/texture/hue {' / '.join(f'{a:.1%}' for a in per_group)}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, summary


def _summary_of(path: Path) -> dict:
    """The JSON sidecar of a cached backbone ({} when missing or unreadable)."""
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


def ensure_pretrained_backbone(path: str | Path = DEFAULT_BACKBONE_PATH,
                               steps: int = DEFAULT_STEPS, seed: int = 0,
                               log: Callable[[str], None] = print, force: bool = False,
                               batch_size: int = BATCH_SIZE) -> Path:
    """Return `path`, pretraining and writing the backbone first (atomically) if it is missing
    (or `force`). A JSON summary (steps, accuracy, time) is written next to it as <stem>.json."""
    path = Path(path)
    made = _summary_of(path)
    recipe = {"steps": steps, "image_size": IMAGE_SIZE}
    old = {k: made.get(k, v) for k, v in recipe.items()}
    if path.is_file() and not force and old == recipe:
        log(f"synthetic backbone present: {path}")
        return path
    if path.is_file() and not force:
        log(f"{path} was pretrained with {old}, this version uses {recipe}: pretraining again")
    log(f"pretraining a ResNet-50 on synthetic data ({steps} steps) -> {path}")
    state, summary = pretrain(steps, seed, batch_size, log=log)
    save_backbone(path, state, summary)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_BACKBONE_PATH))
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if the file exists")
    args = parser.parse_args(argv)
    ensure_pretrained_backbone(args.out, args.steps, args.seed, force=args.force)


if __name__ == "__main__":
    main()
