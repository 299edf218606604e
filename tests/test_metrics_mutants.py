"""misc.eval.metrics, the parts the mutation run (docs/mutation.md) found unpinned: BAO's FP / FN
shares, the classifier mAP, label-PNG scoring with holes, the sweep's input checks, merge and
tie rules; every value worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from misc.eval.metrics import (
    ThresholdSweep,
    confusion_matrix,
    error_rates,
    evaluate_label_pngs,
    iou_per_class,
    mean_average_precision,
    mean_iou,
    summary,
)
from misc.io.png import save_png

# rows GT, columns prediction: class 0 T=4 P=3 TP=2; class 1 T=2 P=3 TP=1; class 2 absent
CONF = np.array([[2, 2, 0], [1, 1, 0], [0, 0, 0]])


def test_error_rates_are_shares_of_the_union():
    # class 0: U = 4 + 3 - 2 = 5, FP = (3-2)/5, FN = (4-2)/5; class 1: U = 4, FP 2/4, FN 1/4
    out = error_rates(CONF, ["bg", "a", "b"])
    assert out["fp"]["bg"] == pytest.approx(1 / 5) and out["fn"]["bg"] == pytest.approx(2 / 5)
    assert out["fp"]["a"] == pytest.approx(2 / 4) and out["fn"]["a"] == pytest.approx(1 / 4)
    assert out["fp"]["b"] is None and out["fn"]["b"] is None
    assert out["mean_fp"] == pytest.approx((1 / 5 + 2 / 4) / 2)
    assert out["mean_fn"] == pytest.approx((2 / 5 + 1 / 4) / 2)
    iou = iou_per_class(CONF)
    assert iou[0] + out["fp"]["bg"] + out["fn"]["bg"] == pytest.approx(1.0)


def test_error_rates_of_an_empty_confusion_are_nan_and_names_must_fit():
    out = error_rates(np.zeros((2, 2)), ["bg", "a"])
    assert math.isnan(out["mean_fp"]) and math.isnan(out["mean_fn"])
    with pytest.raises(ValueError, match="2 class names for a 3-class"):
        error_rates(CONF, ["bg", "a"])


def test_summary_needs_one_name_per_class_and_empty_confusion_has_nan_miou():
    with pytest.raises(ValueError, match="2 class names for a 3-class"):
        summary(CONF, ["bg", "a"])
    assert math.isnan(mean_iou(np.zeros((2, 2))))
    s = summary(CONF, ["bg", "a", "b"])
    assert s["iou"]["bg"] == pytest.approx(2 / 5) and s["iou"]["a"] == pytest.approx(1 / 4)


def test_mean_average_precision_by_hand():
    # class 0 has no positive and is left out (it comes first: the later classes still count)
    # class 1: .9 (pos) .5 (neg) .1 (neg): AP 1; class 2: .8 (neg) .6 (pos) .2 (pos):
    # AP = (1/2 + 2/3) / 2
    scores = np.array([[0.3, 0.9, 0.8], [0.2, 0.5, 0.6], [0.1, 0.1, 0.2]])
    labels = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 1]])
    assert mean_average_precision(scores, labels) == pytest.approx((1 + (1 / 2 + 2 / 3) / 2) / 2)


def test_mean_average_precision_ranks_ties_pessimistically_and_nan_without_positives():
    # equal scores: the negative is ranked first, so the positive is at rank 2: AP 1/2
    scores = np.array([[0.5], [0.5]])
    assert mean_average_precision(scores, np.array([[1], [0]])) == pytest.approx(0.5)
    assert mean_average_precision(scores, np.array([[0], [1]])) == pytest.approx(0.5)
    assert math.isnan(mean_average_precision(scores, np.zeros((2, 1), int)))


def test_label_pngs_confusion_and_coverage_with_holes(tmp_path):
    gt = np.array([[0, 1, 1, 255]], np.uint8)
    pred = np.array([[0, 255, 1, 1]], np.uint8)   # a hole on one GT-valid pixel
    save_png(tmp_path / "gt" / "a.png", gt)
    save_png(tmp_path / "pred" / "a.png", pred)
    save_png(tmp_path / "gt" / "b.png", np.array([[1, 0]], np.uint8))
    save_png(tmp_path / "pred" / "b.png", np.array([[1, 1]], np.uint8))
    conf, coverage = evaluate_label_pngs(["a", "b"], tmp_path / "pred", tmp_path / "gt", 2,
                                         ignore_pred=255)
    np.testing.assert_array_equal(conf, [[1, 1], [0, 2]])
    assert coverage == pytest.approx(4 / 5)  # 5 GT-valid pixels, one in a hole
    conf, coverage = evaluate_label_pngs(["b"], tmp_path / "pred", tmp_path / "gt", 2)
    np.testing.assert_array_equal(conf, [[0, 1], [0, 1]])
    assert coverage == 1.0
    save_png(tmp_path / "pred" / "c.png", np.zeros((2, 2), np.uint8))
    save_png(tmp_path / "gt" / "c.png", np.zeros((1, 2), np.uint8))
    with pytest.raises(ValueError, match="image c"):
        evaluate_label_pngs(["c"], tmp_path / "pred", tmp_path / "gt", 2)


def test_confusion_rejects_negative_values_and_shape_mismatch():
    with pytest.raises(ValueError, match=r"holds values \[-1\]"):
        confusion_matrix(np.array([-1, 0]), np.array([0, 0]), 2)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros(3, int), np.zeros(2, int), 2)
    # n_classes - 1 is inside
    np.testing.assert_array_equal(confusion_matrix(np.array([1]), np.array([1]), 2),
                                  [[0, 0], [0, 1]])


def test_sweep_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least one threshold"):
        ThresholdSweep(2, [])
    sweep = ThresholdSweep(3, [0.5])
    with pytest.raises(ValueError, match="do not fit"):
        sweep.add(np.zeros((2, 2, 2)), np.array([0]), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="class keys"):
        sweep.add(np.zeros((1, 2, 2)), np.array([2]), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="ground truth"):
        sweep.add(np.zeros((1, 2, 2)), np.array([0]), np.full((2, 2), 3, np.uint8))
    with pytest.raises(ValueError, match="cannot merge"):
        sweep.merge(ThresholdSweep(3, [0.4]))
    with pytest.raises(ValueError, match="cannot merge"):
        sweep.merge(ThresholdSweep(2, [0.5]))


def test_sweep_foreground_needs_a_score_above_the_threshold_and_merge_adds_counts():
    # one pixel scored 0.6 for key 1 (class 2), GT 2; thresholds 0.6 and 0.5
    a = ThresholdSweep(3, [0.6, 0.5])
    a.add(np.full((1, 1, 1), 0.6, np.float32), np.array([1]), np.array([[2]], np.uint8))
    b = ThresholdSweep(3, [0.6, 0.5])
    b.add(np.full((1, 1, 1), 0.9, np.float32), np.array([0]), np.array([[1]], np.uint8))
    a.merge(b)
    conf = a.confusions()
    # at 0.6 the 0.6 pixel is background (not above), the 0.9 pixel class 1
    np.testing.assert_array_equal(conf[0], [[0, 0, 0], [0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(conf[1], [[0, 0, 0], [0, 1, 0], [0, 0, 1]])
    # mIoU at 0.6: classes 0, 1, 2 -> 0, 1, 0; at 0.5: class 0 absent, 1 and 2 exact -> 1
    np.testing.assert_allclose(a.mious(), [1 / 3, 1.0])
    assert a.best() == (pytest.approx(0.5), 1.0)


def test_sweep_best_takes_the_first_threshold_on_ties():
    sweep = ThresholdSweep(2, [0.3, 0.2, 0.1])
    sweep.add(np.full((1, 1, 1), 0.9, np.float32), np.array([0]), np.array([[1]], np.uint8))
    t, m = sweep.best()
    assert t == pytest.approx(0.3) and m == 1.0  # every threshold: class 1 exact, class 0 absent


def test_error_rates_of_a_class_whose_union_is_one_pixel():
    conf = np.array([[1, 0], [0, 0]])  # class 0: one pixel, exact; class 1 absent
    out = error_rates(conf, ["bg", "a"])
    assert out["fp"]["bg"] == 0.0 and out["fn"]["bg"] == 0.0 and out["fp"]["a"] is None


def test_out_of_range_messages_list_the_first_ten_bad_values_including_n_classes():
    with pytest.raises(ValueError, match=r"holds values \[3\] outside \[0, 3\)"):
        confusion_matrix(np.array([3, 0]), np.array([0, 0]), 3)
    with pytest.raises(ValueError, match=r"holds values \[3, 4, 5, 6, 7, 8, 9, 10, 11, 12\] out"):
        confusion_matrix(np.arange(3, 14), np.zeros(11, int), 3)


def test_coverage_of_a_single_valid_pixel(tmp_path):
    save_png(tmp_path / "gt" / "a.png", np.array([[1, 255]], np.uint8))
    save_png(tmp_path / "pred" / "a.png", np.array([[1, 255]], np.uint8))
    _, coverage = evaluate_label_pngs(["a"], tmp_path / "pred", tmp_path / "gt", 2, 255)
    assert coverage == 1.0
