"""What every step needs from the flags: the dataset, the lists, the device, logging."""
from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path

import torch

from misc import dist
from voc12.dataloader import ClassLabels, VOCRoot, load_img_name_list


@lru_cache(maxsize=None)
def _labels(path: str) -> ClassLabels:
    return ClassLabels.from_csv(path)


def dataset(args: argparse.Namespace) -> tuple[VOCRoot, ClassLabels]:
    """The dataset root (checked) and its image-level labels."""
    return VOCRoot(Path(args.voc12_root)), _labels(str(args.cls_labels))


def id_list(path: str | Path) -> list[str]:
    return load_img_name_list(path)


def train_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of misc.train.train shared by train_cam, train_amn and train_irn:
    loader workers, seed, and the resumable state (every --checkpoint_every steps; a rerun
    continues from it unless --resume False or --overwrite True)."""
    return dict(num_workers=args.num_workers, seed=args.seed,
                checkpoint_every=args.checkpoint_every or 0,
                resume=args.resume and not args.overwrite)


def device(args: argparse.Namespace) -> torch.device:
    return dist.init_distributed(getattr(args, "device", "auto"))


class _Tee:
    """Writes to the terminal and to a log file (the reference's --log_name behaviour)."""

    def __init__(self, stream, path: Path):
        self.stream, self.file = stream, open(path, "a", buffering=1)

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def tee_stdout(path: str | Path) -> None:
    """Copy everything printed on the main process to `path` (appending)."""
    if dist.is_main() and not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout, Path(path))


def log(*msg) -> None:
    """Print on the main process only, flushed (stdout is often tee'd)."""
    if dist.is_main():
        print(*msg, flush=True)
