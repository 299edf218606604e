"""coco14/: preparation of a COCO 2014 root and the COCODataset, on a tiny synthetic root."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from coco14.dataloader import COCO14_DIR, GT_FOLDER, LABELS_FILE, COCODataset, detect_layout
from coco14.prepare import ImageRecord, Instance, instance_mask, main, prepare, render_semantic
from misc import imutils
from misc.data.dataset import SegDataset, check_ids
from misc.data.samples import ClassificationDataset, MultiScaleDataset, SegmentationDataset
from misc.io.png import load_png

GAPS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
CAT_IDS = [i for i in range(1, 91) if i not in GAPS]          # the 80 real COCO ids
VALUE = {1: 1, 13: 12, 44: 40, 90: 80}                          # COCO id -> PNG value, by hand
TRAIN = {"000000000009": (16, 20, "RGB"), "000000000025": (16, 20, "L"),
         "000000000030": (12, 18, "CMYK")}
VAL = {"000000000042": (16, 20, "RGB"), "000000000073": (10, 14, "RGB")}


def rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: column-major run lengths starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def ann(ann_id: int, img: str, cat: int, seg, crowd: int = 0) -> dict:
    return {"id": ann_id, "image_id": int(img), "category_id": cat, "segmentation": seg,
            "iscrowd": crowd, "area": 0.0, "bbox": [0, 0, 1, 1]}


def annotations(split: str) -> list[dict]:
    if split == "train":
        crowd = np.zeros((16, 20), bool)
        crowd[0:8, 0:10] = True
        return [ann(10, "9", 13, rect(4, 4, 10, 10)),            # small, listed first
                ann(11, "9", 1, rect(0, 0, 20, 16)),             # whole image, listed later
                ann(20, "25", 90, uncompressed_rle(crowd), crowd=1),
                ann(21, "25", 44, rect(0, 0, 5, 4)),             # inside the crowd region
                ann(30, "30", 90, [[2, 2, 16, 2, 9, 11]])]       # triangle
    person = np.zeros((16, 20), np.uint8, order="F")
    person[10:16, 12:20] = 1
    rle = mask_utils.encode(np.asfortranarray(person))
    return [ann(40, "42", 44, rect(0, 0, 8, 8)),
            ann(41, "42", 1, {"size": [16, 20], "counts": rle["counts"].decode()}),
            ann(42, "42", 13, [[1, 1, 2, 2]])]                   # degenerate: no pixels


def write_jpeg(path: Path, h: int, w: int, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"RGB": (200, 40, 40), "L": 90, "CMYK": (255, 0, 0, 0)}[mode]  # CMYK: cyan
    Image.new(mode, (w, h), colour).save(path, quality=95)


def write_coco(root: Path, layout: str = "official") -> Path:
    base = {"official": root, "reference": root / "JPEGImages"}[layout]
    cats = [{"id": c, "name": f"cat_{c}", "supercategory": "x"} for c in reversed(CAT_IDS)]
    for split, images in (("train", TRAIN), ("val", VAL)):
        for img_id, (h, w, mode) in images.items():
            write_jpeg(base / f"{split}2014" / f"COCO_{split}2014_{img_id}.jpg", h, w, mode)
        data = {"images": [{"id": int(i), "height": h, "width": w,
                            "file_name": f"COCO_{split}2014_{i}.jpg"}
                           for i, (h, w, _) in images.items()],
                "annotations": annotations(split), "categories": cats}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))
    return root


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    return write_coco(tmp_path / "coco")


@pytest.fixture
def prepared(coco: Path) -> Path:
    prepare(coco)
    return coco


def gt(root: Path, img_id: str) -> np.ndarray:
    return load_png(root / GT_FOLDER / f"{img_id}.png")


# --- preparation -----------------------------------------------------------------------------

def test_labels_csv_header_and_rows(prepared):
    lines = (prepared / LABELS_FILE).read_text().splitlines()
    assert lines[0] == "image_id," + ",".join(f"cat_{c}" for c in CAT_IDS)  # ascending id
    rows = {line.split(",")[0]: np.array(line.split(",")[1:], int) for line in lines[1:]}
    assert list(rows) == [*TRAIN, *VAL]
    on = {i: sorted(np.flatnonzero(v) + 1) for i, v in rows.items()}  # as PNG values
    assert on == {"000000000009": [1, 12], "000000000025": [40, 80],  # crowd counts
                  "000000000030": [80], "000000000042": [1, 12, 40], "000000000073": []}


def test_gt_values_at_chosen_pixels(prepared):
    a = gt(prepared, "000000000009")
    assert a.shape == (16, 20) and a.dtype == np.uint8
    assert a[7, 7] == VALUE[13]          # the smaller instance wins although listed first
    assert a[13, 16] == VALUE[1] and a[1, 1] == VALUE[1]
    b = gt(prepared, "000000000025")
    assert b[2, 2] == VALUE[44]          # a single instance beats the crowd region
    assert b[6, 8] == 255 and b[1, 8] == 255
    assert b[12, 15] == 0 and b[7, 12] == 0
    c = gt(prepared, "000000000030")
    assert c.shape == (12, 18) and c[5, 9] == VALUE[90] and c[11, 1] == 0
    d = gt(prepared, "000000000042")
    assert d[3, 3] == VALUE[44] and d[12, 15] == VALUE[1] and d[12, 4] == 0
    assert set(np.unique(d)) == {0, VALUE[1], VALUE[44]}  # the degenerate polygon draws nothing


def test_empty_image_is_background_with_zero_labels(prepared):
    assert gt(prepared, "000000000073").shape == (10, 14)
    assert not gt(prepared, "000000000073").any()
    ds = COCODataset(prepared)
    assert not ds.labels["000000000073"].any()
    sample = ClassificationDataset(["000000000073"], ds, "empty", crop_size=16,
                                   resize_long=(12, 16))[0]
    assert sample["img"].shape == (3, 16, 16) and not sample["label"].any()


def test_resume_writes_nothing_then_only_the_deleted_png(coco):
    first = prepare(coco)
    assert (first.images, first.written, first.labels_written) == (5, 5, True)
    files = sorted((coco / GT_FOLDER).iterdir()) + [coco / LABELS_FILE]
    stamps = {p: p.stat().st_mtime_ns for p in files}
    second = prepare(coco)
    assert (second.written, second.skipped, second.labels_written) == (0, 5, False)
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    before = gt(coco, "000000000025")
    (coco / GT_FOLDER / "000000000025.png").unlink()
    (coco / GT_FOLDER / ".000000000009.png.x.png.tmp").write_bytes(b"half")  # killed write
    third = prepare(coco)
    assert third.written == 1
    assert np.array_equal(gt(coco, "000000000025"), before)
    assert not list((coco / GT_FOLDER).glob(".*.tmp"))


def test_workers_and_cli_match_serial(coco, tmp_path):
    prepare(coco, out_dir=tmp_path / "serial")
    stats = main(["--coco14_root", str(coco), "--out_dir", str(tmp_path / "pool"),
                  "--workers", "2"])
    assert stats.written == 5
    for img_id in [*TRAIN, *VAL]:
        assert np.array_equal(load_png(tmp_path / "serial" / GT_FOLDER / f"{img_id}.png"),
                              load_png(tmp_path / "pool" / GT_FOLDER / f"{img_id}.png"))
    assert ((tmp_path / "serial" / LABELS_FILE).read_text()
            == (tmp_path / "pool" / LABELS_FILE).read_text())


def test_one_split_only(coco):
    stats = prepare(coco, splits=["train"])
    assert stats.images == 3
    assert len((coco / LABELS_FILE).read_text().splitlines()) == 4


def test_instance_mask_formats():
    m = np.zeros((6, 5), bool)
    m[1:4, 2:5] = True
    assert np.array_equal(instance_mask(uncompressed_rle(m), 6, 5), m)
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    assert np.array_equal(instance_mask(rle, 6, 5), m)
    assert np.array_equal(instance_mask({**rle, "counts": rle["counts"].decode()}, 6, 5), m)
    assert instance_mask([[0, 0, 1, 1]], 6, 5) is None
    with pytest.raises(ValueError, match="differs from the image size"):
        instance_mask(rle, 5, 6)
    bad = ImageRecord("000000000001", "train", 6, 5, (Instance(0, False, 7, {"x": 1}),))
    with pytest.raises(ValueError, match="annotation 7"):
        render_semantic(bad)


# --- preparation errors ----------------------------------------------------------------------

def test_missing_annotation_file(coco):
    (coco / "annotations" / "instances_val2014.json").unlink()
    with pytest.raises(FileNotFoundError, match="annotations_trainval2014.zip"):
        prepare(coco)
    assert not (coco / GT_FOLDER / "000000000009.png").exists()  # failed before any work


def test_corrupt_or_wrong_annotation_file(coco):
    path = coco / "annotations" / "instances_train2014.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        prepare(coco)
    path.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="not a COCO instances file"):
        prepare(coco)
    data = json.loads(text)
    del data["annotations"][0]["segmentation"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="malformed .KeyError: 'segmentation'"):
        prepare(coco)
    data = json.loads(text)
    data["categories"] = data["categories"][:1]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="1 categories"):
        prepare(coco)


def test_root_without_images(tmp_path, coco):
    empty = tmp_path / "empty"
    shutil.copytree(coco / "annotations", empty / "annotations")
    with pytest.raises(FileNotFoundError, match="holds no images"):
        prepare(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare(tmp_path / "nowhere")
    (coco / "val2014" / "COCO_val2014_000000000042.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 2 images of instances_val2014"):
        prepare(coco)


# --- the dataset -----------------------------------------------------------------------------

def test_dataset_interface(prepared):
    ds = COCODataset(prepared)
    for member in SegDataset.__annotations__:
        assert hasattr(ds, member), member
    for member in ("n_classes", "class_names", "image_path", "gt_dir", "split_list",
                   "check_images"):
        assert hasattr(ds, member), member
    assert ds.name == "coco14" and ds.ignore_value == 255
    assert ds.n_classes == 80 and ds.class_names[:3] == ("cat_1", "cat_2", "cat_3")
    assert ds.class_names[11] == "cat_13" and ds.class_names[-1] == "cat_90"
    assert ds.image_path("000000000030") == prepared / "train2014/COCO_train2014_000000000030.jpg"
    assert ds.image_path("000000000073") == prepared / "val2014/COCO_val2014_000000000073.jpg"
    with pytest.raises(FileNotFoundError, match="COCO_val2014_000000000001.jpg"):
        ds.image_path("000000000001")
    assert ds.gt_dir() == prepared / GT_FOLDER
    assert ds.split_list("train") == COCO14_DIR / "train14.txt"
    assert ds.split_list("val") == COCO14_DIR / "val14.txt"
    assert ds.split_list("train").is_file() and ds.split_list("val").is_file()
    with pytest.raises(ValueError, match="unknown COCO split"):
        ds.split_list("test")
    ids = [*TRAIN, *VAL]
    ds.check_images(ids, "all")
    check_ids(ds, ids, "all")
    with pytest.raises(FileNotFoundError, match="1 images of mine"):
        ds.check_images(ids + ["000000000001"], "mine")
    copy = pickle.loads(pickle.dumps(ds))  # what a spawned loader worker gets
    assert copy.image_path("000000000042") == ds.image_path("000000000042")
    assert np.array_equal(copy.labels["000000000009"], ds.labels["000000000009"])


def test_dataset_errors(coco, tmp_path):
    ds = COCODataset(coco)
    with pytest.raises(FileNotFoundError, match="python -m coco14.prepare --coco14_root"):
        ds.labels
    with pytest.raises(FileNotFoundError, match="python -m coco14.prepare"):
        ds.gt_dir()
    voc_like = tmp_path / "voc.csv"
    voc_like.write_text("image_id,a,b\n000000000009,1,0\n")
    with pytest.raises(ValueError, match="2 classes, COCO 2014 has 80"):
        COCODataset(coco, cls_labels=voc_like).labels
    with pytest.raises(FileNotFoundError, match="holds no images"):
        COCODataset(tmp_path)


def test_ready_gt_folder_flag(prepared, tmp_path):
    ready = tmp_path / "coco_seg_anno"
    ready.mkdir()
    assert COCODataset(prepared, gt_dir=ready).gt_dir() == ready


@pytest.mark.parametrize("layout", ["reference", "flat"])
def test_other_layouts(tmp_path, layout):
    root = write_coco(tmp_path / "coco", "reference")
    if layout == "flat":
        for jpg in sorted((root / "JPEGImages").glob("*/*.jpg")):
            jpg.rename(root / "JPEGImages" / f"{jpg.stem.split('_')[-1]}.jpg")
        for split in ("train2014", "val2014"):
            (root / "JPEGImages" / split).rmdir()
    assert detect_layout(root).kind == layout
    assert prepare(root).written == 5
    ds = COCODataset(root)
    name = {"reference": "val2014/COCO_val2014_000000000042.jpg", "flat": "000000000042.jpg"}
    assert ds.image_path("000000000042") == root / "JPEGImages" / name[layout]
    ds.check_images([*TRAIN, *VAL], "all")


def test_samples_read_greyscale_and_cmyk_as_rgb(prepared):
    ds = COCODataset(prepared)
    grey = imutils.read_image(ds.image_path("000000000025"))
    cmyk = imutils.read_image(ds.image_path("000000000030"))
    assert grey.shape == (16, 20, 3) and grey.dtype == np.uint8
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert cmyk.shape == (12, 18, 3) and cmyk.dtype == np.uint8
    assert np.abs(cmyk.astype(int) - [0, 255, 255]).max() <= 8  # cyan, not inverted
    ids = ["000000000025", "000000000030", "000000000042"]
    cls = ClassificationDataset(ids, ds, "t", crop_size=16, resize_long=(16, 24), seed=1)
    for i in range(3):
        s = cls[i]
        assert s["img"].shape == (3, 16, 16) and s["label"].shape == (80,)
    ms = MultiScaleDataset(ids, ds, "t", scales=(1.0, 0.5))
    s = ms[1]
    assert tuple(s["size"]) == (12, 18)
    assert [tuple(v.shape) for v in s["imgs"]] == [(3, 12, 18), (3, 6, 9)]
    assert ms.image_size(0) == (16, 20)
    seg = SegmentationDataset(ids, ds, "t", label_dir=ds.gt_dir(), crop_size=16, rescale=None,
                              hor_flip=False, crop_method="top_left")
    s = seg[0]
    assert s["label"][2, 2] == VALUE[44] and s["label"][6, 8] == 255
    assert s["label_cls"].shape == (80,)


def test_repository_lists():
    assert sum(1 for _ in open(COCO14_DIR / "train14.txt")) == 82783
    assert sum(1 for _ in open(COCO14_DIR / "val14.txt")) == 40504
    first = (COCO14_DIR / "train14.txt").open().readline().strip()
    assert len(first) == 12 and first.isdigit()
