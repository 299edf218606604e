"""The CAM / AMN map files (`<id>.npz`): 16-bit quantised, delta-coded, deflated."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from misc.errors import BadInput, MissingInput
from misc.io.atomic import atomic_path

# Map files hold values in [0, 1] quantised to 16 bits (step 1/65535: every threshold decision
# and argmax of the reference's float32 maps is kept but for values within 8e-6 of a tie) and
# stored as second differences along both axes (the maps are bilinear upsamplings: piecewise
# linear, so these are mostly 0) split into low and high byte planes, deflated. 14% (CAM) and
# 21% (AMN) of the float32 bytes on the toy (docs/pipeline.md §2.8).
_LEVELS = 65535


def _encode(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, H, W) float in [0, 1] -> low and high byte planes (K, H, W) uint8."""
    q = np.rint(np.clip(maps, 0.0, 1.0) * _LEVELS).astype(np.int64)
    for axis in (-1, -1, -2, -2):
        q = np.diff(q, axis=axis, prepend=0)
    u = (q % 65536).astype(np.uint16)
    return (u & 255).astype(np.uint8), (u >> 8).astype(np.uint8)


def _decode(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Inverse of `_encode`: (K, H, W) float32 multiples of 1/65535."""
    q = lo.astype(np.int64) | (hi.astype(np.int64) << 8)
    for axis in (-2, -2, -1, -1):
        q = np.cumsum(q, axis=axis) % 65536
    return (q / _LEVELS).astype(np.float32)


def save_maps(path: str | Path, keys: np.ndarray, cam: np.ndarray, high_res: np.ndarray,
              label: np.ndarray | None = None) -> None:
    """Write a CAM/AMN map file (.npz, compressed 16-bit: see `_encode`).

    keys: (K,) int64, present foreground classes, 0-based.
    cam: (K', h4, w4) stride-4 maps; high_res: (K', H, W) full-size maps, both in [0, 1]
    (K' = K for CAMs, K+1 with the background channel first for AMN and BAO maps).
    label: optional (H, W) or (L, H, W) uint8 hard labels made with the maps before
    quantisation (make_bao's argmax, docs/bao.md §4.2; make_amn_cam's two threshold-free
    labels, §5.1), stored exactly.
    """
    arrays = {"keys": np.asarray(keys, np.int64)}
    if label is not None:
        arrays["label"] = np.asarray(label, np.uint8)
    for name, maps in (("cam", cam), ("high_res", high_res)):
        arrays[f"{name}_lo"], arrays[f"{name}_hi"] = _encode(np.asarray(maps, np.float32))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def load_maps(path: str | Path) -> dict[str, np.ndarray]:
    """Read a map file written by `save_maps`: {"keys", "cam", "high_res"} (float32), and
    "label" when it was saved with one; a clear error if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"map file {path} not found: run the step that makes it first "
                                f"(make_cam for result/cam, make_amn_cam for result/amn_cam)")
    try:
        with np.load(path, allow_pickle=False) as data:
            maps = {"keys": data["keys"], "cam": _decode(data["cam_lo"], data["cam_hi"]),
                    "high_res": _decode(data["high_res_lo"], data["high_res_hi"])}
            if "label" in data.files:
                maps["label"] = data["label"]
            return maps
    except Exception as err:
        raise BadInput(f"corrupt map file {path} ({err}); delete it and rerun the step "
                         f"that makes it") from err
