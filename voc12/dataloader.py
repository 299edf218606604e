"""VOC-layout datasets (PASCAL VOC 2012, the embedded toy dataset, a lab's own images).

A root holds JPEGImages/<id>.jpg, SegmentationClass/<id>.png for evaluation and
ImageSets/Segmentation/<split>.txt. Image-level labels come from a plain CSV
(`image_id,<class names...>` then 0/1 rows), so the class count and names come from the dataset,
never from a hard-coded 20. Implements `misc.data.dataset.SegDataset`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from misc.data.dataset import ClassLabels, LabelledRoot, check_readable
from misc.errors import MissingInput
from misc.imutils import IGNORE

VOC12_DIR = Path(__file__).resolve().parent


class VOCDataset(LabelledRoot):
    """A dataset root in VOC layout with its image-level labels, checked up front."""

    name = "voc12"
    ignore_value = IGNORE

    def __init__(self, root: str | Path, cls_labels: str | Path | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingInput(f"dataset root {self.root} does not exist: pass --voc12_root "
                               f"pointing at VOCdevkit/VOC2012 (or leave it out to use the "
                               f"embedded toy dataset)")
        if not (self.root / "JPEGImages").is_dir():
            raise MissingInput(
                f"dataset root {self.root} has no JPEGImages folder: pass --voc12_root pointing "
                f"at VOCdevkit/VOC2012 (or leave it out to use the embedded toy dataset)")
        self._labels_path = Path(cls_labels) if cls_labels else default_cls_labels(self.root)

    def read_labels(self) -> ClassLabels:
        return ClassLabels.from_csv(self._labels_path)

    def image_path(self, img_id: str) -> Path:
        return self.root / "JPEGImages" / f"{img_id}.jpg"

    def gt_dir(self) -> Path:
        return self.root / "SegmentationClass"

    def split_list(self, split: str) -> Path:
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def instance_gt_dir(self) -> Path | None:
        """SegmentationObject/<id>.png (docs/pipeline.md §3.12), None if the root has none."""
        folder = self.root / "SegmentationObject"
        return folder if folder.is_dir() else None

    def check_images(self, ids: Sequence[str], list_name: str) -> None:
        missing = [i for i in ids if not self.image_path(i).is_file()]
        if missing:
            raise MissingInput(
                f"{len(missing)} images of {list_name} are missing from {self.root}/JPEGImages "
                f"(first: {missing[:3]}); fix the list or the dataset root")
        check_readable({i: self.image_path(i) for i in ids}, list_name)


def default_cls_labels(root: Path) -> Path:
    """A root may carry its own labels (the toy dataset does); else the VOC 2012 ones."""
    own = root / "cls_labels.csv"
    return own if own.is_file() else VOC12_DIR / "cls_labels.csv"
