"""Tests of the embedded toy dataset generator (data/toy_dataset.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from data.toy_dataset import (
    MARKER,
    VOID,
    ToyConfig,
    build_toy_dataset,
    class_names,
    ensure_toy_dataset,
)
from misc.imutils import voc_palette

TINY = ToyConfig.tiny()


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", TINY)


def read_list(root: Path, name: str) -> list[str]:
    return (root / "ImageSets/Segmentation" / f"{name}.txt").read_text().split()


def read_labels(root: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    header, *rows = (root / "cls_labels.csv").read_text().splitlines()
    return header.split(","), {r.split(",")[0]: np.array(r.split(",")[1:], int) for r in rows}


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_deterministic(toy_root: Path, tmp_path: Path) -> None:
    again = build_toy_dataset(tmp_path / "again", TINY)
    assert all_files(again) == all_files(toy_root)
    other = build_toy_dataset(tmp_path / "other", dataclasses.replace(TINY, seed=1))
    assert all_files(other) != all_files(toy_root)


def test_layout_and_lists(toy_root: Path) -> None:
    train_aug, train, val = (read_list(toy_root, n) for n in ("train_aug", "train", "val"))
    assert (len(train_aug), len(train), len(val)) == (TINY.n_train_aug, TINY.n_train, TINY.n_val)
    for ids in (train_aug, train, val):
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert set(train) <= set(train_aug) and not set(val) & set(train_aug)
    header, labels = read_labels(toy_root)
    names = (toy_root / "class_names.txt").read_text().split()
    assert header == ["image_id", *names] and names == class_names(TINY.n_classes)
    assert set(labels) == set(train_aug) | set(val)
    for iid in labels:
        img = Image.open(toy_root / "JPEGImages" / f"{iid}.jpg")
        png = Image.open(toy_root / "SegmentationClass" / f"{iid}.png")
        assert img.mode == "RGB" and png.mode == "P" and img.size == png.size
        assert png.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
        assert TINY.min_side <= min(img.size) and max(img.size) <= TINY.max_side


def test_labels_match_masks_and_void_band(toy_root: Path) -> None:
    _, labels = read_labels(toy_root)
    sizes = set()
    for iid, row in labels.items():
        mask = np.asarray(Image.open(toy_root / "SegmentationClass" / f"{iid}.png"))
        sizes.add(mask.shape)
        values = set(np.unique(mask).tolist())
        assert values <= {0, VOID, *range(1, TINY.n_classes + 1)}
        present = {v - 1 for v in values - {0, VOID}}
        assert present == set(np.flatnonzero(row).tolist()) and 1 <= len(present) <= 2
        # every object pixel next to background is void: objects are wrapped in a 255 band
        fg = (mask > 0) & (mask != VOID)
        assert not (fg & ndimage.binary_dilation(mask == 0)).any()
        assert ((mask == VOID) & ndimage.binary_dilation(fg)).any()
    assert len(sizes) > 1 and any(h != w for h, w in sizes)


def test_voc_palette() -> None:
    pal = voc_palette()
    assert len(pal) == 768 and pal[3:6] == [128, 0, 0] and pal[-3:] == [224, 224, 192]


def test_ensure_marker_and_rebuild(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    ensure_toy_dataset(root, TINY)
    jpg = root / "JPEGImages" / "toy_000000.jpg"
    stamp = jpg.stat().st_mtime_ns
    ensure_toy_dataset(root, TINY)  # complete: nothing rewritten
    assert jpg.stat().st_mtime_ns == stamp
    (root / MARKER).unlink()  # an unfinished/unknown build is rebuilt
    ensure_toy_dataset(root, TINY)
    assert (root / MARKER).is_file() and jpg.stat().st_mtime_ns != stamp
    bigger = dataclasses.replace(TINY, n_val=10)  # another config is rebuilt
    ensure_toy_dataset(root, bigger)
    assert len(read_list(root, "val")) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]  # no temp folders left


def test_refuses_to_delete_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        ensure_toy_dataset(tmp_path, TINY)
    assert (tmp_path / "mine.txt").read_text() == "precious"
