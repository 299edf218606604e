"""The embedded toy dataset in MS COCO 2014 layout, so the COCO branch of the pipeline runs
end to end without COCO (`python run_sample.py --dataset coco14`).

Made from the VOC-layout toy dataset (data/toy_dataset.py): train_aug images become
train2014/COCO_train2014_<12-digit id>.jpg, val images val2014/...; every object of
SegmentationObject becomes an instance annotation (RLE) of annotations/instances_*2014.json.
As in COCO, there are 80 categories with ids 1..90 and gaps: the toy's classes take the first
category ids, the other categories exist but never occur. A few train images keep their pixels
but lose their annotations (COCO has such images; the pipeline treats them as all background).
coco14.prepare then writes cls_labels.csv and the semantic PNGs, as for the real dataset.
Lists of the root's own ids go to <root>/train14.txt and val14.txt.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from misc.io.atomic import atomic_path
from misc.io.png import load_png

# COCO 2014's category ids: 1..90 without these ten
MISSING_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in MISSING_IDS)
UNANNOTATED_EVERY = 40  # train images 1, 41, 81, ... lose their annotations
MARKER = ".complete"
VERSION = 1


def coco_id(index: int) -> str:
    return f"{index + 1:012d}"


def category_names(toy_names: list[str]) -> list[str]:
    return toy_names + [f"unused_{i:02d}" for i in range(len(toy_names), len(CATEGORY_IDS))]


def instances(obj: np.ndarray, cls: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(class index 0-based, mask) of every object id of an object map; its class is the most
    frequent class label under it (the void band excluded)."""
    out = []
    for k in sorted(set(np.unique(obj).tolist()) - {0, 255}):
        mask = obj == k
        values = cls[mask]
        values = values[(values != 0) & (values != 255)]
        if values.size:
            out.append((int(np.bincount(values).argmax()) - 1, mask))
    return out


def annotation(ann_id: int, image_id: int, category: int, mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    area, box = float(mask_utils.area(rle)), mask_utils.toBbox(rle).tolist()
    rle["counts"] = rle["counts"].decode("ascii")
    return {"id": ann_id, "image_id": image_id, "category_id": category, "segmentation": rle,
            "area": area, "bbox": box, "iscrowd": 0}


def convert_split(voc_root: Path, out: Path, split: str, ids: list[str], first: int,
                  names: list[str]) -> list[str]:
    """Copy the images of one split and write its instances JSON; returns the COCO ids."""
    (out / f"{split}2014").mkdir(parents=True, exist_ok=True)
    images, anns, new_ids = [], [], []
    for k, toy_id in enumerate(ids):
        cid = coco_id(first + k)
        file_name = f"COCO_{split}2014_{cid}.jpg"
        shutil.copyfile(voc_root / "JPEGImages" / f"{toy_id}.jpg", out / f"{split}2014" / file_name)
        obj = load_png(voc_root / "SegmentationObject" / f"{toy_id}.png")
        cls = load_png(voc_root / "SegmentationClass" / f"{toy_id}.png")
        images.append({"id": int(cid), "file_name": file_name, "height": int(obj.shape[0]),
                       "width": int(obj.shape[1])})
        new_ids.append(cid)
        if split == "train" and k % UNANNOTATED_EVERY == 1:
            continue
        for c, mask in instances(obj, cls):
            anns.append(annotation(len(anns) + 1 + 100000 * (split == "val"), int(cid),
                                   CATEGORY_IDS[c], mask))
    cats = [{"id": i, "name": n, "supercategory": "toy"} for i, n in zip(CATEGORY_IDS, names)]
    (out / "annotations").mkdir(exist_ok=True)
    with atomic_path(out / "annotations" / f"instances_{split}2014.json") as tmp:
        tmp.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return new_ids


def build_toy_coco(voc_root: str | Path, root: str | Path) -> Path:
    """Write the COCO-layout toy dataset at `root` from the VOC-layout one; returns `root`.
    Built once: a finished root (its marker names the source) is kept."""
    voc_root, root = Path(voc_root), Path(root)
    marker = json.dumps({"version": VERSION, "source": (voc_root / ".complete").read_text()})
    if (root / MARKER).is_file() and (root / MARKER).read_text() == marker:
        return root
    lists = voc_root / "ImageSets" / "Segmentation"
    train = lists.joinpath("train_aug.txt").read_text().split()
    val = lists.joinpath("val.txt").read_text().split()
    names = category_names((voc_root / "class_names.txt").read_text().split())
    root.mkdir(parents=True, exist_ok=True)
    train_ids = convert_split(voc_root, root, "train", train, 0, names)
    val_ids = convert_split(voc_root, root, "val", val, len(train), names)
    for name, ids in (("train14", train_ids), ("val14", val_ids)):
        (root / f"{name}.txt").write_text("\n".join(ids) + "\n")
    (root / MARKER).write_text(marker)
    return root

