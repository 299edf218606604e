"""A "pretrained" ResNet-50 or Conformer-S without ImageNet: random procedural categories.

The task shows small images (ResNet-50: 48 px; Conformer-S: 64 px, see `CONFORMER_S`) of one
object on a cluttered background and asks, with one softmax group of the network's head(s)
each, which of 16 GLYPHS (a random star-shaped outline, some with a hole), 16 PALETTES (a
random pair of colours) and 16 TEXTURES (random gratings, plaids and noise of random
frequency, orientation and waveform) it shows. The 48 categories are random draws from a
fixed seed (`BANK_SEED`), like the random categories of formula-driven pretraining (FractalDB,
Kataoka et al., ACCV 2020): they share no class definition with any dataset of this repository
(no hue bins, no stripe/checker/dot textures, no part shapes) and the drawing code is this
module's own. The task is hard in 400 steps (held-out accuracy well above chance for palettes,
barely for glyphs and textures); what it is measured by is transfer: the toy's and the parts
dataset's classifiers and CAMs on it (docs/toy.md, "The synthetic backbone").

The task, its batches, the training loop and the cache with its JSON sidecar are shared; a
`Network` says what differs (how to build it, its input side, its loss layout, its file):

- `RESNET50`: a torchvision-format ResNet-50 state_dict (fc.* included), loadable with
  `net.resnet50.load_backbone_weights` into `ResNet50()`.
- `CONFORMER_S`: a Conformer-S state_dict in the ImageNet Conformer's layout (718 keys; its two
  heads, a Linear on the pooled CNN map and a Linear on the cls token, give the 48 group
  logits each), loadable with `net.conformer.load_conformer_weights` into `conformer.Net()`
  as the ImageNet file is: the two heads dropped, the other 714 entries strict.

    python -m data.pretrain_backbone --network resnet50 --steps 400
    python -m data.pretrain_backbone --network conformer_s --steps 400
"""
from __future__ import annotations

import argparse
import colorsys
import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw
from tqdm import tqdm

from misc.engine.precision import low_precision, native_bf16, prepare_model
from misc.engine.prefetch import drawn_ahead
from misc.imutils import normalize
from misc.io.atomic import atomic_path
from misc.io.checkpoints import save_checkpoint
from net import conformer
from net.resnet50 import ResNet50

CACHE = Path(__file__).resolve().parent / "cache"
DEFAULT_BACKBONE_PATH = CACHE / "resnet50_synthetic.pth"
DEFAULT_CONFORMER_PATH = CACHE / "conformer_s_synthetic.pth"
TASK = "procedural-v1"  # a cache made for another task is pretrained again
DEFAULT_STEPS = 400
BATCH_SIZE = 32
IMAGE_SIZE = 48
LR = 2e-3
WEIGHT_DECAY = 0.05

BANK_SEED = 20261121
GROUPS = (16, 16, 16)                        # glyphs, palettes, textures: softmax groups
GROUP_NAMES = ("glyph", "palette", "texture")
N_OUTPUTS = sum(GROUPS)                      # fc.weight is (N_OUTPUTS, 2048)
N_COMBINATIONS = int(np.prod(GROUPS))
MAX_VERTICES = 12


# ------------------------------------------ categories ------------------------------------------

@dataclass(frozen=True)
class Bank:
    """The random categories. radii (glyphs, MAX_VERTICES): the outline's radius at evenly
    spaced angles (0 = unused vertex); holes (glyphs,): inner outline scale, 0 = solid;
    colours (palettes, 2, 3): RGB in [0, 1]; textures (textures, 6): frequency and orientation
    of a grating, of an optional second one (frequency 0 = none), square wave (0/1), cells of an
    optional smooth-noise term (0 = none)."""

    radii: np.ndarray
    holes: np.ndarray
    colours: np.ndarray
    textures: np.ndarray


def make_bank(seed: int = BANK_SEED) -> Bank:
    rng = np.random.default_rng(seed)
    n_glyphs, n_palettes, n_textures = GROUPS
    radii = np.zeros((n_glyphs, MAX_VERTICES), np.float32)
    for g in range(n_glyphs):
        n = int(rng.integers(3, MAX_VERTICES + 1))
        radii[g, :n] = rng.uniform(0.25, 1.0, n)
    holes = np.where(rng.random(n_glyphs) < 0.3, rng.uniform(0.35, 0.6, n_glyphs), 0.0)
    hsv = np.stack([rng.random((n_palettes, 2)), rng.uniform(0.2, 1, (n_palettes, 2)),
                    rng.uniform(0.25, 1, (n_palettes, 2))], -1)
    colours = np.array([colorsys.hsv_to_rgb(*c) for c in hsv.reshape(-1, 3)], np.float32)
    textures = np.stack([
        rng.uniform(1.0, 5.0, n_textures), rng.uniform(0, np.pi, n_textures),
        np.where(rng.random(n_textures) < 0.5, rng.uniform(1.0, 5.0, n_textures), 0),
        rng.uniform(0, np.pi, n_textures), rng.random(n_textures) < 0.5,
        np.where(rng.random(n_textures) < 0.25, rng.integers(3, 8, n_textures), 0)], 1)
    return Bank(radii, holes, colours.reshape(n_palettes, 2, 3), textures.astype(np.float32))


BANK = make_bank()


# ------------------------------------------- drawing --------------------------------------------

def polygon(size: int, points: np.ndarray) -> np.ndarray:
    """Boolean (size, size) mask of a filled polygon given as (N, 2) x, y points."""
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in points.round(2).tolist()], fill=1)
    return np.asarray(img, bool)


def smooth(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """(size, size, channels) float32 noise in about [-1, 1], bicubic from a cells^2 grid."""
    grid = rng.uniform(-1, 1, (cells, cells, channels)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(grid[..., c], "F").resize(
        (size, size), Image.BICUBIC)) for c in range(channels)], -1)


def glyph_mask(rng: np.random.Generator, glyph: int, size: int, centre: np.ndarray,
               radius: float) -> np.ndarray:
    """The glyph's outline, randomly rotated, radii jittered by 10 %."""
    r = BANK.radii[glyph][BANK.radii[glyph] > 0]
    r = r * rng.uniform(0.9, 1.1, len(r))
    angle = rng.uniform(0, 2 * np.pi) + np.arange(len(r)) * 2 * np.pi / len(r)
    offsets = radius * r[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    mask = polygon(size, centre + offsets)
    if BANK.holes[glyph] > 0:
        mask &= ~polygon(size, centre + BANK.holes[glyph] * offsets)
    return mask


def texture_field(rng: np.random.Generator, kind: int, size: int,
                  radius: float) -> np.ndarray:
    """(size, size) mixing weights in [0, 1]; frequencies are in cycles per object radius."""
    f1, theta1, f2, theta2, square, cells = BANK.textures[kind]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    omega = 2 * np.pi / max(radius, 4.0)

    def grating(f: float, theta: float) -> np.ndarray:
        theta += rng.normal(0, 0.1)
        return np.sin(omega * f * (xx * np.cos(theta) + yy * np.sin(theta))
                      + rng.uniform(0, 2 * np.pi))

    v = grating(f1, theta1) + (grating(f2, theta2) if f2 > 0 else 0)
    if cells > 0:
        v = v + 2 * smooth(rng, size, int(cells), 1)[..., 0]
    if square:
        v = np.sign(v)
    return np.clip(0.5 + 0.5 * v / max(1e-6, float(np.abs(v).max())), 0, 1)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: a smooth colour field with up to 5 random lines and
    polygons of random colours."""
    img = rng.uniform(0.2, 0.8, 3) + rng.uniform(0.05, 0.25) * smooth(
        rng, size, int(rng.integers(2, 6)), 3)
    canvas = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 6))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.line([tuple(rng.uniform(0, size, 2)) for _ in range(2)], fill=colour,
                      width=int(rng.integers(1, 3)))
        else:
            centre, r, n = rng.uniform(0, size, 2), rng.uniform(2, size / 6), rng.integers(3, 7)
            angle = rng.uniform(0, 2 * np.pi) + np.arange(n) * 2 * np.pi / n
            draw.polygon([tuple(centre + r * np.array([np.cos(a), np.sin(a)])) for a in angle],
                         fill=colour)
    return np.asarray(canvas, np.float32) / 255


def synthetic_sample(rng: np.random.Generator,
                     size: int = IMAGE_SIZE) -> tuple[np.ndarray, tuple[int, int, int]]:
    """One uint8 (size, size, 3) image and its (glyph, palette, texture) labels."""
    glyph, palette, kind = (int(rng.integers(n)) for n in GROUPS)
    img = background(rng, size)
    radius = size * rng.uniform(0.15, 0.45)
    centre = rng.uniform(0.6 * radius, size - 0.6 * radius, 2)
    mask = glyph_mask(rng, glyph, size, centre, radius)
    a, b = BANK.colours[palette] + rng.normal(0, 0.03, (2, 3)).astype(np.float32)
    t = texture_field(rng, kind, size, radius)[..., None]
    img[mask] = (a * (1 - t) + b * t)[mask]
    img = img * (1 + 0.06 * smooth(rng, size, 3, 1))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), (glyph, palette, kind)


def synthetic_batch(rng: np.random.Generator, n: int,
                    size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised (n, 3, size, size) float batch (ImageNet mean/std) and (n, 3) labels."""
    samples = [synthetic_sample(rng, size) for _ in range(n)]
    x = np.stack([normalize(img).transpose(2, 0, 1) for img, _ in samples])
    return torch.from_numpy(x), torch.tensor([y for _, y in samples])


# ------------------------------------------- training -------------------------------------------

def by_head(logits: torch.Tensor) -> torch.Tensor:
    """(n, N_OUTPUTS) logits of one head, or (n, heads, N_OUTPUTS) of several -> (n, heads,
    N_OUTPUTS)."""
    return logits.unsqueeze(1) if logits.dim() == 2 else logits


def group_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over the heads and the attribute groups of the softmax cross-entropy. logits (n,
    N_OUTPUTS) or (n, heads, N_OUTPUTS) (the Conformer's CNN and transformer heads, each trained
    on the task as ImageNet Conformer's two heads are), y (n, 3) labels."""
    heads = by_head(logits)
    return sum(F.cross_entropy(part, y[:, g]) for h in range(heads.shape[1])
               for g, part in enumerate(heads[:, h].split(GROUPS, dim=1)))


def group_predict(logits: torch.Tensor) -> torch.Tensor:
    """(n, 3) predicted attribute labels from the heads' summed logits."""
    summed = by_head(logits).sum(1)
    return torch.stack([part.argmax(1) for part in summed.split(GROUPS, dim=1)], dim=1)


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
          desc: str = "pretrain backbone", lr: float = LR) -> float:
    """AdamW with warm-up + cosine (faster than SGD from scratch in a few hundred steps);
    returns the mean loss of the last 10 % of steps. `amp`: forward in bf16, channels_last
    (1.6x per step on a 2-core CPU with native bf16). `batches(rng, n)` -> (x, y) and
    `loss_fn(logits, y)` default to this module's task. The batches are drawn one ahead in a
    thread (misc/engine/prefetch.py): the same batches, drawn while the network steps."""
    forward = low_precision(prepare_model(model, amp), torch.device("cpu"), amp, amp)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # BN and biases
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                            fused=True)  # one kernel instead of a loop over the tensors
    model.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=2.0)
    with drawn_ahead(batches(rng, batch_size) for _ in range(steps)) as drawn:
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, lr)
            x, y = next(drawn)
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
    with drawn_ahead(make_batch(rng, batch_size) for _ in range(batches)) as drawn:
        for x, _ in drawn:
            model(x)
    for bn in bns:
        bn.momentum = 0.1


@torch.no_grad()
def evaluate(model: nn.Module, rng: np.random.Generator, n: int, batch_size: int,
             size: int = IMAGE_SIZE) -> tuple[float, list[float]]:
    """Accuracy on `n` fresh synthetic samples of side `size` (eval mode, running BN
    statistics): the joint accuracy (all three groups right) and the accuracy per group."""
    model.eval()
    with drawn_ahead(synthetic_batch(rng, min(batch_size, n - start), size)
                     for start in range(0, n, batch_size)) as drawn:
        hits = [group_predict(model(x)) == y for x, y in drawn]
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


class ConformerGroups(conformer.Net):
    """Conformer-S (net/conformer.py, `depth` blocks) with the ImageNet Conformer's two heads
    sized for the task: `conv_cls_head` a Linear on the CNN map's global average,
    `trans_cls_head` a Linear on the normalised cls token. Its state_dict has the ImageNet
    file's keys and layout (2-D conv_cls_head.weight), which `load_conformer_weights` loads
    into `conformer.Net()` with the heads dropped.

    forward(img (B, 3, H, W), sides multiples of 16) -> (B, 2, N_OUTPUTS) logits of the CNN
    and transformer heads."""

    def __init__(self, depth: int = 12, drop_path_rate: float = 0.0):
        super().__init__(n_classes=1, depth=depth, drop_path_rate=drop_path_rate)
        # same attribute names, so the registration (key) order stays the reference's
        self.trans_cls_head = nn.Linear(conformer.EMBED_DIM, N_OUTPUTS)
        self.conv_cls_head = nn.Linear(4 * conformer.BASE_CHANNELS, N_OUTPUTS)
        for head in (self.trans_cls_head, self.conv_cls_head):
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x, tokens, _ = self.backbone(img)
        return torch.stack([self.conv_cls_head(x.mean(dim=(2, 3))),
                            self.trans_cls_head(self.trans_norm(tokens)[:, 0])], dim=1)


def build_resnet50() -> nn.Module:
    model = ResNet50(strides=(2, 2, 2, 2), fixed_bn=False, num_classes=N_OUTPUTS)
    init_weights(model)
    return model


@dataclass(frozen=True)
class Network:
    """What the pretraining of one network needs beyond the shared task and loop. name: its
    record in the sidecar (a cache of another network is pretrained again); build: the
    randomly initialised network, called after torch.manual_seed(seed), whose forward gives
    (n, N_OUTPUTS) or (n, heads, N_OUTPUTS) logits; image_size: the task's side for it;
    steps, batch_size, lr: its default schedule (AdamW peak rate, warm-up + cosine)."""

    name: str
    title: str
    build: Callable[[], nn.Module]
    image_size: int
    default_path: Path
    steps: int = DEFAULT_STEPS
    batch_size: int = BATCH_SIZE
    lr: float = LR


RESNET50 = Network("resnet50", "ResNet-50", build_resnet50, IMAGE_SIZE, DEFAULT_BACKBONE_PATH)
# 64 px: a 4x4 token grid (48 px would give 3x3, nine tokens and hardly any attention to
# learn), the toy's smallest TransCAM view (64/112/176); 96 px would cost 2.25x per step.
# A Conformer-S step at 64 px costs ~25x a ResNet-50 step at 48 px on this CPU (both branches,
# the stride-16 CNN map kept by block 12), so its default schedule is 80 steps of 8 images
# (a few minutes; the ResNet's 400 x 32 would take over an hour), at a quarter of its
# peak rate (a ViT from scratch at batch 8)
CONFORMER_IMAGE_SIZE, CONFORMER_STEPS, CONFORMER_BATCH, CONFORMER_LR = 64, 80, 8, 5e-4


def conformer_network(depth: int = 12) -> Network:
    """The Conformer's pretraining; `depth` < 12 builds the small network of the tests (its
    name records the depth, so its file is never taken for a Conformer-S)."""
    name = "conformer_s" if depth == 12 else f"conformer_depth{depth}"
    # stochastic depth off: 400 steps under-fit, nothing to regularise
    return Network(name, "Conformer-S" if depth == 12 else f"Conformer (depth {depth})",
                   lambda: ConformerGroups(depth), CONFORMER_IMAGE_SIZE, DEFAULT_CONFORMER_PATH,
                   CONFORMER_STEPS, CONFORMER_BATCH, CONFORMER_LR)


CONFORMER_S = conformer_network()
NETWORKS = {n.name: n for n in (RESNET50, CONFORMER_S)}


def pretrain(steps: int | None = None, seed: int = 0, batch_size: int | None = None,
             log: Callable[[str], None] = print, network: Network = RESNET50
             ) -> tuple[dict[str, torch.Tensor], dict]:
    """Pretrain `network` (ResNet50(strides=(2,2,2,2), ordinary BN) by default) on the
    procedural categories at its image size. Returns (state_dict in the network's file format,
    summary dict). steps, batch_size: default the network's."""
    start = time.perf_counter()
    size = network.image_size
    steps = network.steps if steps is None else steps
    batch_size = network.batch_size if batch_size is None else batch_size

    def batches(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return synthetic_batch(rng, n, size)

    with all_cpu_threads():
        torch.manual_seed(seed)
        model = network.build()
        amp = native_bf16("cpu")
        loss = train(model, steps, np.random.default_rng([seed, 0]), batch_size, amp,
                     batches=batches, desc=f"pretrain {network.title}", lr=network.lr)
        model.to(memory_format=torch.contiguous_format)
        full = steps >= 50  # tiny test runs also keep BN re-estimation and evaluation tiny
        eval_batch = 64 if full else batch_size
        recompute_bn_stats(model, np.random.default_rng([seed, 1]),
                           batches=max(2, min(20, steps // 10)), batch_size=eval_batch,
                           make_batch=batches)
        n_eval = 512 if full else 2 * batch_size
        acc, per_group = evaluate(model, np.random.default_rng([seed, 2]), n_eval, eval_batch,
                                  size)
    summary = {"steps": steps, "seed": seed, "batch_size": batch_size, "image_size": size,
               "lr": network.lr, "bf16": amp, "network": network.name,
               "task": TASK, "groups": dict(zip(GROUP_NAMES, GROUPS)),
               "final_train_loss": round(loss, 4), "heldout_accuracy": round(acc, 4),
               "chance": round(1 / N_COMBINATIONS, 4),
               "heldout_accuracy_per_group": dict(zip(GROUP_NAMES, per_group)),
               "eval_samples": n_eval, "seconds": round(time.perf_counter() - start, 1)}
    log(f"synthetic pretraining of {network.title}: {steps} steps in {summary['seconds']} s, "
        f"final loss {loss:.3f}, held-out accuracy {acc:.2%} on {n_eval} fresh samples (glyph, "
        f"palette and texture right; chance {1 / N_COMBINATIONS:.2%}); per group "
        f"{' / '.join(GROUP_NAMES)} {' / '.join(f'{a:.1%}' for a in per_group)} "
        f"(chance {' / '.join(f'{1 / n:.1%}' for n in GROUPS)})")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, summary


def _summary_of(path: Path) -> dict:
    """The JSON sidecar of a cached backbone ({} when missing or unreadable)."""
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


def ensure_pretrained_backbone(path: str | Path | None = None, steps: int | None = None,
                               seed: int = 0, log: Callable[[str], None] = print,
                               force: bool = False, batch_size: int | None = None,
                               network: Network = RESNET50) -> Path:
    """Return `path` (default: the network's file under data/cache/), pretraining `network`
    and writing it first (atomically) if it is missing, made by another recipe (task, steps,
    image size, network), or `force`. A JSON summary (steps, accuracy, time) is written next
    to it as <stem>.json. steps, batch_size: default the network's."""
    path = Path(path if path is not None else network.default_path)
    steps = network.steps if steps is None else steps
    made = _summary_of(path)
    # a sidecar from before a key existed counts as this version's value of it
    recipe = {"task": TASK, "steps": steps, "image_size": network.image_size,
              "network": network.name}
    old = {k: made.get(k, v) for k, v in recipe.items()}
    if path.is_file() and not force and not made:
        log(f"{path} has no record of how it was pretrained ({path.with_suffix('.json').name} "
            f"is missing): used as given")
        return path
    if path.is_file() and not force and old == recipe:
        log(f"synthetic backbone present: {path}")
        return path
    if path.is_file() and not force:
        log(f"{path} was pretrained with {old}, this version uses {recipe}: pretraining again")
    log(f"pretraining a {network.title} on synthetic data ({steps} steps) -> {path}")
    state, summary = pretrain(steps, seed, batch_size, log=log, network=network)
    save_backbone(path, state, summary)
    return path


def ensure_pretrained_conformer(path: str | Path = DEFAULT_CONFORMER_PATH,
                                steps: int | None = None, **kwargs) -> Path:
    """`ensure_pretrained_backbone` for Conformer-S (the toy's --conformer_weights)."""
    return ensure_pretrained_backbone(path, steps, network=CONFORMER_S, **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", choices=tuple(NETWORKS), default=RESNET50.name)
    parser.add_argument("--out", help="default: data/cache/<network>_synthetic.pth")
    parser.add_argument("--steps", type=int, help="default: the network's (ResNet-50 400, "
                        f"Conformer-S {CONFORMER_STEPS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if the file exists")
    args = parser.parse_args(argv)
    ensure_pretrained_backbone(args.out, args.steps, args.seed, force=args.force,
                               network=NETWORKS[args.network])


if __name__ == "__main__":
    main()
