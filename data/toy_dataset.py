"""Deterministic generator of the embedded toy dataset, written in PASCAL VOC layout.

Every object is a large BODY plus a small DISCRIMINATIVE PART (10-20 % of the object):

* the part has a class-specific vivid colour and pattern (e.g. red stripes for class 0);
* the body is drawn from a family shared by all classes: a deformed blob with a muted colour
  from a shared palette and a shared texture; only a weak bias (`body_class_bias`) ties the
  body colour to the class.

So an image classifier's CAM fires strongly on the part and weakly on the body, and a single
global threshold cannot segment all objects well - the problem AMN addresses. Bodies stay
separable from the background (greyish smooth noise with small flat grey distractors), so a
per-pixel network trained on confident seeds can learn to extend to bodies.

Layout under the root: JPEGImages/<id>.jpg, SegmentationClass/<id>.png (VOC palette; 0
background, c+1 class c, 255 a ~2 px void band on every object boundary),
SegmentationObject/<id>.png (VOC palette; 0 background, 1..N the visible objects in drawing order,
255 on the same void band; images often hold two or three objects of one class),
ImageSets/Segmentation/{train_aug,train,val}.txt, cls_labels.csv, class_names.txt and a
`.complete` marker holding the generator version and the config as JSON.

    python -m data.toy_dataset --root data/toy [--tiny] [--force]
"""
from __future__ import annotations

import argparse
import colorsys
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from misc.imutils import voc_palette

# ---- default sizes (tune here; the whole pipeline must run on a 2-core CPU in minutes) ----
N_TRAIN_AUG = 240
N_TRAIN = 100
N_VAL = 80
MIN_SIDE = 96
MAX_SIDE = 128
N_CLASSES = 6

GENERATOR_VERSION = 1
MARKER = ".complete"
JPEG_QUALITY = 95
VOID = 255

# class-specific parts: vivid hue x pattern, (name, hue in [0, 1))
PART_COLOURS = (("red", 0.0), ("green", 0.33), ("blue", 0.62), ("yellow", 0.15),
                ("magenta", 0.83), ("cyan", 0.5), ("orange", 0.07), ("violet", 0.74))
PART_PATTERNS = ("stripes", "solid", "checker", "rings", "dots", "bars")
# shared body family: muted hues and textures used by every class
BODY_HUES = (0.04, 0.12, 0.28, 0.45, 0.58, 0.9)
BODY_TEXTURES = ("plain", "stripes", "checker", "dots", "waves")


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Sizes and knobs of the toy dataset; everything is deterministic given `seed`."""

    n_train_aug: int = N_TRAIN_AUG
    n_train: int = N_TRAIN                      # a subset of train_aug
    n_val: int = N_VAL                          # disjoint from train_aug
    min_side: int = MIN_SIDE                    # image height and width drawn independently
    max_side: int = MAX_SIDE
    n_classes: int = N_CLASSES
    seed: int = 0
    max_objects: int = 3
    p_two_classes: float = 0.4
    object_size: tuple[float, float] = (0.3, 0.65)   # body diameter / image short side
    part_fraction: tuple[float, float] = (0.1, 0.2)  # part area / body area
    body_class_bias: float = 0.3                # P(body hue = the class's preferred hue)
    n_distractors: tuple[int, int] = (3, 9)

    def __post_init__(self) -> None:
        if not 1 <= self.n_classes <= len(PART_COLOURS):
            raise ValueError(f"n_classes must be in 1..{len(PART_COLOURS)}, got {self.n_classes}")
        if not 0 < self.n_train <= self.n_train_aug or self.n_val < 1:
            raise ValueError("need 0 < n_train <= n_train_aug and n_val >= 1")
        if not 16 <= self.min_side <= self.max_side:
            raise ValueError("need 16 <= min_side <= max_side")

    @classmethod
    def tiny(cls, seed: int = 0) -> "ToyConfig":
        """A few dozen small images with 3 classes, for tests (generation well under 1 s)."""
        return cls(n_train_aug=24, n_train=8, n_val=8, min_side=56, max_side=72, n_classes=3,
                   seed=seed)

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def class_names(n_classes: int) -> list[str]:
    """Names describing each class's discriminative part, e.g. 'red_stripes'."""
    return [f"{PART_COLOURS[c][0]}_{PART_PATTERNS[c % len(PART_PATTERNS)]}"
            for c in range(n_classes)]


# ------------------------------------ drawing primitives ------------------------------------

def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int,
                 channels: int = 1) -> np.ndarray:
    """Low-frequency noise in about [-1, 1], (h, w, channels) float32, bicubic-upsampled."""
    out = np.empty((h, w, channels), np.float32)
    for ch in range(channels):
        grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
        out[..., ch] = np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.BICUBIC))
    return out


def coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


def polygon_mask(h: int, w: int, points: np.ndarray) -> np.ndarray:
    """Boolean (h, w) mask of a filled polygon given as (N, 2) x, y points."""
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in points.round(2).tolist()], fill=1)
    return np.asarray(img, bool)


def blob_points(rng: np.random.Generator, cx: float, cy: float, radius: float,
                n: int = 64) -> np.ndarray:
    """Outline of a deformed ellipse: random aspect, rotation and low radial harmonics."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4):
        r += rng.uniform(0, 0.12 / (k - 1)) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    aspect, rot = rng.uniform(0.65, 1.0), rng.uniform(0, np.pi)
    x, y = r * np.cos(t), r * np.sin(t) * aspect
    xr, yr = x * np.cos(rot) - y * np.sin(rot), x * np.sin(rot) + y * np.cos(rot)
    return np.stack([cx + radius * xr, cy + radius * yr], axis=1)


def texture(rng: np.random.Generator, kind: str, h: int, w: int, scale: float) -> np.ndarray:
    """A zero-mean pattern in [-1, 1] of the given kind, (h, w) float32; `scale` ~ period px."""
    yy, xx = coords(h, w)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    f = 2 * np.pi / scale
    if kind == "stripes":
        return np.sign(np.sin(f * u + rng.uniform(0, 6.3))).astype(np.float32)
    if kind == "checker":
        return np.sign(np.sin(f * u) * np.sin(f * v) + 1e-6).astype(np.float32)
    if kind == "dots":
        return np.where(np.sin(f * u) * np.sin(f * v) > 0.55, 1.0, -0.3).astype(np.float32)
    if kind == "waves":
        return np.sin(f * u + 2.0 * np.sin(0.5 * f * v)).astype(np.float32)
    if kind == "plain":
        return smooth_noise(rng, h, w, 6)[..., 0]
    raise ValueError(f"unknown texture {kind}")


def part_pattern(kind: str, h: int, w: int, cx: float, cy: float, r: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Class-specific part pattern in {0, 1} (1 = vivid colour, 0 = dark second colour)."""
    if kind == "solid":
        return np.ones((h, w), np.float32)
    if kind == "rings":
        yy, xx = coords(h, w)
        d = np.hypot(xx - cx, yy - cy)
        return (np.sin(2 * np.pi * d / max(r * 0.7, 3.0)) > -0.3).astype(np.float32)
    period = max(r * 0.8, 4.0)
    if kind == "bars":  # thick bars across a wide centre band
        return (texture(rng, "stripes", h, w, period * 1.6) > 0).astype(np.float32)
    if kind == "dots":
        return (texture(rng, "dots", h, w, period) <= 0).astype(np.float32)
    return (texture(rng, kind, h, w, period) > 0).astype(np.float32)


# ------------------------------------- scene composition -------------------------------------

def render_background(rng: np.random.Generator, h: int, w: int,
                      n_distractors: tuple[int, int]) -> np.ndarray:
    """Greyish smooth noise with small flat low-saturation distractor shapes and lines."""
    base = hsv(rng.uniform(), rng.uniform(0.0, 0.15), rng.uniform(0.35, 0.7))
    img = base + 0.12 * smooth_noise(rng, h, w, 4, 1) + 0.05 * smooth_noise(rng, h, w, 8, 3)
    side = min(h, w)
    for _ in range(rng.integers(n_distractors[0], n_distractors[1] + 1)):
        colour = hsv(rng.uniform(), rng.uniform(0.0, 0.2), rng.uniform(0.2, 0.85))
        if rng.random() < 0.5:  # a line
            mask = Image.new("L", (w, h), 0)
            p = rng.uniform(0, 1, 4) * [w, h, w, h]
            ImageDraw.Draw(mask).line(p.tolist(), fill=1, width=int(rng.integers(1, 4)))
            mask = np.asarray(mask, bool)
        else:  # a small rotated rectangle or triangle
            r = rng.uniform(0.04, 0.1) * side
            n = int(rng.choice([3, 4]))
            t = rng.uniform(0, 2 * np.pi) + np.arange(n) * 2 * np.pi / n
            c = rng.uniform(0, 1, 2) * [w, h]
            mask = polygon_mask(h, w, np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], 1))
        img[mask] = colour
    return img


def place_object(rng: np.random.Generator, h: int, w: int, size: float,
                 part_fraction: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Draw geometry for one object: (body mask, part mask, (part cx, cy, r))."""
    radius = 0.5 * size * min(h, w)
    cx = rng.uniform(0.7 * radius, w - 0.7 * radius)
    cy = rng.uniform(0.7 * radius, h - 0.7 * radius)
    outline = blob_points(rng, cx, cy, radius)
    body = polygon_mask(h, w, outline)
    r_part = np.sqrt(rng.uniform(*part_fraction) * max(body.sum(), 1) / np.pi)
    # the part sits on the body's rim (half inside), preferring a spot inside the image
    order = rng.permutation(len(outline))
    for i in order:
        px, py = outline[i] + (np.array([cx, cy]) - outline[i]) * (0.5 * r_part / radius)
        if r_part <= px <= w - r_part and r_part <= py <= h - r_part:
            break
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    part = polygon_mask(h, w, np.stack([px + r_part * np.cos(t), py + r_part * np.sin(t)], 1))
    return body, part, (px, py, r_part)


def paint_object(img: np.ndarray, rng: np.random.Generator, cls: int, cfg: ToyConfig,
                 body: np.ndarray, part: np.ndarray, part_geom: tuple) -> None:
    """Paint a shared-family body and the class's vivid patterned part into `img`."""
    h, w = body.shape
    hue = BODY_HUES[cls % len(BODY_HUES)] if rng.random() < cfg.body_class_bias \
        else BODY_HUES[rng.integers(len(BODY_HUES))]
    colour = hsv(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.35, 0.55), rng.uniform(0.5, 0.8))
    kind = BODY_TEXTURES[rng.integers(len(BODY_TEXTURES))]
    tex = texture(rng, kind, h, w, rng.uniform(5, 10))
    shade = 1 + 0.1 * smooth_noise(rng, h, w, 3)[..., 0]
    body_img = colour * (shade * (1 + 0.2 * tex))[..., None]
    img[body] = body_img[body]
    vivid = hsv(PART_COLOURS[cls][1], 0.95, 1.0)
    dark = hsv(PART_COLOURS[cls][1], 0.6, 0.12)
    pat = part_pattern(PART_PATTERNS[cls % len(PART_PATTERNS)], h, w, *part_geom, rng)
    part_img = dark + pat[..., None] * (vivid - dark)
    img[part] = part_img[part]


def choose_classes(rng: np.random.Generator, cfg: ToyConfig) -> list[int]:
    """Classes of the objects of one image: 1 or 2 distinct classes, 1..max_objects objects."""
    n_cls = 2 if cfg.n_classes > 1 and rng.random() < cfg.p_two_classes else 1
    classes = [int(c) for c in rng.choice(cfg.n_classes, n_cls, replace=False)]
    n_obj = int(rng.integers(n_cls, max(cfg.max_objects, n_cls) + 1))
    return classes + [int(rng.choice(classes)) for _ in range(n_obj - n_cls)]


def render_image(rng: np.random.Generator, cfg: ToyConfig) -> tuple[np.ndarray, np.ndarray]:
    """One image: uint8 (H, W, 3) RGB and uint8 (H, W) label map with the void band."""
    rgb, label, _ = render_image_with_objects(rng, cfg)
    return rgb, label


def render_image_with_objects(rng: np.random.Generator,
                              cfg: ToyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`render_image` plus the uint8 (H, W) object map (VOC SegmentationObject). The object
    ids are bookkeeping of the drawing loop: no extra random numbers, same image and labels."""
    h, w = (int(v) for v in rng.integers(cfg.min_side, cfg.max_side + 1, 2))
    img = render_background(rng, h, w, cfg.n_distractors)
    label = np.zeros((h, w), np.uint8)
    drawn = np.zeros((h, w), np.uint8)  # k + 1 = the object drawn k-th, later ones on top
    parts = np.zeros((h, w), bool)
    objects = choose_classes(rng, cfg)
    lo, hi = cfg.object_size
    hi = max(lo, hi - 0.06 * (len(objects) - 1))  # several objects -> a bit smaller
    for k, cls in enumerate(objects):
        for attempt in range(20):
            body, part, geom = place_object(rng, h, w, rng.uniform(lo, hi) * 0.97 ** attempt,
                                            cfg.part_fraction)
            obj = body | part
            overlap = (obj & (label > 0)).sum()
            if not (obj & parts).any() and overlap <= 0.15 * obj.sum():
                break
        else:
            continue  # no room: skip this object (labels come from the final mask)
        paint_object(img, rng, cls, cfg, body, part, geom)
        label[obj] = cls + 1
        drawn[obj] = k + 1
        parts |= part
    img = img * (1 + 0.06 * smooth_noise(rng, h, w, 3))  # global lighting
    rgb = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    rgb = np.asarray(rgb.filter(ImageFilter.GaussianBlur(0.6)))
    label = add_void_band(label)
    return rgb, label, object_map(drawn, label)


def object_map(drawn: np.ndarray, label: np.ndarray) -> np.ndarray:
    """VOC-style object map: drawing-order ids of the objects left visible outside the void
    band of `label`, renumbered 1..N; 0 background, VOID where `label` is VOID."""
    visible = np.where(label == VOID, 0, drawn)
    ids = np.unique(visible[visible > 0])
    lut = np.zeros(256, np.uint8)
    lut[ids] = np.arange(1, ids.size + 1)
    return np.where(label == VOID, VOID, lut[visible]).astype(np.uint8)


def add_void_band(label: np.ndarray) -> np.ndarray:
    """Mark pixels whose 3x3 neighbourhood holds two labels as VOID (a ~2 px band, like VOC)."""
    edge = ndimage.maximum_filter(label, 3, mode="nearest") != \
        ndimage.minimum_filter(label, 3, mode="nearest")
    return np.where(edge, VOID, label).astype(np.uint8)


def present_classes(label: np.ndarray, n_classes: int) -> np.ndarray:
    """0/1 vector of the classes present in a label map (ignoring background and void)."""
    values = np.unique(label)
    return np.array([int(c + 1 in values) for c in range(n_classes)], np.int64)


# ------------------------------------------- writing -------------------------------------------

def image_ids(cfg: ToyConfig) -> dict[str, list[str]]:
    """train_aug, train (a seeded subset of train_aug) and val ids, each sorted."""
    ids = [f"toy_{i:06d}" for i in range(cfg.n_train_aug + cfg.n_val)]
    train_aug, val = ids[:cfg.n_train_aug], ids[cfg.n_train_aug:]
    pick = np.random.default_rng([cfg.seed, 1 << 30]).choice(cfg.n_train_aug, cfg.n_train,
                                                              replace=False)
    return {"train_aug": train_aug, "train": sorted(train_aug[i] for i in pick), "val": val}


# render(i) -> (uint8 RGB (H, W, 3), class map (H, W), object map (H, W)) of the i-th image
Render = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def write_voc_layout(out: Path, names: list[str], lists: dict[str, list[str]], render: Render,
                     marker: str) -> None:
    """Write a synthetic dataset in VOC layout into the (empty) folder `out`, the marker last:
    JPEGs, palette PNGs of the class and object maps, the lists, cls_labels.csv and
    class_names.txt. Image i of train_aug + val is `render(i)`. Shared by both generators."""
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject",
                "ImageSets/Segmentation"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    rows = [",".join(["image_id", *names])]
    for i, iid in enumerate(lists["train_aug"] + lists["val"]):
        rgb, label, objects = render(i)
        Image.fromarray(rgb).save(out / "JPEGImages" / f"{iid}.jpg", quality=JPEG_QUALITY)
        for folder, arr in (("SegmentationClass", label), ("SegmentationObject", objects)):
            png = Image.fromarray(arr, "P")
            png.putpalette(palette)
            png.save(out / folder / f"{iid}.png")
        rows.append(",".join([iid, *map(str, present_classes(label, len(names)))]))
    for name, ids in lists.items():
        (out / "ImageSets/Segmentation" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    (out / "cls_labels.csv").write_text("\n".join(rows) + "\n")
    (out / "class_names.txt").write_text("\n".join(names) + "\n")
    (out / MARKER).write_text(marker)


def write_dataset(out: Path, cfg: ToyConfig) -> None:
    """Write every file of the dataset into the (empty) folder `out`, the marker last."""
    write_voc_layout(out, class_names(cfg.n_classes), image_ids(cfg),
                     lambda i: render_image_with_objects(np.random.default_rng([cfg.seed, i]), cfg),
                     marker_text(cfg))


def marker_text(cfg: ToyConfig) -> str:
    return json.dumps({"version": GENERATOR_VERSION, "config": cfg.to_json()}, sort_keys=True)


def is_complete(root: Path, cfg: ToyConfig) -> bool:
    """True when `root` holds a finished build of exactly this config and generator version.
    Builds made before the object maps existed (same marker, no SegmentationObject) are not:
    rebuilding them adds the object maps and leaves every other file byte-identical."""
    try:
        return (root / MARKER).read_text() == marker_text(cfg) \
            and (root / "SegmentationObject").is_dir()
    except OSError:
        return False


_OWN_ENTRIES = {"JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets",
                "cls_labels.csv", "class_names.txt", MARKER}


def _check_replaceable(root: Path) -> None:
    """Refuse to delete a folder that is not (an older build of) the toy dataset."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"toy dataset root {root} is a file")
    foreign = sorted(p.name for p in root.iterdir() if p.name not in _OWN_ENTRIES) \
        if root.is_dir() else []
    if foreign:
        raise FileExistsError(f"toy dataset root {root} holds other files ({foreign[:5]}); "
                              f"pick an empty or new folder so nothing of yours is deleted")


def build_swapped_in(root: str | Path, write: Callable[[Path], None],
                     complete: Callable[[Path], bool]) -> Path:
    """(Re)build a dataset folder: `write(tmp)` into a temporary sibling, then swap it in for
    `root`, so a killed build never leaves a half dataset (shared by the synthetic generators).
    Refuses a folder holding anything but a dataset; keeps a build a concurrent call finished
    first (`complete(root)`). Returns `root`."""
    root = Path(root)
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.build-", dir=root.parent))
    try:
        write(tmp)
        if complete(root):  # a concurrent build finished the same dataset first
            shutil.rmtree(tmp)
            return root
        old = None
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            root.rename(old / "data")
        tmp.rename(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def build_toy_dataset(root: str | Path, config: ToyConfig = ToyConfig()) -> Path:
    """(Re)build the dataset at `root` (atomically: `build_swapped_in`). Returns `root`."""
    return build_swapped_in(root, lambda tmp: write_dataset(tmp, config),
                            lambda r: is_complete(r, config))


def ensure_toy_dataset(root: str | Path, config: ToyConfig = ToyConfig()) -> Path:
    """Return `root`, building the dataset first unless a complete build of `config` is there."""
    root = Path(root)
    if not is_complete(root, config):
        build_toy_dataset(root, config)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="output folder (VOC layout)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test configuration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(ToyConfig.tiny() if args.tiny else ToyConfig(), seed=args.seed)
    start = time.perf_counter()
    if args.force or not is_complete(Path(args.root), cfg):
        build_toy_dataset(args.root, cfg)
        what = "built"
    else:
        what = "already complete:"
    print(f"toy dataset {what} {args.root} ({cfg.n_train_aug} train_aug / {cfg.n_train} train / "
          f"{cfg.n_val} val, {cfg.n_classes} classes) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
