"""The toy dataset's SegmentationObject maps (data/toy_dataset.py), and the existing files of the
tiny build unchanged by them."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from data.toy_dataset import VOID, ToyConfig, ensure_toy_dataset, is_complete
from misc.eval.ins_eval import load_gt_instances

# decoded PNG pixels, lists, labels and marker of ToyConfig.tiny() as built before the object
# maps were added (JPEGs left out: their bytes depend on the JPEG library)
TINY_DIGEST = "681321067585bffea41b66e189fea04a82b88570a874f8b61ab74702f5990167"


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if not p.is_file() or rel.startswith(("JPEGImages", "SegmentationObject")):
            continue
        h.update(rel.encode())
        h.update(np.asarray(Image.open(p)).tobytes() if p.suffix == ".png" else p.read_bytes())
    return h.hexdigest()


def test_existing_files_unchanged(tiny_toy: Path) -> None:
    assert digest(tiny_toy) == TINY_DIGEST


def test_object_maps(tiny_toy: Path) -> None:
    ids = sorted(p.stem for p in (tiny_toy / "SegmentationClass").glob("*.png"))
    multi = 0
    for iid in ids:
        obj_png = Image.open(tiny_toy / "SegmentationObject" / f"{iid}.png")
        obj, cls = np.asarray(obj_png), np.asarray(Image.open(tiny_toy / "SegmentationClass" /
                                                             f"{iid}.png"))
        assert obj_png.mode == "P" and obj_png.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
        assert np.array_equal(obj == VOID, cls == VOID) and np.array_equal(obj == 0, cls == 0)
        ids_present = np.unique(obj[(obj != 0) & (obj != VOID)])
        assert ids_present.tolist() == list(range(1, ids_present.size + 1))
        for i in ids_present:  # one class per object
            assert np.unique(cls[obj == i]).size == 1
        gt = load_gt_instances(tiny_toy / "SegmentationObject" / f"{iid}.png",
                               tiny_toy / "SegmentationClass" / f"{iid}.png")
        multi += int(np.bincount(gt.cls).max() >= 2)
    assert multi >= 5  # several images hold 2-3 objects of one class


def test_old_build_without_object_maps_is_completed(tmp_path: Path, tiny_toy: Path) -> None:
    root = tmp_path / "toy"
    shutil.copytree(tiny_toy, root)
    shutil.rmtree(root / "SegmentationObject")
    assert not is_complete(root, ToyConfig.tiny())
    ensure_toy_dataset(root, ToyConfig.tiny())
    assert is_complete(root, ToyConfig.tiny())
    for p in tiny_toy.rglob("*"):
        if p.is_file():
            assert (root / p.relative_to(tiny_toy)).read_bytes() == p.read_bytes()
