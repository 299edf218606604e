"""misc.eval.coco_export: the exported file loads with pycocotools and scores AP 1.0 against itself."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from misc.eval.coco_export import CocoImage, coco_results, export_coco, semantic_segments

NAMES = ["red", "green", "blue"]


def synthetic_images() -> list[CocoImage]:
    """Three images: separated blobs of two classes, one image without any segment."""
    out = []
    for k, (h, w) in enumerate([(40, 50), (32, 32), (24, 36)]):
        labels = np.zeros((h, w), np.int64)
        cls = []
        if k < 2:
            labels[2:12, 3:15] = 1
            labels[20:30, 5:9] = 2
            labels[15:22, 20:30] = 3
            cls = [0, 0, 2 - k]
        out.append(CocoImage(f"img_{k}", f"img_{k}.jpg", labels, np.ones(len(cls)),
                             np.array(cls, np.int64)))
    return out


def test_export_loads_and_scores_ap_one(tmp_path) -> None:
    path = tmp_path / "instances_train_pseudo.json"
    data = export_coco(path, synthetic_images(), NAMES)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        dets = gt.loadRes(coco_results(data))
        ev = COCOeval(gt, dets, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0) and ev.stats[1] == pytest.approx(1.0)
    assert len(gt.getImgIds()) == 3 and len(gt.getAnnIds()) == 6
    assert [c["id"] for c in gt.loadCats(gt.getCatIds())] == [1, 2, 3]
    img = gt.loadImgs(1)[0]
    assert (img["file_name"], img["height"], img["width"], img["name"]) == \
        ("img_0.jpg", 40, 50, "img_0")
    ann = gt.loadAnns(gt.getAnnIds(imgIds=1))[0]
    assert ann["bbox"] == [3.0, 2.0, 12.0, 10.0] and ann["area"] == 120.0
    assert ann["category_id"] == 1 and ann["iscrowd"] == 0 and ann["score"] == 1.0
    assert np.array_equal(gt.annToMask(ann), synthetic_images()[0].labels == 1)
    json.loads(path.read_text())  # plain JSON, RLE counts as text


def test_min_score_filters_segments(tmp_path) -> None:
    imgs = synthetic_images()
    imgs[0].score = np.array([0.0, 0.5, 1.0])
    data = export_coco(tmp_path / "a.json", imgs, NAMES, min_score=1e-6)
    assert len(data["annotations"]) == 5
    assert [a["id"] for a in data["annotations"]] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="class outside"):
        export_coco(tmp_path / "b.json", [CocoImage("x", "x.jpg", imgs[0].labels, np.ones(3),
                                                    np.array([0, 1, 5]))], NAMES)


def test_semantic_segments_split_components() -> None:
    sem = np.zeros((12, 14), np.uint8)
    sem[1:4, 1:4] = 1
    sem[6:10, 1:4] = 1         # second component of class 0
    sem[1:5, 8:12] = 3
    sem[4, 8:12] = 255         # void: no segment
    labels, score, cls = semantic_segments(sem)
    assert cls.tolist() == [0, 2, 0] and score.tolist() == [1.0, 1.0, 1.0]
    assert [int((labels == i + 1).sum()) for i in range(3)] == [9, 12, 12]
    assert not labels[sem == 255].any() and not labels[sem == 0].any()
    rle = mask_utils.encode(np.asfortranarray((labels == 2).astype(np.uint8)))
    assert mask_utils.area(rle) == 12
