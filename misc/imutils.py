"""Image operations of the reference pipeline (PIL bicubic / nearest, crops, normalisation).

Images are uint8 or float32 HWC RGB numpy arrays; label maps are uint8 (H, W). Random
operations take a `numpy.random.Generator` so that a data worker's stream is reproducible.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from misc.errors import BadInput, MissingInput

IGNORE = 255  # label value of void / unsure pixels
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@contextlib.contextmanager
def _open_image(path: str | Path, decode: bool = True) -> Iterator[Image.Image]:
    """PIL's Image.open with errors that name the file and the fix; `decode` reads the pixels
    now, so that a truncated file fails here (the header alone is enough for the size)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"image {path} not found: check the dataset root and the list file")
    try:
        with Image.open(path) as img:
            if decode:
                img.load()
            yield img
    except OSError as err:  # PIL's UnidentifiedImageError and truncation errors are OSErrors
        raise BadInput(f"cannot decode image {path} ({err}): the file is corrupt; "
                         f"replace it or remove its id from the list") from err


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) RGB (greyscale is replicated to 3 channels)."""
    with _open_image(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file, from its header."""
    with _open_image(path, decode=False) as img:
        return img.size[1], img.size[0]


# how the last bytes of a complete file of each format read; a file cut short lacks them
END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
TAIL_BYTES = 4096  # some writers append a little data after the end marker


def image_problem(path: str | Path) -> str | None:
    """Why the image file cannot be read (missing, not an image, a header PIL rejects, cut
    short: no end marker in its last bytes), or None. Cheap: the header and the file's tail,
    no decoding of the pixels."""
    try:
        with Image.open(path) as img:
            kind, (w, h) = img.format, img.size
        marker = END_MARKERS.get(kind)
        if marker is not None:
            with open(path, "rb") as f:
                f.seek(max(0, Path(path).stat().st_size - TAIL_BYTES))
                if marker not in f.read():
                    return f"a {kind} file cut short (no end marker)"
    except FileNotFoundError:
        return "missing"
    except OSError as err:  # PIL's UnidentifiedImageError is an OSError
        return f"not a readable image ({err})"
    return None if w > 0 and h > 0 else f"an image of size {w}x{h}"


def pil_resize(img: np.ndarray, size: tuple[int, int], order: int) -> np.ndarray:
    """Resize to `size` = (H, W) with PIL: order 3 bicubic (uint8 images), 0 nearest (labels)."""
    if img.shape[:2] == tuple(size):
        return img
    resample = Image.BICUBIC if order == 3 else Image.NEAREST
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), resample))


def pil_rescale(img: np.ndarray, scale: float, order: int) -> np.ndarray:
    """Rescale by `scale` to (round(H*scale), round(W*scale))."""
    h, w = img.shape[:2]
    return pil_resize(img, (int(round(h * scale)), int(round(w * scale))), order)


def random_resize_long(img: np.ndarray, min_long: int, max_long: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Bicubic resize so that the long side is uniform in {min_long..max_long} (inclusive)."""
    target = int(rng.integers(min_long, max_long + 1))
    return pil_rescale(img, target / max(img.shape[:2]), 3)


def random_scale(img: np.ndarray, label: np.ndarray | None, scale_range: tuple[float, float],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Rescale image (bicubic) and label (nearest) by one s ~ U[lo, hi)."""
    s = scale_range[0] + rng.random() * (scale_range[1] - scale_range[0])
    return pil_rescale(img, s, 3), None if label is None else pil_rescale(label, s, 0)


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's RGB -> L


def _rotate_hue(img: np.ndarray, shift: float) -> np.ndarray:
    """Float RGB (H, W, 3) in [0, 255] with every pixel's hue turned by `shift` (a fraction of
    the colour circle); value and saturation are kept (HSV, computed in place of PIL's)."""
    rgb = img / 255.0
    v = rgb.max(axis=-1)
    delta = v - rgb.min(axis=-1)
    s = np.divide(delta, v, out=np.zeros_like(v), where=v > 0)
    safe = np.where(delta > 0, delta, 1.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = np.where(delta > 0, h / 6.0, 0.0)
    h = (h + shift) % 1.0
    sector = np.floor(h * 6.0)
    f = h * 6.0 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = sector.astype(np.int64) % 6
    table = np.stack([np.stack(c, axis=-1) for c in
                      ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    out = np.take_along_axis(table, sector[None, ..., None].repeat(3, -1), axis=0)[0]
    return out * 255.0


def color_jitter(img: np.ndarray, brightness: float, contrast: float, saturation: float,
                 hue: float, rng: np.random.Generator) -> np.ndarray:
    """Random colour jitter of a uint8 RGB image, the four adjustments of torchvision's
    ColorJitter(brightness, contrast, saturation, hue) in a random order, each factor drawn
    uniformly: brightness, contrast and saturation f in [max(0, 1 - x), 1 + x], blending the
    image with black, with its mean grey level and with its grey image (f = 1: unchanged);
    hue a turn of the colour circle in [-hue, hue]. Computed in float, clipped to [0, 255]
    after each adjustment and rounded once at the end (PIL rounds after each). A strength of
    0 skips its adjustment."""
    out = img.astype(np.float64)
    factor = lambda x: float(rng.uniform(max(0.0, 1.0 - x), 1.0 + x))
    grey = lambda x: x @ np.asarray(LUMA)
    for op in rng.permutation(4):
        if op == 0 and brightness > 0:
            out = out * factor(brightness)
        elif op == 1 and contrast > 0:
            f = factor(contrast)
            out = f * out + (1 - f) * grey(out).mean()
        elif op == 2 and saturation > 0:
            f = factor(saturation)
            out = f * out + (1 - f) * grey(out)[..., None]
        elif op == 3 and hue > 0:
            out = _rotate_hue(out, float(rng.uniform(-hue, hue)))
        out = np.clip(out, 0.0, 255.0)
    return np.rint(out).astype(np.uint8)


def normalize(img: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (H, W, 3), (x/255 - mean)/std computed in float64."""
    out = (img.astype(np.float64) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return out.astype(np.float32)


def random_lr_flip(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Flip every array left-right together with probability 0.5."""
    if rng.random() < 0.5:
        return [np.ascontiguousarray(a[:, ::-1]) for a in arrays]
    return arrays


def crop_box(size_hw: tuple[int, int], crop: int, rng: np.random.Generator | None):
    """Offsets for a crop of side `crop` per axis: a random window when the image is larger,
    a random placement inside the crop canvas when it is smaller (top-left when rng is None).
    Returns (src_y, src_x, dst_y, dst_x, h, w)."""
    offs = []
    for n in size_hw:
        extra = abs(n - crop)
        off = 0 if rng is None or extra == 0 else int(rng.integers(0, extra + 1))
        offs.append((off, 0) if n > crop else (0, off))  # (src, dst)
    (sy, dy), (sx, dx) = offs
    return sy, sx, dy, dx, min(crop, size_hw[0]), min(crop, size_hw[1])


def crop_arrays(arrays: list[np.ndarray], fills: list[float], crop: int,
                rng: np.random.Generator | None) -> list[np.ndarray]:
    """Jointly crop / pad every array to (crop, crop, ...) with the same box; `fills` per array
    (0 for normalised images = mean colour, 255 for labels). rng None = top-left crop."""
    sy, sx, dy, dx, h, w = crop_box(arrays[0].shape[:2], crop, rng)
    out = []
    for a, fill in zip(arrays, fills):
        canvas = np.full((crop, crop) + a.shape[2:], fill, dtype=a.dtype)
        canvas[dy:dy + h, dx:dx + w] = a[sy:sy + h, sx:sx + w]
        out.append(canvas)
    return out


def hwc_to_chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1))


@functools.lru_cache(maxsize=1)
def _voc_palette() -> tuple[int, ...]:
    palette = []
    for i in range(256):
        rgb, c = [0, 0, 0], i
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - bit)
            c >>= 3
        palette += rgb
    return tuple(palette)


def voc_palette() -> list[int]:
    """The standard PASCAL VOC colour palette (768 ints; index 255 is (224, 224, 192)),
    computed once (every palette PNG needs it)."""
    return list(_voc_palette())
