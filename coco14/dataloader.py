"""MS COCO 2014 as a `misc.data.dataset.SegDataset` (docs/pipeline.md §1.2, §5).

Ids are the 12-digit zero-padded strings of coco14/train14.txt (82,783 train2014 images) and
coco14/val14.txt (40,504 val2014 images). Three image layouts are accepted under a root:

- official:  <root>/train2014/COCO_train2014_<id>.jpg and <root>/val2014/COCO_val2014_<id>.jpg
             (the folders of cocodataset.org's train2014.zip / val2014.zip);
- reference: <root>/JPEGImages/train2014/COCO_train2014_<id>.jpg (and val2014 likewise);
- flat:      <root>/JPEGImages/<id>.jpg (train and val renamed into one folder, as RIB does).

An id does not say its split, so the first lookup of an id tries the train then the val file
and remembers the answer. Image-level labels and the semantic ground truth are written once by
`python -m coco14.prepare` (coco14/prepare.py): <root>/cls_labels.csv and
<root>/SegmentationClass14/<id>.png (0 background, 1..80 the classes in ascending COCO category-id
order, 255 crowd regions). Another GT folder (e.g. the reference's `coco_seg_anno`, which the
published numbers were scored against) can be passed as `gt_dir`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from misc.data.dataset import ClassLabels, LabelledRoot, check_readable
from misc.errors import BadInput, MissingInput
from misc.imutils import IGNORE

COCO14_DIR = Path(__file__).resolve().parent
N_CLASSES = 80
SPLITS = ("train", "val")
SPLIT_LISTS = {"train": COCO14_DIR / "train14.txt", "val": COCO14_DIR / "val14.txt"}
GT_FOLDER = "SegmentationClass14"   # written by coco14.prepare under the output root
LABELS_FILE = "cls_labels.csv"      # written by coco14.prepare under the output root


def prepare_command(root: str | Path) -> str:
    """The shell command that writes the labels CSV and the GT PNGs for `root`."""
    return f"python -m coco14.prepare --coco14_root {root}"


@dataclass(frozen=True)
class ImageLayout:
    """Where a COCO root keeps its JPEGs: `kind` is "official", "reference" or "flat";
    `base` is the folder holding train2014/ and val2014/ (or the flat JPEGs)."""
    kind: str
    base: Path

    def path(self, img_id: str, split: str) -> Path:
        """The file of `img_id` if it belongs to `split` ("train" or "val")."""
        if self.kind == "flat":
            return self.base / f"{img_id}.jpg"
        return self.base / f"{split}2014" / f"COCO_{split}2014_{img_id}.jpg"

    def candidates(self, img_id: str) -> tuple[Path, ...]:
        """The files that may hold `img_id`, train first (one file in the flat layout)."""
        if self.kind == "flat":
            return (self.path(img_id, "train"),)
        return tuple(self.path(img_id, s) for s in SPLITS)


def detect_layout(root: str | Path) -> ImageLayout:
    """The image layout of `root` from a few folder checks (no listing of the image folders)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInput(f"COCO root {root} does not exist: pass --coco14_root pointing at "
                                f"the folder that holds train2014/ and val2014/")
    for kind, base in (("official", root), ("reference", root / "JPEGImages")):
        if any((base / f"{s}2014").is_dir() for s in SPLITS):
            return ImageLayout(kind, base)
    if (root / "JPEGImages").is_dir():
        return ImageLayout("flat", root / "JPEGImages")
    raise MissingInput(
        f"COCO root {root} holds no images: expected train2014/ and val2014/ (unzip "
        f"train2014.zip and val2014.zip from cocodataset.org into it), or JPEGImages/train2014/ "
        f"and JPEGImages/val2014/, or JPEGImages/<12-digit id>.jpg")


class COCODataset(LabelledRoot):
    """A COCO 2014 root with its image-level labels, checked up front (implements SegDataset).

    root: the COCO folder (any layout of `detect_layout`).
    cls_labels: the labels CSV (default <root>/cls_labels.csv, written by coco14.prepare).
    gt_dir: a folder of semantic PNGs <id>.png (default <root>/SegmentationClass14).
    """

    name = "coco14"
    ignore_value = IGNORE

    def __init__(self, root: str | Path, cls_labels: str | Path | None = None,
                 gt_dir: str | Path | None = None):
        self.root = Path(root)
        self.layout = detect_layout(self.root)
        self._labels_path = Path(cls_labels) if cls_labels else self.root / LABELS_FILE
        self._gt_dir = Path(gt_dir) if gt_dir else self.root / GT_FOLDER
        self._paths: dict[str, Path] = {}  # id -> resolved image file

    def read_labels(self) -> ClassLabels:
        return read_labels(self._labels_path, self.root)

    def find_image(self, img_id: str) -> Path | None:
        """The existing JPEG of `img_id`, or None; cached once found."""
        path = self._paths.get(img_id)
        if path is None:
            path = next((p for p in self.layout.candidates(img_id) if p.is_file()), None)
            if path is not None:
                self._paths[img_id] = path
        return path

    def image_path(self, img_id: str) -> Path:
        """The JPEG of `img_id` (RGB, greyscale or CMYK); FileNotFoundError if there is none."""
        path = self.find_image(img_id)
        if path is None:
            tried = " or ".join(str(p) for p in self.layout.candidates(img_id))
            raise MissingInput(f"image {img_id} not found: neither {tried} exists; check "
                                    f"--coco14_root and the id list")
        return path

    def gt_dir(self) -> Path:
        """The folder of semantic GT PNGs <id>.png (uint8: 0 bg, 1..80, 255 ignored)."""
        if not self._gt_dir.is_dir():
            raise MissingInput(
                f"COCO ground-truth folder {self._gt_dir} not found: run "
                f"`{prepare_command(self.root)}`, or pass the folder of ready semantic PNGs "
                f"(e.g. coco_seg_anno)")
        return self._gt_dir

    def split_list(self, split: str) -> Path:
        """<root>/<split>14.txt when the root carries its own lists (the toy COCO does), else
        coco14/train14.txt for "train", coco14/val14.txt for "val"."""
        if split not in SPLIT_LISTS:
            raise BadInput(f"unknown COCO split {split!r}: use one of {list(SPLIT_LISTS)}")
        own = self.root / SPLIT_LISTS[split].name
        return own if own.is_file() else SPLIT_LISTS[split]

    def instance_gt_dir(self) -> Path | None:
        """No instance ground truth is prepared for COCO yet: eval_ins_seg skips."""
        return None

    def check_images(self, ids: Sequence[str], list_name: str) -> None:
        missing = [i for i in ids if self.find_image(i) is None]
        if missing:
            raise MissingInput(
                f"{len(missing)} images of {list_name} are missing from {self.layout.base} "
                f"({self.layout.kind} layout; first: {missing[:3]}); fix the list or the "
                f"COCO root")
        check_readable({i: self.find_image(i) for i in ids}, list_name)


def read_labels(path: Path, root: Path) -> ClassLabels:
    """The 80-class labels CSV, with errors that name the preparation command."""
    if not path.is_file():
        raise MissingInput(f"COCO class-label file {path} not found: run "
                                f"`{prepare_command(root)}` once (or pass --cls_labels FILE)")
    labels = ClassLabels.from_csv(path)
    if labels.n_classes != N_CLASSES:
        raise BadInput(f"{path} has {labels.n_classes} classes, COCO 2014 has {N_CLASSES}: "
                         f"it is not a COCO label file; rewrite it with "
                         f"`{prepare_command(root)}`")
    return labels
