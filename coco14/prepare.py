"""One-time preparation of a COCO 2014 root (docs/pipeline.md §1.2, §5).

    python -m coco14.prepare --coco14_root DIR [--out_dir DIR] [--workers N] [--splits train val]

reads <root>/annotations/instances_{train,val}2014.json and writes, under the output root
(default: the COCO root itself):

- cls_labels.csv: header `image_id,<80 category names in ascending COCO category id>`, then one
  0/1 row per image (12-digit id), train images then val images, each by ascending id. Crowd
  annotations count: a crowd of people means a person is in the image. Images without any
  annotation stay in the file with all zeros (the reference treats them as all background).
- SegmentationClass14/<id>.png: uint8 (H, W) with H, W from the annotation file;
  0 background, c + 1 for class index c in 0..79 (COCO ids 1..90 with gaps are remapped),
  255 for crowd regions not covered by a single instance. Overlapping instances: the smaller
  instance (pixel area) is drawn last and wins, because COCO's large instances (tables, beds,
  couches, persons) are outlined around the small objects on or in front of them.

Resumable: PNGs already present are kept (each is written atomically), and an unchanged CSV is
not rewritten, so a second run writes nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from coco14.dataloader import GT_FOLDER, LABELS_FILE, N_CLASSES, SPLITS, ImageLayout, detect_layout
from misc.engine.workers import cpu_pool
from misc.errors import BadInput, MissingInput
from misc.imutils import IGNORE
from misc.io.atomic import atomic_path, remove_stale_temporaries
from misc.io.png import save_png


@dataclass(frozen=True)
class Instance:
    """One annotation: class index 0..79, crowd flag, COCO annotation id, raw segmentation
    (a list of polygons or an RLE dict, as in the JSON)."""
    category: int
    crowd: bool
    ann_id: int
    segmentation: list | dict


@dataclass(frozen=True)
class ImageRecord:
    """One image of an annotation file: 12-digit id, split, size and its instances."""
    img_id: str
    split: str
    height: int
    width: int
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class PrepareStats:
    """What a `prepare` run did: images in the annotation files, PNGs written / already
    present, whether the CSV was (re)written, and the seconds spent writing PNGs."""
    images: int
    written: int
    skipped: int
    labels_written: bool
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else float("nan")


def annotation_path(ann_dir: Path, split: str) -> Path:
    """<ann_dir>/instances_<split>2014.json."""
    return ann_dir / f"instances_{split}2014.json"


def load_annotations(path: Path) -> dict:
    """The parsed instances JSON, with errors that say how to get a good one."""
    if not path.is_file():
        raise MissingInput(
            f"COCO annotation file {path} not found: download annotations_trainval2014.zip from "
            f"cocodataset.org and unzip it into the COCO root (or pass --ann_dir)")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"COCO annotation file {path} is corrupt ({err}): unzip "
                         f"annotations_trainval2014.zip again") from err
    keys = {"images", "annotations", "categories"}
    if not isinstance(data, dict) or not keys <= set(data):
        raise BadInput(f"{path} is not a COCO instances file (it needs the keys {sorted(keys)}): "
                         f"use annotations/instances_<split>2014.json")
    return data


def category_table(categories: list[dict], path: Path) -> tuple[tuple[str, ...], dict[int, int]]:
    """(80 names in ascending COCO category id, {COCO category id: class index 0..79})."""
    cats = sorted(categories, key=lambda c: int(c["id"]))
    if len(cats) != N_CLASSES or len({c["id"] for c in cats}) != N_CLASSES:
        raise BadInput(f"{path} defines {len(cats)} categories, COCO 2014 instances have "
                         f"{N_CLASSES}: pass the instances_*.json file (not captions or keypoints)")
    return tuple(str(c["name"]) for c in cats), {int(c["id"]): i for i, c in enumerate(cats)}


def image_records(data: dict, split: str, index: dict[int, int], path: Path) -> list[ImageRecord]:
    """Every image of an annotation file with its instances, by ascending image id."""
    by_image: dict[int, list[Instance]] = {int(img["id"]): [] for img in data["images"]}
    for ann in data["annotations"]:
        cat, img = int(ann["category_id"]), int(ann["image_id"])
        if cat not in index or img not in by_image:
            raise BadInput(f"{path}: annotation {ann.get('id')} refers to an unknown "
                             f"{'category' if cat not in index else 'image'}; the file is corrupt")
        by_image[img].append(Instance(index[cat], bool(ann.get("iscrowd", 0)), int(ann["id"]),
                                      ann["segmentation"]))
    records = [ImageRecord(f"{int(img['id']):012d}", split, int(img["height"]),
                           int(img["width"]), tuple(by_image[int(img["id"])]))
               for img in data["images"]]
    return sorted(records, key=lambda r: r.img_id)


def label_vector(record: ImageRecord) -> np.ndarray:
    """(80,) uint8 multi-hot over the instances of an image, crowd ones included."""
    vec = np.zeros(N_CLASSES, np.uint8)
    vec[[inst.category for inst in record.instances]] = 1
    return vec


def instance_rle(segmentation: list | dict, height: int, width: int) -> dict | None:
    """The compressed RLE of a polygon list, an uncompressed RLE (crowd) or a compressed RLE;
    None when every polygon is degenerate (fewer than 3 points)."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation:
        if [int(v) for v in segmentation.get("size", ())] != [height, width]:
            raise ValueError(f"RLE size {segmentation.get('size')} differs from the image size "
                             f"{[height, width]}")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            return mask_utils.frPyObjects(segmentation, height, width)
        return {"size": [height, width],
                "counts": counts.encode() if isinstance(counts, str) else counts}
    raise ValueError(f"unknown segmentation format {type(segmentation).__name__}")


def decode_rles(rles: list[dict]) -> np.ndarray:
    """(H, W, N) uint8 0/1 masks of N RLEs of one image."""
    with warnings.catch_warnings():  # pycocotools 2.0.x under NumPy 2: a harmless copy= notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rles)


def instance_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray | None:
    """(H, W) bool mask of one segmentation (see `instance_rle`), or None if degenerate."""
    rle = instance_rle(segmentation, height, width)
    return None if rle is None else decode_rles([rle])[:, :, 0].astype(bool)


def render_semantic(record: ImageRecord) -> np.ndarray:
    """The semantic GT of an image: uint8 (H, W), 0 bg, 1..80, 255 crowd.

    Crowd regions are painted 255 first; single instances are painted over them by
    descending pixel area (ties: ascending annotation id), so the smallest instance wins."""
    label = np.zeros((record.height, record.width), np.uint8)
    shapes = []  # (paint order key, value, rle)
    for inst in record.instances:
        try:
            rle = instance_rle(inst.segmentation, record.height, record.width)
        except Exception as err:
            raise BadInput(f"image {record.img_id} ({record.split}2014), annotation "
                             f"{inst.ann_id}: bad segmentation ({err})") from err
        if rle is not None:
            area = int(mask_utils.area(rle))
            key = (0, 0, 0) if inst.crowd else (1, -area, inst.ann_id)
            shapes.append((key, IGNORE if inst.crowd else inst.category + 1, rle))
    if not shapes:
        return label
    shapes.sort(key=lambda s: s[0])
    masks = decode_rles([rle for _, _, rle in shapes])
    for j, (_, value, _) in enumerate(shapes):
        np.copyto(label, np.uint8(value), where=masks[:, :, j].view(bool))
    return label


def _write_gt(job: tuple[ImageRecord, str]) -> str:
    """Pool task: render one image's GT and write it atomically; returns the id."""
    record, gt_dir = job
    save_png(Path(gt_dir) / f"{record.img_id}.png", render_semantic(record))
    return record.img_id


def check_images_exist(layout: ImageLayout, records: Sequence[ImageRecord], path: Path) -> None:
    """Every image of an annotation file is on disk (catches a wrong root or a partial unzip)."""
    missing = [r.img_id for r in records if not layout.path(r.img_id, r.split).is_file()]
    if missing:
        split = records[0].split
        raise MissingInput(
            f"{len(missing)} of the {len(records)} images of {path.name} are missing from "
            f"{layout.base} ({layout.kind} layout; first: {missing[:3]}): unzip {split}2014.zip "
            f"completely, or leave this split out with --splits")


def write_gt(records: Sequence[ImageRecord], gt_dir: Path, pool: Pool | None, desc: str) -> int:
    """Write the PNGs of `records` that are not on disk yet (in `pool` when given); returns
    how many were written."""
    todo = [r for r in records if not (gt_dir / f"{r.img_id}.png").is_file()]
    jobs = ((r, str(gt_dir)) for r in todo)
    done = (map(_write_gt, jobs) if pool is None
            else pool.imap_unordered(_write_gt, jobs, chunksize=16))
    with tqdm(total=len(todo), desc=desc, unit="img", disable=not todo) as bar:
        for _ in done:
            bar.update()
    return len(todo)


def labels_csv_text(names: Sequence[str], rows: Sequence[tuple[str, np.ndarray]]) -> str:
    """The ClassLabels CSV: header then `id,0,1,...` per image."""
    for name in names:
        if "," in name or '"' in name:
            raise ValueError(f"category name {name!r} cannot be written to the labels CSV")
    lines = ["image_id," + ",".join(names)]
    lines += [img_id + "," + ",".join(map(str, vec.tolist())) for img_id, vec in rows]
    return "\n".join(lines) + "\n"


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` atomically unless the file already holds it; True if written."""
    if path.is_file() and path.read_text() == text:
        return False
    with atomic_path(path, suffix=".csv") as tmp:
        tmp.write_text(text)
    return True


def read_split(path: Path, split: str) -> tuple[tuple[str, ...], list[ImageRecord]]:
    """(the 80 category names, the images with their instances) of one annotation file."""
    data = load_annotations(path)
    try:
        names, index = category_table(data["categories"], path)
        return names, image_records(data, split, index, path)
    except (KeyError, TypeError) as err:  # a field missing or of the wrong type
        raise BadInput(f"{path} is malformed ({type(err).__name__}: {err}): unzip "
                         f"annotations_trainval2014.zip again") from err


def annotation_paths(root: Path, ann_dir: str | Path | None,
                     splits: Sequence[str]) -> dict[str, Path]:
    """The annotation file of each split, all checked to exist before the long parse."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise BadInput(f"splits {list(splits)}: choose among {list(SPLITS)}")
    folder = Path(ann_dir) if ann_dir else root / "annotations"
    paths = {s: annotation_path(folder, s) for s in splits}
    for path in paths.values():
        if not path.is_file():
            load_annotations(path)  # raises the missing-file error
    return paths


def gt_folder(out: Path) -> Path:
    """<out>/SegmentationClass14, created, without the temporaries of a killed run."""
    gt_dir = out / GT_FOLDER
    gt_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries([gt_dir])
    for tmp in out.glob(f".{LABELS_FILE}.*.tmp"):  # a CSV write killed half-way
        tmp.unlink(missing_ok=True)
    return gt_dir


def prepare(root: str | Path, out_dir: str | Path | None = None,
            ann_dir: str | Path | None = None, splits: Sequence[str] = SPLITS,
            workers: int = 0) -> PrepareStats:
    """Write <out_dir>/cls_labels.csv and <out_dir>/SegmentationClass14/<id>.png for the images
    of `splits` ("train", "val"); out_dir defaults to root, ann_dir to <root>/annotations.
    `workers` > 1 renders in that many processes. Existing PNGs are kept (resume)."""
    root = Path(root)
    out = Path(out_dir) if out_dir else root
    layout = detect_layout(root)
    paths = annotation_paths(root, ann_dir, splits)
    gt_dir = gt_folder(out)
    names: tuple[str, ...] | None = None
    rows: list[tuple[str, np.ndarray]] = []
    images = written = 0
    seconds = 0.0
    with cpu_pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        for split, path in paths.items():  # one at a time: the train JSON alone takes gigabytes
            split_names, records = read_split(path, split)
            if names not in (None, split_names):
                raise BadInput(f"{path} and {paths[splits[0]]} list different categories: "
                                 f"use the files of one COCO 2014 release")
            names = split_names
            check_images_exist(layout, records, path)
            rows += [(r.img_id, label_vector(r)) for r in records]
            start = time.perf_counter()
            written += write_gt(records, gt_dir, pool, f"COCO {split}2014 GT")
            seconds += time.perf_counter() - start
            images += len(records)
    if len({img_id for img_id, _ in rows}) != len(rows):
        raise BadInput(f"an image id occurs in more than one of {list(paths.values())}")
    labels_written = write_if_changed(out / LABELS_FILE, labels_csv_text(names, rows))
    return PrepareStats(images, written, images - written, labels_written, seconds)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m coco14.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coco14_root", required=True,
                   help="COCO root: train2014/ and val2014/ (or JPEGImages/...), annotations/")
    p.add_argument("--out_dir", default=None,
                   help="where cls_labels.csv and SegmentationClass14/ go (default: the root)")
    p.add_argument("--ann_dir", default=None,
                   help="folder of instances_{train,val}2014.json (default: <root>/annotations)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    p.add_argument("--workers", type=int, default=0,
                   help="processes rendering PNGs (0 or 1: in this process)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> PrepareStats:
    a = parse_args(argv)
    stats = prepare(a.coco14_root, a.out_dir, a.ann_dir, a.splits, a.workers)
    rate = f" ({stats.images_per_second:.1f} img/s)" if stats.written else ""
    print(f"{stats.images} images: {stats.written} PNGs written{rate}, {stats.skipped} already "
          f"present; labels {'written' if stats.labels_written else 'unchanged'}")
    return stats


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:  # user errors: the message, no traceback
        sys.exit(f"coco14.prepare: {error}")
