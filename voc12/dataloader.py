"""Data layer for any dataset in VOC layout (PASCAL VOC 2012 or the embedded toy dataset).

A root holds JPEGImages/<id>.jpg and, for evaluation, SegmentationClass/<id>.png. Image-level
labels come from a plain-text CSV (`image_id,<class names...>` then 0/1 rows), so the class count
and names come from the dataset, never from a hard-coded 20.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from misc import imutils
from misc.artifacts import load_png

VOC12_DIR = Path(__file__).resolve().parent


def load_img_name_list(path: str | Path) -> list[str]:
    """Ids of a list file, one per line, kept as strings (no int parsing, see spec Q14)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file {path} not found: pass an existing file "
                                f"(e.g. voc12/train_aug.txt)")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"list file {path} is empty")
    return ids


@dataclass(frozen=True)
class ClassLabels:
    """Image-level labels: class names and a (C,) float32 multi-hot vector per image id."""
    names: tuple[str, ...]
    by_id: dict

    @property
    def n_classes(self) -> int:
        return len(self.names)

    @classmethod
    def from_csv(cls, path: str | Path) -> "ClassLabels":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"class-label file {path} not found: pass --cls_labels FILE "
                                    f"(a CSV `image_id,<class names>` with 0/1 rows)")
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or len(rows[0]) < 2:
            raise ValueError(f"{path}: expected a header `image_id,<class names...>`")
        names = tuple(rows[0][1:])
        by_id = {}
        for n, row in enumerate(rows[1:], start=2):
            if len(row) != len(names) + 1:
                raise ValueError(f"{path}, line {n}: {len(row) - 1} values for {len(names)} classes")
            by_id[row[0]] = np.array([float(v) for v in row[1:]], np.float32)
        return cls(names, by_id)

    def __getitem__(self, img_id: str) -> np.ndarray:
        return self.by_id[img_id]

    def check_ids(self, ids: list[str], list_name: str) -> None:
        missing = [i for i in ids if i not in self.by_id]
        if missing:
            raise KeyError(f"{len(missing)} ids of {list_name} have no image-level label "
                           f"(first: {missing[:3]}); the list and the class-label file do not match")


@dataclass(frozen=True)
class VOCRoot:
    """A dataset root in VOC layout, with path helpers and up-front checks."""
    root: Path

    def __post_init__(self):
        if not (self.root / "JPEGImages").is_dir():
            raise FileNotFoundError(
                f"dataset root {self.root} has no JPEGImages folder: pass --voc12_root pointing "
                f"at VOCdevkit/VOC2012 (or leave it out to use the embedded toy dataset)")

    def image_path(self, img_id: str) -> Path:
        return self.root / "JPEGImages" / f"{img_id}.jpg"

    def gt_dir(self) -> Path:
        return self.root / "SegmentationClass"

    def check_images(self, ids: list[str], list_name: str) -> None:
        missing = [i for i in ids if not self.image_path(i).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images of {list_name} are missing from {self.root}/JPEGImages "
                f"(first: {missing[:3]}); fix the list or the dataset root")


class _IdDataset(Dataset):
    """Ids checked against the root and the labels; per-sample RNG keyed by (seed, epoch, index)
    so that augmentations do not depend on the number of workers or processes."""

    def __init__(self, ids: list[str], root: VOCRoot, labels: ClassLabels, list_name: str,
                 seed: int = 0):
        root.check_images(ids, list_name)
        labels.check_ids(ids, list_name)
        self.ids, self.root, self.labels, self.seed, self.epoch = ids, root, labels, seed, 0

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def image(self, index: int) -> np.ndarray:
        return imutils.read_image(self.root.image_path(self.ids[index]))


class ClassificationDataset(_IdDataset):
    """train_cam samples: resize_long -> normalise -> flip -> crop.

    Returns dict(name, img float32 (3, crop, crop) normalised, label float32 (C,) multi-hot).
    `crop_method` "random" (training) or "top_left" (validation, no resize, no flip)."""

    def __init__(self, ids, root, labels, list_name, crop_size: int,
                 resize_long: tuple[int, int] | None = (320, 640), hor_flip: bool = True,
                 crop_method: str = "random", seed: int = 0):
        super().__init__(ids, root, labels, list_name, seed)
        self.crop_size, self.resize_long = crop_size, resize_long
        self.hor_flip, self.crop_method = hor_flip, crop_method

    def __getitem__(self, index: int) -> dict:
        rng = self.rng(index)
        img = self.image(index)
        if self.resize_long:
            img = imutils.random_resize_long(img, *self.resize_long, rng)
        img = imutils.normalize(img)
        if self.hor_flip:
            (img,) = imutils.random_lr_flip([img], rng)
        (img,) = imutils.crop_arrays([img], [0.0], self.crop_size,
                                     rng if self.crop_method == "random" else None)
        return {"name": self.ids[index], "img": torch.from_numpy(imutils.hwc_to_chw(img)),
                "label": torch.from_numpy(self.labels[self.ids[index]])}


class SegmentationDataset(_IdDataset):
    """train_amn / train_irn samples: rescale -> normalise -> flip -> crop, image and label jointly.

    Returns dict(name, img float32 (3, crop, crop), label uint8 (crop, crop) in {0..C, 255}
    (255 outside the image), label_cls float32 (C,))."""

    def __init__(self, ids, root, labels, list_name, label_dir: str | Path, crop_size: int,
                 rescale: tuple[float, float] | None = (0.5, 1.5), hor_flip: bool = True,
                 crop_method: str = "random", seed: int = 0):
        super().__init__(ids, root, labels, list_name, seed)
        self.label_dir, self.crop_size, self.rescale = Path(label_dir), crop_size, rescale
        self.hor_flip, self.crop_method = hor_flip, crop_method

    def __getitem__(self, index: int) -> dict:
        rng, name = self.rng(index), self.ids[index]
        img, label = self.image(index), load_png(self.label_dir / f"{name}.png")
        if self.rescale:
            img, label = imutils.random_scale(img, label, self.rescale, rng)
        img = imutils.normalize(img)
        if self.hor_flip:
            img, label = imutils.random_lr_flip([img, label], rng)
        img, label = imutils.crop_arrays([img, label], [0.0, 255], self.crop_size,
                                         rng if self.crop_method == "random" else None)
        return {"name": name, "img": torch.from_numpy(imutils.hwc_to_chw(img)),
                "label": torch.from_numpy(label), "label_cls": torch.from_numpy(self.labels[name])}


class MultiScaleDataset(_IdDataset):
    """Inference samples: the image at every scale (PIL bicubic), normalised, no flip.

    Returns dict(name, size (H, W), label (C,), imgs: list over scales of float32 (3, h_s, w_s))."""

    def __init__(self, ids, root, labels, list_name, scales: tuple[float, ...]):
        super().__init__(ids, root, labels, list_name)
        self.scales = scales

    def image_size(self, index: int) -> tuple[int, int]:
        return imutils.image_size(self.root.image_path(self.ids[index]))

    def __getitem__(self, index: int) -> dict:
        img = self.image(index)
        views = [imutils.hwc_to_chw(imutils.normalize(imutils.pil_rescale(img, s, 3)))
                 for s in self.scales]
        return {"name": self.ids[index], "size": img.shape[:2],
                "label": torch.from_numpy(self.labels[self.ids[index]]),
                "imgs": [torch.from_numpy(v) for v in views]}


class SegTrainDataset(SegmentationDataset):
    """deeplab-pytorch's augmentation on (image, label PNG) pairs.

    Returns dict(name, img float32 (3, crop, crop) ImageNet-normalised RGB, label uint8
    (crop, crop) in {0..n_classes-1, 255}). Per-sample randomness is keyed by (seed, epoch, index).
    """

    def __init__(self, ids, root, labels, list_name, label_dir: str | Path, crop_size: int,
                 scales: tuple[float, ...], n_classes: int, seed: int = 0):
        super().__init__(ids, root, labels, list_name, label_dir, crop_size, rescale=None,
                         seed=seed)
        self.scales, self.n_classes = tuple(scales), n_classes

    def __getitem__(self, index: int) -> dict:
        rng, name = self.rng(index), self.ids[index]
        img, label = self.image(index), load_png(self.label_dir / f"{name}.png")
        if img.shape[:2] != label.shape:
            raise ValueError(f"label {self.label_dir / name}.png is {label.shape}, its image "
                             f"{img.shape[:2]}: labels must have the image's size")
        bad = (label != imutils.IGNORE) & (label >= self.n_classes)
        if bad.any():
            raise ValueError(f"label {self.label_dir / name}.png holds values "
                             f"{np.unique(label[bad])[:5].tolist()} >= {self.n_classes} classes")
        s = self.scales[int(rng.integers(len(self.scales)))]
        h, w = int(img.shape[0] * s), int(img.shape[1] * s)
        x = torch.from_numpy(imutils.hwc_to_chw(imutils.normalize(img)))[None]
        x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False)[0]  # cv2 INTER_LINEAR
        x = x.permute(1, 2, 0).numpy()
        label = imutils.pil_resize(label, (h, w), 0)
        pad_h, pad_w = max(self.crop_size - h, 0), max(self.crop_size - w, 0)
        x = np.pad(x, ((0, pad_h), (0, pad_w), (0, 0)))  # 0 = the mean colour after normalising
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=imutils.IGNORE)
        x, label = imutils.crop_arrays([x, label], [0.0, imutils.IGNORE], self.crop_size, rng)
        x, label = imutils.random_lr_flip([x, label], rng)
        return {"name": name, "img": torch.from_numpy(imutils.hwc_to_chw(x)),
                "label": torch.from_numpy(np.ascontiguousarray(label))}
