"""The samples of each step (PyTorch Datasets) over any `misc.data.dataset.SegDataset`.

Every sample draws its randomness from a generator keyed by (seed, epoch, index), so the
augmentations do not depend on the number of loader workers or processes (resumable, and equal
under torchrun).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from misc import imutils
from misc.data.dataset import SegDataset, check_ids
from misc.errors import BadInput
from misc.io.png import load_png


class _IdDataset(Dataset):
    """Ids checked against the root and the labels; per-sample RNG keyed by (seed, epoch, index)
    so that augmentations do not depend on the number of workers or processes."""

    def __init__(self, ids: list[str], dataset: SegDataset, list_name: str, seed: int = 0):
        check_ids(dataset, ids, list_name)
        self.ids, self.dataset, self.labels = ids, dataset, dataset.labels
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def image(self, index: int) -> np.ndarray:
        return imutils.read_image(self.dataset.image_path(self.ids[index]))


class ClassificationDataset(_IdDataset):
    """train_cam / train_transcam / train_bao_amn samples: resize_long or rescale (when given)
    -> colour jitter (when given) -> normalise -> flip -> crop.

    Returns dict(name, img float32 (3, crop, crop) normalised, label float32 (C,) multi-hot).
    `crop_method` "random" (training) or "top_left" (validation, no resize, no flip).
    `color_jitter`: (brightness, contrast, saturation, hue) strengths of
    `misc.imutils.color_jitter`, or None. `rescale`: (lo, hi) of train_amn's random rescale,
    applied after resize_long (pass resize_long None for AMN's augmentation)."""

    def __init__(self, ids, dataset, list_name, crop_size: int,
                 resize_long: tuple[int, int] | None = (320, 640), hor_flip: bool = True,
                 crop_method: str = "random", seed: int = 0,
                 color_jitter: tuple[float, float, float, float] | None = None,
                 rescale: tuple[float, float] | None = None):
        super().__init__(ids, dataset, list_name, seed)
        self.rescale = rescale
        self.crop_size, self.resize_long = crop_size, resize_long
        self.hor_flip, self.crop_method = hor_flip, crop_method
        self.color_jitter = color_jitter

    def __getitem__(self, index: int) -> dict:
        rng = self.rng(index)
        img = self.image(index)
        if self.resize_long:
            img = imutils.random_resize_long(img, *self.resize_long, rng)
        if self.rescale:
            img, _ = imutils.random_scale(img, None, self.rescale, rng)
        if self.color_jitter:
            img = imutils.color_jitter(img, *self.color_jitter, rng)
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

    def __init__(self, ids, dataset, list_name, label_dir: str | Path, crop_size: int,
                 rescale: tuple[float, float] | None = (0.5, 1.5), hor_flip: bool = True,
                 crop_method: str = "random", seed: int = 0):
        super().__init__(ids, dataset, list_name, seed)
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

    def __init__(self, ids, dataset, list_name, scales: tuple[float, ...]):
        super().__init__(ids, dataset, list_name)
        self.scales = scales

    def image_size(self, index: int) -> tuple[int, int]:
        return imutils.image_size(self.dataset.image_path(self.ids[index]))

    def views_size(self, index: int) -> tuple[int, ...]:
        """What decides the views' shapes: images with equal values have views of equal shapes
        at every scale (here the image size)."""
        return self.image_size(index)

    def view(self, img: np.ndarray, scale) -> np.ndarray:
        """The uint8 view of the image at one scale."""
        return imutils.pil_rescale(img, scale, 3)

    def __getitem__(self, index: int) -> dict:
        img = self.image(index)
        views = [imutils.hwc_to_chw(imutils.normalize(self.view(img, s))) for s in self.scales]
        return {"name": self.ids[index], "size": img.shape[:2],
                "label": torch.from_numpy(self.labels[self.ids[index]]),
                "imgs": [torch.from_numpy(v) for v in views]}


class SquareViewsDataset(MultiScaleDataset):
    """make_transcam's samples: the whole image resized (PIL bicubic) to side x side for every
    side of `sides`, as TransCAM's inference (aspect-distorting: docs/quirks.md). With
    `square=False` the long side is resized to `side` and the short one to the multiple of
    `multiple` nearest its proportional length (the aspect kept up to that rounding).

    Returns what MultiScaleDataset returns, the views (3, s_h, s_w) normalised, no flip."""

    def __init__(self, ids, dataset, list_name, sides: tuple[int, ...], square: bool = True,
                 multiple: int = 16):
        super().__init__(ids, dataset, list_name, tuple(sides))
        self.square, self.multiple = square, multiple

    def view_shape(self, size: tuple[int, int], side: int) -> tuple[int, int]:
        """(h, w) of the view of an image of `size` at `side`."""
        if self.square:
            return side, side
        h, w = size
        short = max(self.multiple, self.multiple * round(side * min(h, w) / max(h, w) / self.multiple))
        return (side, short) if h >= w else (short, side)

    def views_size(self, index: int) -> tuple[int, ...]:
        if self.square:  # every image's views share their shapes: one exact batch
            return tuple(self.scales[:1]) * 2
        size = self.image_size(index)
        return tuple(n for side in self.scales for n in self.view_shape(size, side))

    def view(self, img: np.ndarray, side) -> np.ndarray:
        return imutils.pil_resize(img, self.view_shape(img.shape[:2], side), 3)


class SegTrainDataset(SegmentationDataset):
    """deeplab-pytorch's augmentation on (image, label PNG) pairs.

    Returns dict(name, img float32 (3, crop, crop) ImageNet-normalised RGB, label uint8
    (crop, crop) in {0..n_classes-1, 255}). Per-sample randomness is keyed by (seed, epoch, index).
    """

    def __init__(self, ids, dataset, list_name, label_dir: str | Path, crop_size: int,
                 scales: tuple[float, ...], n_classes: int, seed: int = 0):
        super().__init__(ids, dataset, list_name, label_dir, crop_size, rescale=None,
                         seed=seed)
        self.scales, self.n_classes = tuple(scales), n_classes

    def __getitem__(self, index: int) -> dict:
        rng, name = self.rng(index), self.ids[index]
        img, label = self.image(index), load_png(self.label_dir / f"{name}.png")
        if img.shape[:2] != label.shape:
            raise BadInput(f"label {self.label_dir / name}.png is {label.shape}, its image "
                             f"{img.shape[:2]}: labels must have the image's size")
        bad = (label != imutils.IGNORE) & (label >= self.n_classes)
        if bad.any():
            raise BadInput(f"label {self.label_dir / name}.png holds values "
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
