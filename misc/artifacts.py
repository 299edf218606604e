"""Reading and writing the artifacts between steps, atomically and without pickle.

Every writer goes through `atomic_path`: the data is written to a temporary name in the target
folder and renamed, so a killed run never leaves a half-written file and a rerun can trust that
any file present is complete.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
from PIL import Image


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`.

    `suffix` keeps the extension that writers such as PIL or np.savez look at.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give outputs the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:  # a full disk lands here: say which file, keep what exists
        tmp.unlink(missing_ok=True)
        raise OSError(f"could not write {path}: {err}; earlier outputs are intact") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folders: list[str | Path]) -> int:
    """Delete the temporary files a killed run left in `folders` (`atomic_path` names them
    .<name>.<random>.tmp); returns how many. Call it before any writer starts."""
    removed = 0
    for folder in {Path(f) for f in folders}:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


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


def save_maps(path: str | Path, keys: np.ndarray, cam: np.ndarray, high_res: np.ndarray) -> None:
    """Write a CAM/AMN map file (.npz, compressed 16-bit: see `_encode`).

    keys: (K,) int64, present foreground classes, 0-based.
    cam: (K', h4, w4) stride-4 maps; high_res: (K', H, W) full-size maps, both in [0, 1]
    (K' = K for CAMs, K+1 with the background channel first for AMN maps).
    """
    arrays = {"keys": np.asarray(keys, np.int64)}
    for name, maps in (("cam", cam), ("high_res", high_res)):
        arrays[f"{name}_lo"], arrays[f"{name}_hi"] = _encode(np.asarray(maps, np.float32))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def load_maps(path: str | Path) -> dict[str, np.ndarray]:
    """Read a map file written by `save_maps` (or a float32 one with `cam`/`high_res` arrays,
    as earlier versions wrote): {"keys", "cam", "high_res"}; a clear error if it is missing or
    corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"map file {path} not found: run the step that makes it first "
                                f"(make_cam for result/cam, make_amn_cam for result/amn_cam)")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "high_res" in data.files:
                return {k: data[k] for k in ("keys", "cam", "high_res")}
            return {"keys": data["keys"], "cam": _decode(data["cam_lo"], data["cam_hi"]),
                    "high_res": _decode(data["high_res_lo"], data["high_res_hi"])}
    except Exception as err:
        raise ValueError(f"corrupt map file {path} ({err}); delete it and rerun the step "
                         f"that makes it") from err


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
        raise FileNotFoundError(f"label file {path} not found")
    try:
        with Image.open(path) as img:
            return np.asarray(img, dtype=np.uint8)
    except Exception as err:
        raise ValueError(f"corrupt label file {path} ({err}); delete it and rerun the step "
                         f"that makes it") from err


def save_checkpoint(path: str | Path, state_dict: Mapping[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        torch.save(dict(state_dict), tmp)


def load_checkpoint(model: torch.nn.Module, path: str | Path, made_by: str,
                    ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load a state_dict strictly; errors name the file, the step that makes it and the keys.
    `ignore_prefixes` names keys a reference checkpoint may carry that the model does not need
    (e.g. IRN's loss buffers); they are dropped by name, everything else must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found: run {made_by} first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read checkpoint {path} ({err}); rerun {made_by}") from err
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    bad_shape = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                 for k in sorted(own.keys() & state.keys()) if own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"checkpoint {path} does not fit {type(model).__module__}.{type(model).__name__}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches "
            f"{bad_shape[:5]} (another network or class count?). Rerun {made_by} or pass the "
            f"right weights file.")
    model.load_state_dict(state)


def append_metrics(path: str | Path, record: Mapping) -> None:
    """Append one JSON line (with a timestamp) to result/metrics.jsonl."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"time": datetime.datetime.now().isoformat(timespec="seconds"), **record}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


DATASET_TAG = ".dataset"


def claim_folders(folders: Mapping[str, str | Path], dataset: str) -> None:
    """Tag each existing output folder with the dataset it holds, after checking that none
    already holds another dataset's outputs (VOC and COCO artifacts never mix). `folders` maps
    the flag that names each folder to the folder, for the error message. Checks every folder
    before writing any tag; creates none (call it again once the steps made theirs)."""
    for flag, folder in folders.items():
        tag = Path(folder) / DATASET_TAG
        if tag.is_file() and tag.read_text().strip() != dataset:
            raise ValueError(f"{folder} holds {tag.read_text().strip()} outputs and this run is "
                             f"--dataset {dataset}: pass another {flag} (or delete the folder)")
    for folder in folders.values():
        tag = Path(folder) / DATASET_TAG
        if Path(folder).is_dir() and not tag.is_file():
            with atomic_path(tag) as tmp:
                tmp.write_text(dataset + "\n")
