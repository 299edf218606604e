"""The dataset interface every step reads through (docs/pipeline.md §1.3).

A dataset is a folder of images with image-level labels and, for evaluation, semantic ground
truth. voc12/ (VOC 2012 and any VOC-layout root, the toy dataset included) and coco14/ implement
`SegDataset`; steps get one from the factory in step/driver/context.py (`--dataset`), so nothing below
step/ knows which dataset it runs on.

Conventions shared by all datasets:
- ids are strings, kept as written in the list files (never parsed as ints);
- image-level labels are (C,) float32 multi-hot vectors over the C foreground classes;
- semantic ground truth is a PNG per id in `gt_dir`: 0 background, c + 1 for class c,
  `ignore_value` (255) for pixels not scored.
"""
from __future__ import annotations

import csv
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from misc.errors import BadInput, MissingInput, MissingLabels
from misc.imutils import image_problem


def load_img_name_list(path: str | Path) -> list[str]:
    """Ids of a list file, one per line (first column), kept as strings."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"list file {path} not found: pass an existing file "
                                f"(e.g. voc12/train_aug.txt)")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise BadInput(f"list file {path} is empty")
    return ids


@dataclass(frozen=True)
class ClassLabels:
    """Image-level labels: class names and a (C,) float32 multi-hot vector per image id, read
    from a plain CSV: a header `image_id,<class names...>` then one 0/1 row per image."""
    names: tuple[str, ...]
    by_id: dict

    @property
    def n_classes(self) -> int:
        return len(self.names)

    @classmethod
    def from_csv(cls, path: str | Path) -> "ClassLabels":
        path = Path(path)
        if not path.is_file():
            raise MissingInput(f"class-label file {path} not found: pass --cls_labels FILE "
                                    f"(a CSV `image_id,<class names>` with 0/1 rows)")
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or len(rows[0]) < 2:
            raise BadInput(f"{path}: expected a header `image_id,<class names...>`")
        names = tuple(rows[0][1:])
        by_id = {}
        for n, row in enumerate(rows[1:], start=2):
            if len(row) != len(names) + 1:
                raise BadInput(f"{path}, line {n}: {len(row) - 1} values for {len(names)} classes")
            by_id[row[0]] = np.array([float(v) for v in row[1:]], np.float32)
        return cls(names, by_id)

    def __getitem__(self, img_id: str) -> np.ndarray:
        return self.by_id[img_id]

    def check_ids(self, ids: Sequence[str], list_name: str) -> None:
        missing = [i for i in ids if i not in self.by_id]
        if missing:
            raise MissingLabels(f"{len(missing)} ids of {list_name} have no image-level label "
                           f"(first: {missing[:3]}); the list and the class-label file do not match")


class LabelledRoot(ABC):
    """What the dataset implementations share: image-level labels read on first use (so the
    root check stays instant) and the class count and names they give."""

    _labels: ClassLabels | None = None

    @abstractmethod
    def read_labels(self) -> ClassLabels:
        """Read the image-level labels of this root (each implementation knows its file)."""

    @property
    def labels(self) -> ClassLabels:
        if self._labels is None:
            self._labels = self.read_labels()
        return self._labels

    @property
    def n_classes(self) -> int:
        return self.labels.n_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.labels.names


class SegDataset(Protocol):
    """What the pipeline needs of a dataset."""

    name: str                       # "voc12", "coco14": tags outputs so datasets never mix
    labels: ClassLabels             # image-level labels and class names
    ignore_value: int               # GT value of unscored pixels (255)

    @property
    def n_classes(self) -> int: ...             # C, foreground classes

    @property
    def class_names(self) -> tuple[str, ...]: ...  # the C foreground names

    def image_path(self, img_id: str) -> Path: ...  # RGB (or greyscale/CMYK) JPEG

    def gt_dir(self) -> Path: ...                # <gt_dir>/<id>.png, semantic ground truth

    def split_list(self, split: str) -> Path: ...  # the id list of an evaluation split

    def check_images(self, ids: Sequence[str], list_name: str) -> None: ...  # raise if missing

    # optional: the folder of instance GT <id>.png (VOC SegmentationObject: 0 background, 1..N
    # objects, 255 void), None when the dataset has none (eval_ins_seg then skips)
    def instance_gt_dir(self) -> Path | None: ...


def check_ids(dataset: SegDataset, ids: Sequence[str], list_name: str) -> None:
    """Every id has an image and an image-level label, or a clear error naming the list."""
    dataset.check_images(ids, list_name)
    dataset.labels.check_ids(ids, list_name)


def check_readable(paths: dict[str, Path], list_name: str) -> None:
    """Every image of a list can be read (misc.imutils.image_problem: header and end marker),
    or one error naming the bad ones, so that the plan check stops a call before any step
    overwrites an output."""
    bad = {i: p for i, p in ((i, image_problem(path)) for i, path in paths.items()) if p}
    if bad:
        shown = "; ".join(f"{paths[i]}: {why}" for i, why in list(bad.items())[:3])
        raise BadInput(f"{len(bad)} images of {list_name} cannot be read ({shown}"
                         f"{'; ...' if len(bad) > 3 else ''}); replace them or remove their ids "
                         f"from the list")
