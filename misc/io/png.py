"""Label PNGs (uint8 index maps, optionally with a palette)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from misc.errors import BadInput, MissingInput
from misc.io.atomic import atomic_path


def save_png(path: str | Path, label: np.ndarray, palette: list[int] | None = None) -> None:
    """Write a uint8 label map (H, W) as a PNG (a palette PNG when `palette` is given)."""
    img = Image.fromarray(np.asarray(label, np.uint8))
    if palette is not None:
        img = img.convert("P")
        img.putpalette(palette)
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")


def load_png(path: str | Path) -> np.ndarray:
    """Read a label PNG as uint8 (H, W) indices (palette PNGs give their indices)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"label file {path} not found")
    try:
        with Image.open(path) as img:
            return np.asarray(img, dtype=np.uint8)
    except Exception as err:
        raise BadInput(f"corrupt label file {path} ({err}); delete it and rerun the step "
                         f"that makes it") from err
