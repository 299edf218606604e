"""Export instance pseudo-labels to a COCO-format annotation file (docs/pipeline.md §3.12,
make_cocoann), e.g. result/instances_train_pseudo.json, for training an instance-segmentation
network on them.

Images get integer ids 1..n in the given order (their dataset id is kept as `name`); categories
have ids c + 1 for 0-based class c; each segment becomes one annotation with a compressed
RLE (pycocotools.mask.encode, counts as a str), its bbox [x, y, w, h], area, iscrowd 0 and score.
Semantic pseudo-masks can be exported as well: each class's 4-connected components become
segments of score 1 (`semantic_segments`).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils

from misc.io.atomic import atomic_path
from misc.irn.ins_seg import connected_components

VOID = 255


@dataclasses.dataclass
class CocoImage:
    """One image's segments. name: dataset id; file_name: e.g. '<id>.jpg'; labels: (H, W) int,
    0 none, i + 1 = segment i (disjoint); score: (N,) float; cls: (N,) 0-based classes."""

    name: str
    file_name: str
    labels: np.ndarray
    score: np.ndarray
    cls: np.ndarray


def semantic_segments(label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a semantic map (H, W) (0 background, c + 1 class c, 255 void = no segment) into its
    per-class 4-connected components: (labels (H, W) int64, score (N,) ones, cls (N,) int64),
    segments in raster order of their first pixel."""
    sem = np.asarray(label_map).astype(np.int64)
    values = torch.from_numpy(np.where(sem == VOID, 0, sem))
    comp = connected_components(values).numpy()
    fg = comp >= 0
    firsts, inverse = np.unique(comp[fg], return_inverse=True)
    labels = np.zeros(sem.shape, np.int64)
    labels[fg] = inverse + 1
    cls = sem.reshape(-1)[firsts] - 1
    return labels, np.ones(firsts.size, np.float32), cls.astype(np.int64)


def segment_annotations(labels: np.ndarray, score: np.ndarray, cls: np.ndarray, image_id: int,
                        first_id: int, min_score: float = 0.0) -> list[dict]:
    """COCO annotations (ids from first_id) of the segments of one image with score >=
    min_score. labels (H, W) int, 0 none, i + 1 segment i; score (N,); cls (N,) 0-based."""
    labels = np.asarray(labels)
    keep = [i for i in range(len(score)) if score[i] >= min_score]
    if not keep:
        return []
    masks = np.asfortranarray(
        (labels[..., None] == np.array(keep)[None, None] + 1).astype(np.uint8))
    rles = mask_utils.encode(masks)
    areas, boxes = mask_utils.area(rles), mask_utils.toBbox(rles)
    out = []
    for k, (i, rle) in enumerate(zip(keep, rles)):
        out.append({"id": first_id + k, "image_id": image_id, "category_id": int(cls[i]) + 1,
                    "segmentation": {"size": [int(s) for s in rle["size"]],
                                     "counts": rle["counts"].decode("ascii")},
                    "area": float(areas[k]), "bbox": [float(v) for v in boxes[k]],
                    "iscrowd": 0, "score": float(score[i])})
    return out


def coco_dataset(images: Iterable[CocoImage], class_names: Sequence[str],
                 min_score: float = 0.0) -> dict:
    """The COCO dict {'images', 'annotations', 'categories', 'info'} of `images`."""
    out = {"info": {"description": "instance pseudo-labels"}, "images": [], "annotations": [],
           "categories": [{"id": c + 1, "name": n, "supercategory": "object"}
                          for c, n in enumerate(class_names)]}
    for image_id, img in enumerate(images, start=1):
        h, w = np.asarray(img.labels).shape
        out["images"].append({"id": image_id, "file_name": img.file_name, "name": img.name,
                              "height": int(h), "width": int(w)})
        if len(img.cls) and (np.min(img.cls) < 0 or np.max(img.cls) >= len(class_names)):
            raise ValueError(f"image {img.name}: class outside [0, {len(class_names)})")
        out["annotations"] += segment_annotations(img.labels, img.score, img.cls, image_id,
                                                  len(out["annotations"]) + 1, min_score)
    return out


def export_coco(path: str | Path, images: Iterable[CocoImage], class_names: Sequence[str],
                min_score: float = 0.0) -> dict:
    """Write `coco_dataset(...)` as JSON to `path` (atomically); returns the dict."""
    data = coco_dataset(images, class_names, min_score)
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data))
    return data


def coco_results(dataset: dict) -> list[dict]:
    """The annotations of a COCO dict as a detection-results list (segmentation, score, ...)
    for pycocotools' loadRes / COCOeval."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"],
             "segmentation": a["segmentation"], "score": a.get("score", 1.0),
             "bbox": a["bbox"]} for a in dataset["annotations"]]
