"""Deterministic generator of a second synthetic VOC-layout dataset: classes defined by a PART.

The embedded toy (data/toy_dataset.py) ties each class to a vivid class-specific colour and
pattern. Here the class cue is GEOMETRY only:

* every object is a BODY drawn from one shared pool (blob or box outline, any hue, a shared
  texture set), independent of the class;
* its class is given by a small PART on the body's rim whose SHAPE is class-specific (spike,
  cross, ring, three bars, star, twin dots, crescent, chevron; `PART_SHAPES`); the part's
  colour comes from a shared pool too (only contrasting with its body), and its size is
  `part_size` x the body area (the area of the disc the shape is drawn in, so the shape
  itself covers less);
* look-alike DISTRACTORS: `clutter` more bodies of the same pool per image, half bare and half
  carrying a near-miss part (disc, square, tripod, two bars, or a shape of a class beyond
  `n_classes`). They belong to no class: background in the ground truth.

The GT mask of an object is body plus part, as in VOC (a person's mask covers the whole person
although the face identifies it), so a classifier's CAM, firing on the part, is incomplete -
what AMN addresses - and distractor bodies punish CAMs that fire on bodies at all.

The files and formats are exactly data/toy_dataset.py's (JPEGImages, SegmentationClass and
SegmentationObject with the VOC palette and the ~2 px void band, ImageSets/Segmentation/
{train_aug,train,val}.txt, cls_labels.csv, class_names.txt) so VOCDataset and
`run_sample.py --voc12_root ROOT --profile toy` read it unchanged; a `.complete` marker holds
the generator name, version and config, so `ensure_parts_dataset` builds once and reuses.
Image ids are `parts_<n>`. With a root of its own, run_sample.py needs the root's lists and the
backbone named explicitly (--train_list/--val_list/--infer_list, --backbone_weights).

Measured (docs/toy.md §4): the toy profile's CAM classifier does not learn the part cue. Val
mAP 30.8 with the procedural backbone (23.6 with the older one), 43.6 with parts 0.35 of the
body, no distractors and 4 classes; the toy reaches 96 with the same recipe. Neither 5x longer
pretraining, 2x resolution nor 4x data lifts it; a CNN trained on these images from scratch
plateaus near 70. A shape benchmark that needs a backbone which already knows shapes.
Parts cover ~7 % of their object on average (5-10 %).

    python -m data.toy_parts --out DIR [--n_classes N --part_size F --clutter K --seed S]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from data.toy_dataset import (
    BODY_TEXTURES,
    add_void_band,
    blob_points,
    build_swapped_in,
    choose_classes,
    coords,
    hsv,
    object_map,
    polygon_mask,
    render_background,
    smooth_noise,
    texture,
    write_voc_layout,
)

GENERATOR = "toy_parts"
GENERATOR_VERSION = 1
MARKER = ".complete"
PART_SHAPES = ("spike", "cross", "ring", "bars", "star", "twin_dots", "crescent", "chevron")
NEAR_MISS_SHAPES = ("disc", "square", "tripod", "two_bars")


@dataclasses.dataclass(frozen=True)
class PartsConfig:
    """Sizes and knobs of the part-defined dataset; everything is deterministic given `seed`."""

    n_train_aug: int = 240
    n_train: int = 100                          # a subset of train_aug
    n_val: int = 80                             # disjoint from train_aug
    min_side: int = 96                          # image height and width drawn independently
    max_side: int = 128
    n_classes: int = 6
    seed: int = 0
    part_size: float = 0.15                     # area of the part's disc / body area
    clutter: int = 2                            # look-alike distractor bodies per image (tries)
    max_objects: int = 3
    p_two_classes: float = 0.4
    object_size: tuple[float, float] = (0.35, 0.6)  # body diameter / image short side
    p_near_miss: float = 0.5                    # share of distractors with a near-miss part

    def __post_init__(self) -> None:
        if not 1 <= self.n_classes <= len(PART_SHAPES):
            raise ValueError(f"n_classes must be in 1..{len(PART_SHAPES)}, got {self.n_classes}")
        if not 0 < self.part_size <= 0.5:
            raise ValueError(f"part_size must be in (0, 0.5], got {self.part_size}")
        if self.clutter < 0:
            raise ValueError(f"clutter must be >= 0, got {self.clutter}")
        if not 0 < self.n_train <= self.n_train_aug or self.n_val < 1:
            raise ValueError("need 0 < n_train <= n_train_aug and n_val >= 1")
        if not 48 <= self.min_side <= self.max_side:
            raise ValueError("need 48 <= min_side <= max_side")

    @classmethod
    def tiny(cls, seed: int = 0, **kw) -> "PartsConfig":
        """A few dozen small images with 3 classes, for tests."""
        return cls(**{**dict(n_train_aug=16, n_train=6, n_val=6, min_side=72, max_side=96,
                             n_classes=3, seed=seed), **kw})

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def class_names(n_classes: int) -> list[str]:
    """The part shape that defines each class."""
    return list(PART_SHAPES[:n_classes])


def near_miss_shapes(n_classes: int) -> tuple[str, ...]:
    """Parts that define no class: the near-miss set plus the shapes of unused classes."""
    return NEAR_MISS_SHAPES + PART_SHAPES[n_classes:]


# ------------------------------------------ part shapes ------------------------------------------

def _frame(h: int, w: int, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in the part's frame: u along `angle` (outward), v across."""
    yy, xx = coords(h, w)
    dx, dy = xx - cx, yy - cy
    c, s = np.cos(angle), np.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def _poly(h: int, w: int, cx: float, cy: float, angle: float, pts: list) -> np.ndarray:
    """Polygon given in the part's frame (u, v) -> image mask."""
    p = np.asarray(pts, np.float32)
    c, s = np.cos(angle), np.sin(angle)
    xy = np.stack([cx + p[:, 0] * c - p[:, 1] * s, cy + p[:, 0] * s + p[:, 1] * c], 1)
    return polygon_mask(h, w, xy)


def _star(n: int, r: float, inner: float) -> list:
    t = np.arange(2 * n) * np.pi / n
    rad = np.where(np.arange(2 * n) % 2 == 0, r, r * inner)
    return np.stack([rad * np.cos(t), rad * np.sin(t)], 1).tolist()


def _bars(u: np.ndarray, v: np.ndarray, r: float, n: int) -> np.ndarray:
    """`n` parallel bars across the outward direction, inside the disc of radius r."""
    width = 2 * r / (2 * n - 1)
    k = np.floor((u + r) / width)
    return (np.abs(v) <= 0.8 * r) & (np.abs(u) <= r) & (k % 2 == 0)


def _arms(u: np.ndarray, v: np.ndarray, r: float, n: int, half_width: float) -> np.ndarray:
    """`n` straight arms of length r from the centre, evenly spaced."""
    out = np.zeros(u.shape, bool)
    for k in range(n):
        a = 2 * np.pi * k / n
        along = u * np.cos(a) + v * np.sin(a)
        across = -u * np.sin(a) + v * np.cos(a)
        out |= (along >= -half_width) & (along <= r) & (np.abs(across) <= half_width)
    return out


def shape_mask(kind: str, h: int, w: int, cx: float, cy: float, r: float,
               angle: float) -> np.ndarray:
    """Boolean (h, w) mask of part `kind` inside the disc (cx, cy, r), oriented along `angle`."""
    u, v = _frame(h, w, cx, cy, angle)
    d = np.hypot(u, v)
    hw = max(0.2 * r, 1.2)  # stroke half-width: >= ~2.4 px so a stroke survives the JPEG
    masks: dict[str, Callable[[], np.ndarray]] = {
        "spike": lambda: _poly(h, w, cx, cy, angle, [(r, 0), (-0.6 * r, 0.7 * r),
                                                      (-0.6 * r, -0.7 * r)]),
        "cross": lambda: _arms(u, v, r, 4, hw),
        "ring": lambda: (d <= r) & (d >= 0.55 * r),
        "bars": lambda: _bars(u, v, r, 3),
        "star": lambda: _poly(h, w, cx, cy, angle, _star(5, r, 0.45)),
        "twin_dots": lambda: np.hypot(u, np.abs(v) - 0.55 * r) <= 0.42 * r,
        "crescent": lambda: (d <= r) & (np.hypot(u - 0.45 * r, v) > 0.75 * r),
        "chevron": lambda: _poly(h, w, cx, cy, angle, [(r, 0), (-0.5 * r, r), (-0.5 * r, 0.45 * r),
                                                        (0.35 * r, 0), (-0.5 * r, -0.45 * r),
                                                        (-0.5 * r, -r)]),
        "disc": lambda: d <= 0.8 * r,
        "square": lambda: (np.abs(u) <= 0.6 * r) & (np.abs(v) <= 0.6 * r),
        "tripod": lambda: _arms(u, v, r, 3, hw),
        "two_bars": lambda: _bars(u, v, r * 0.75, 2),
    }
    return masks[kind]() & (d <= r + 0.5)  # never beyond the disc: the size bound holds


# -------------------------------------------- objects --------------------------------------------

@dataclasses.dataclass
class Drawn:
    """One drawn thing: body and part masks, its class (-1 = distractor) and part shape."""

    body: np.ndarray
    part: np.ndarray
    cls: int
    shape: str | None

    @property
    def mask(self) -> np.ndarray:
        return self.body | self.part


def body_outline(rng: np.random.Generator, cx: float, cy: float, radius: float) -> np.ndarray:
    """A body from the shared pool: a deformed blob (toy helper) or a rotated box."""
    if rng.random() < 0.6:
        return blob_points(rng, cx, cy, radius)
    aspect, rot = rng.uniform(0.55, 0.9), rng.uniform(0, np.pi)
    x = np.array([1, -1, -1, 1]) * radius * 0.85
    y = np.array([1, 1, -1, -1]) * radius * 0.85 * aspect
    return np.stack([cx + x * np.cos(rot) - y * np.sin(rot),
                     cy + x * np.sin(rot) + y * np.cos(rot)], 1)


def place_body(rng: np.random.Generator, h: int, w: int, size: float, part_size: float,
               shape: str | None) -> Drawn:
    """Geometry of one body with (shape not None) a part on its rim, half sticking out."""
    radius = 0.5 * size * min(h, w)
    cx = rng.uniform(0.75 * radius, w - 0.75 * radius)
    cy = rng.uniform(0.75 * radius, h - 0.75 * radius)
    outline = body_outline(rng, cx, cy, radius)
    body = polygon_mask(h, w, outline)
    part = np.zeros_like(body)
    if shape is not None:
        r = np.sqrt(part_size * max(body.sum(), 1) / np.pi)
        rim = _rim_points(outline, 24)
        for i in rng.permutation(len(rim)):  # prefer a spot with the whole disc in the image
            px, py = rim[i]
            if r <= px <= w - 1 - r and r <= py <= h - 1 - r:
                break
        angle = np.arctan2(py - cy, px - cx) + rng.uniform(-0.3, 0.3)
        part = shape_mask(shape, h, w, px, py, r, angle)
    return Drawn(body, part, -1, shape)


def _rim_points(outline: np.ndarray, n: int) -> np.ndarray:
    """`n` points spread along a closed outline (a box has only 4 vertices)."""
    closed = np.vstack([outline, outline[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    at = np.linspace(0, seg.sum(), n, endpoint=False)
    cum = np.concatenate([[0], np.cumsum(seg)])
    x = np.interp(at, cum, closed[:, 0])
    y = np.interp(at, cum, closed[:, 1])
    return np.stack([x, y], 1)


def paint(img: np.ndarray, rng: np.random.Generator, thing: Drawn) -> None:
    """Body colour/texture and part colour from shared pools: nothing here depends on the class."""
    h, w = thing.body.shape
    value = rng.uniform(0.4, 0.8)
    colour = hsv(rng.uniform(), rng.uniform(0.25, 0.6), value)
    tex = texture(rng, BODY_TEXTURES[rng.integers(len(BODY_TEXTURES))], h, w, rng.uniform(5, 10))
    shade = 1 + 0.1 * smooth_noise(rng, h, w, 3)[..., 0]
    body_img = colour * (shade * (1 + 0.2 * tex))[..., None]
    img[thing.body] = body_img[thing.body]
    # the part contrasts with its body in brightness; its hue is free
    part_value = rng.uniform(0.05, 0.2) if value > 0.6 else rng.uniform(0.85, 1.0)
    img[thing.part] = hsv(rng.uniform(), rng.uniform(0.0, 0.9), part_value)


# --------------------------------------------- scenes ---------------------------------------------

def _fits(obj: np.ndarray, label: np.ndarray, parts: np.ndarray) -> bool:
    """An object may hide <= 15 % of itself under earlier objects, never an earlier part."""
    return not (obj & parts).any() and (obj & (label > 0)).sum() <= 0.15 * obj.sum()


def place_objects(rng: np.random.Generator, cfg: PartsConfig, img: np.ndarray) -> list[Drawn]:
    """Class objects (1..max_objects of 1-2 classes), painted into `img` in drawing order."""
    h, w = img.shape[:2]
    label, parts, drawn = np.zeros((h, w), np.uint8), np.zeros((h, w), bool), []
    classes = choose_classes(rng, cfg)
    lo, hi = cfg.object_size
    hi = max(lo, hi - 0.06 * (len(classes) - 1))  # several objects -> a bit smaller
    for cls in classes:
        for attempt in range(20):
            thing = place_body(rng, h, w, rng.uniform(lo, hi) * 0.97 ** attempt, cfg.part_size,
                               PART_SHAPES[cls])
            if _fits(thing.mask, label, parts):
                break
        else:
            continue  # no room: labels come from the final mask
        thing.cls = cls
        paint(img, rng, thing)
        label[thing.mask] = cls + 1
        parts |= thing.part
        drawn.append(thing)
    return drawn


def place_distractors(rng: np.random.Generator, cfg: PartsConfig, img: np.ndarray,
                      taken: np.ndarray) -> list[Drawn]:
    """`clutter` tries at look-alike bodies, bare or with a near-miss part, each kept 3 px clear
    of everything drawn before (so the ground truth stays unambiguous)."""
    h, w = img.shape[:2]
    lo, hi = cfg.object_size
    misses, drawn = near_miss_shapes(cfg.n_classes), []
    for _ in range(cfg.clutter):
        shape = str(rng.choice(misses)) if rng.random() < cfg.p_near_miss else None
        for attempt in range(10):
            thing = place_body(rng, h, w, rng.uniform(0.7 * lo, hi) * 0.93 ** attempt,
                               cfg.part_size, shape)
            if not (ndimage.binary_dilation(thing.mask, iterations=3) & taken).any():
                break
        else:
            continue
        paint(img, rng, thing)
        taken |= thing.mask
        drawn.append(thing)
    return drawn


def render_scene(rng: np.random.Generator,
                 cfg: PartsConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Drawn]]:
    """One image: uint8 RGB, class map and object map (void band included) and what was drawn
    (class objects first, then distractors; masks before the void band)."""
    h, w = (int(v) for v in rng.integers(cfg.min_side, cfg.max_side + 1, 2))
    img = render_background(rng, h, w, (2, 5))
    objects = place_objects(rng, cfg, img)
    label, drawn = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    for k, thing in enumerate(objects):
        label[thing.mask], drawn[thing.mask] = thing.cls + 1, k + 1
    distractors = place_distractors(rng, cfg, img, label > 0)
    img = img * (1 + 0.06 * smooth_noise(rng, h, w, 3))  # global lighting
    rgb = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    rgb = np.asarray(rgb.filter(ImageFilter.GaussianBlur(0.5)))
    label = add_void_band(label)
    return rgb, label, object_map(drawn, label), objects + distractors


# -------------------------------------------- writing --------------------------------------------

def image_ids(cfg: PartsConfig) -> dict[str, list[str]]:
    """train_aug, train (a seeded subset of train_aug) and val ids, each sorted."""
    ids = [f"parts_{i:06d}" for i in range(cfg.n_train_aug + cfg.n_val)]
    train_aug, val = ids[:cfg.n_train_aug], ids[cfg.n_train_aug:]
    pick = np.random.default_rng([cfg.seed, 1 << 30]).choice(cfg.n_train_aug, cfg.n_train,
                                                              replace=False)
    return {"train_aug": train_aug, "train": sorted(train_aug[i] for i in pick), "val": val}


def write_dataset(out: Path, cfg: PartsConfig) -> None:
    """Write every file into the (empty) folder `out`, the marker last."""
    write_voc_layout(out, class_names(cfg.n_classes), image_ids(cfg),
                     lambda i: render_scene(np.random.default_rng([cfg.seed, i]), cfg)[:3],
                     marker_text(cfg))


def marker_text(cfg: PartsConfig) -> str:
    return json.dumps({"generator": GENERATOR, "version": GENERATOR_VERSION,
                       "config": cfg.to_json()}, sort_keys=True)


def is_complete(root: Path, cfg: PartsConfig) -> bool:
    """True when `root` holds a finished build of exactly this config and generator version."""
    try:
        return (root / MARKER).read_text() == marker_text(cfg)
    except OSError:
        return False


def build_parts_dataset(root: str | Path, cfg: PartsConfig = PartsConfig()) -> Path:
    """(Re)build at `root`, atomically (data.toy_dataset.build_swapped_in). Refuses a folder
    holding anything but a dataset."""
    return build_swapped_in(root, lambda tmp: write_dataset(tmp, cfg),
                            lambda r: is_complete(r, cfg))


def ensure_parts_dataset(root: str | Path, cfg: PartsConfig = PartsConfig()) -> Path:
    """Return `root`, building the dataset first unless a complete build of `cfg` is there."""
    root = Path(root)
    if not is_complete(root, cfg):
        build_parts_dataset(root, cfg)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (VOC layout)")
    parser.add_argument("--n_classes", type=int, help=f"default {PartsConfig.n_classes}")
    parser.add_argument("--part_size", type=float,
                        help=f"area of a part's disc / body area, default {PartsConfig.part_size}")
    parser.add_argument("--clutter", type=int,
                        help=f"distractor bodies per image (tries), default {PartsConfig.clutter}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="the tiny test sizes")
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args(argv)
    base = PartsConfig.tiny() if args.tiny else PartsConfig()
    given = {k: getattr(args, k) for k in ("n_classes", "part_size", "clutter")
             if getattr(args, k) is not None}
    cfg = dataclasses.replace(base, seed=args.seed, **given)
    start = time.perf_counter()
    built = args.force or not is_complete(Path(args.out), cfg)
    if built:
        build_parts_dataset(args.out, cfg)
    print(f"parts dataset {'built' if built else 'already complete:'} {args.out} "
          f"({cfg.n_train_aug}/{cfg.n_train}/{cfg.n_val} train_aug/train/val, {cfg.n_classes} "
          f"classes, part_size {cfg.part_size}, clutter {cfg.clutter}) "
          f"in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
