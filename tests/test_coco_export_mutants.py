"""misc.eval.coco_export, the cases the mutation run (docs/mutation.md) found unpinned: a segment
starting at the first pixel, the score floor and its default, the class bound, the COCO keys of
categories, info and detection results, all worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from misc.eval.coco_export import (
    CocoImage,
    coco_dataset,
    coco_results,
    export_coco,
    segment_annotations,
    semantic_segments,
)


def test_a_segment_starting_at_the_first_pixel_is_kept():
    sem = np.array([[2, 2, 0], [0, 0, 1]], np.uint8)
    labels, score, cls = semantic_segments(sem)
    assert labels.tolist() == [[1, 1, 0], [0, 0, 2]]
    assert cls.tolist() == [1, 0] and score.tolist() == [1.0, 1.0]


def test_segments_at_or_above_the_score_floor_are_exported_zero_included_by_default():
    labels = np.array([[1, 2, 3]])
    score = np.array([0.0, 0.5, 0.25])
    cls = np.array([0, 1, 0])
    assert [a["score"] for a in segment_annotations(labels, score, cls, 7, 10)] == [0.0, 0.5, 0.25]
    kept = segment_annotations(labels, score, cls, 7, 10, min_score=0.25)
    assert [(a["id"], a["image_id"], a["category_id"], a["score"]) for a in kept] == \
        [(10, 7, 2, 0.5), (11, 7, 1, 0.25)]
    assert kept[0]["bbox"] == [1.0, 0.0, 1.0, 1.0] and kept[0]["area"] == 1.0
    img = CocoImage("a", "a.jpg", labels, score, cls)
    assert len(coco_dataset([img], ["x", "y"])["annotations"]) == 3


def test_coco_dataset_keys_and_the_class_bound():
    img = CocoImage("a", "a.jpg", np.array([[1, 0]]), np.array([1.0]), np.array([1]))
    data = coco_dataset([img], ["x", "y"])
    assert data["categories"] == [{"id": 1, "name": "x", "supercategory": "object"},
                                  {"id": 2, "name": "y", "supercategory": "object"}]
    assert set(data["info"]) == {"description"}
    assert data["images"] == [{"id": 1, "file_name": "a.jpg", "name": "a", "height": 1,
                               "width": 2}]
    with pytest.raises(ValueError, match="class outside"):
        coco_dataset([CocoImage("b", "b.jpg", np.array([[1]]), np.array([1.0]), np.array([2]))],
                     ["x", "y"])
    with pytest.raises(ValueError, match="class outside"):
        coco_dataset([CocoImage("b", "b.jpg", np.array([[1]]), np.array([1.0]), np.array([-1]))],
                     ["x", "y"])


def test_coco_results_carry_segmentation_score_and_box():
    seg = {"size": [1, 2], "counts": "01"}
    dataset = {"annotations": [
        {"image_id": 3, "category_id": 2, "segmentation": seg, "score": 0.5, "bbox": [0, 0, 1, 1]},
        {"image_id": 4, "category_id": 1, "segmentation": seg, "bbox": [1, 0, 1, 1]}]}
    assert coco_results(dataset) == [
        {"image_id": 3, "category_id": 2, "segmentation": seg, "score": 0.5, "bbox": [0, 0, 1, 1]},
        {"image_id": 4, "category_id": 1, "segmentation": seg, "score": 1.0, "bbox": [1, 0, 1, 1]}]


def test_export_keeps_zero_score_segments_by_default(tmp_path):
    img = CocoImage("a", "a.jpg", np.array([[1, 2]]), np.array([0.0, 1.0]), np.array([0, 0]))
    data = export_coco(tmp_path / "a.json", [img], ["x"])
    assert [a["score"] for a in data["annotations"]] == [0.0, 1.0]
