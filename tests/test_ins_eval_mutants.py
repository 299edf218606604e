"""misc.eval.ins_eval, the cases the mutation run (docs/mutation.md) found unpinned: the defaults
(all-point AP, void pixels counted), classes without GT among classes with GT, an evaluation
without any GT, and the class-name check, with values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from misc.eval.ins_eval import InsSegEvaluator, eval_ins_seg_files, gt_instances, summary
from misc.io.png import save_png
from misc.irn.ins_seg import InstanceResult, save_instances


def test_the_default_ap_is_all_point_not_11_point():
    # one TP (score .9) then one FP (.8) for 2 GT: precision 1 at recall 1/2 -> all-point 0.5,
    # VOC07 11-point 6/11
    ev = InsSegEvaluator(1, (0.5,))
    ev.add(np.array([0.9, 0.8]), np.array([0, 0]), np.array([0, 0]),
           np.array([[1.0, 0.0], [0.0, 0.1]]))
    assert ev.result()[0.5]["ap"][0] == pytest.approx(0.5)


def _void_case():
    obj = np.array([[1, 1, 255, 0]], np.uint8)
    cls = np.array([[1, 1, 255, 0]], np.uint8)
    pred = np.array([[1, 1, 1, 0]], np.uint16)  # covers the instance and the void pixel
    return obj, cls, pred


def test_void_pixels_count_in_the_union_by_default():
    obj, cls, pred = _void_case()
    gt = gt_instances(obj, cls)
    ev = InsSegEvaluator(1, (0.7,))          # IoU 2/3 < 0.7 counting void, 1 without
    ev.add_labels(pred, np.array([0.9]), np.array([0]), gt)
    assert ev.result()[0.7]["ap"][0] == 0.0
    ev = InsSegEvaluator(1, (0.7,))
    ev.add_labels(pred, np.array([0.9]), np.array([0]), gt, ignore_void=True)
    assert ev.result()[0.7]["ap"][0] == 1.0


def test_files_are_scored_with_void_pixels_counted_by_default(tmp_path):
    obj, cls, pred = _void_case()
    save_png(tmp_path / "obj" / "a.png", obj)
    save_png(tmp_path / "cls" / "a.png", cls)
    save_instances(tmp_path / "pred" / "a.npz",
                   InstanceResult(pred, np.array([0.9], np.float32), np.array([0])))
    args = (["a"], tmp_path / "pred", tmp_path / "obj", tmp_path / "cls", 1, (0.7,))
    assert eval_ins_seg_files(*args)[0.7]["ap"][0] == 0.0
    assert eval_ins_seg_files(*args, ignore_void=True)[0.7]["ap"][0] == 1.0


def test_a_class_without_gt_does_not_hide_the_next_class():
    ev = InsSegEvaluator(2, (0.5,))
    # a class-0 prediction without class-0 GT, then an exact class-1 hit
    ev.add(np.array([0.9, 0.8]), np.array([0, 1]), np.array([1]), np.array([[0.0], [1.0]]))
    ap = ev.result()[0.5]["ap"]
    assert math.isnan(ap[0]) and ap[1] == 1.0


def test_no_gt_at_all_gives_a_nan_map_and_summary_none():
    ev = InsSegEvaluator(2, (0.5,))
    ev.add(np.array([0.9]), np.array([0]), np.zeros(0, np.int64), np.zeros((1, 0)))
    res = ev.result()
    assert math.isnan(res[0.5]["map"])
    assert summary(res, ["a", "b"]) == {"map@0.5": None, "ap@0.5": {"a": None, "b": None}}
    with pytest.raises(ValueError, match="1 class names for 2 classes"):
        summary(res, ["a"])
