"""Confusion matrices, IoU and the one-pass threshold sweep against direct computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from misc.eval.metrics import (
    ThresholdSweep,
    confusion_matrix,
    evaluate_maps,
    iou_per_class,
    mean_iou,
    summary,
)
from misc.io.maps import load_maps, save_maps
from misc.io.png import save_png


def _brute_confusion(pred, gt, n, ignore_pred=None):
    conf = np.zeros((n, n), np.int64)
    for p, g in zip(pred.ravel(), gt.ravel()):
        if g == 255 or (ignore_pred is not None and p == ignore_pred):
            continue
        conf[g, p] += 1
    return conf


@pytest.mark.parametrize("seed", range(3))
def test_confusion_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 5
    gt = rng.integers(0, n, (13, 17)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.2] = 255
    pred = rng.integers(0, n, gt.shape).astype(np.uint8)
    np.testing.assert_array_equal(confusion_matrix(pred, gt, n), _brute_confusion(pred, gt, n))
    pred[rng.random(gt.shape) < 0.2] = 255
    np.testing.assert_array_equal(confusion_matrix(pred, gt, n, ignore_pred=255),
                                  _brute_confusion(pred, gt, n, 255))


def test_confusion_rejects_out_of_range():
    gt = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="prediction"):
        confusion_matrix(np.full((2, 2), 255, np.uint8), gt, 3)  # 255 pred without ignore_pred
    with pytest.raises(ValueError, match="ground truth"):
        confusion_matrix(gt, np.full((2, 2), 7, np.uint8), 3)


def test_iou_hand_made():
    # gt:   0 0 1 1      pred: 0 1 1 1    class 2 absent everywhere
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    conf = confusion_matrix(pred, gt, 3)
    np.testing.assert_array_equal(conf, [[1, 1, 0], [0, 2, 0], [0, 0, 0]])
    iou = iou_per_class(conf)
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(2 / 3)
    assert math.isnan(iou[2])
    assert mean_iou(conf) == pytest.approx((1 / 2 + 2 / 3) / 2)
    s = summary(conf, ["bg", "a", "b"])
    assert s["miou"] == pytest.approx(7 / 12) and s["iou"]["b"] is None


def _direct_confusion(scores, keys, gt, t, n):
    """The reference's way: pad with the threshold (float32), argmax, keys_pad, bincount."""
    padded = np.pad(scores, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=t)
    keys_pad = np.pad(np.asarray(keys) + 1, (1, 0), mode="constant")
    return confusion_matrix(keys_pad[np.argmax(padded, axis=0)], gt, n)


def _random_images(rng, n, count, shape=(9, 11)):
    thresholds = [0.05, 0.15, 0.25, 0.3, 0.3, 0.95, 0.0, 1.0]  # unsorted, duplicate, edges
    images = []
    for k in range(count):
        kk = 0 if k % 4 == 3 else int(rng.integers(1, 4))
        keys = np.sort(rng.choice(n - 1, kk, replace=False)).astype(np.int64)
        # quantised scores give ties between channels and exact hits on thresholds
        scores = rng.choice(np.array([0.0, 0.05, 0.15, 0.2, 0.25, 0.3, 0.5, 0.95, 1.0],
                                     np.float32), (kk,) + shape)
        scores[:, 0, :] = np.float32(0.3) if kk else scores[:, 0, :]  # channel tie at 0.3
        gt = rng.integers(0, n, shape).astype(np.uint8)
        gt[rng.random(shape) < 0.1] = 255
        images.append((scores, keys, gt))
    return thresholds, images


def test_threshold_sweep_equals_direct():
    rng = np.random.default_rng(0)
    n = 6
    thresholds, images = _random_images(rng, n, 12)
    sweep = ThresholdSweep(n, thresholds)
    for s, k, g in images:
        sweep.add(s, k, g)
    conf = sweep.confusions()
    assert conf.shape == (len(thresholds), n, n)
    for ti, t in enumerate(thresholds):
        direct = sum(_direct_confusion(s, k, g, t, n) for s, k, g in images)
        np.testing.assert_array_equal(conf[ti], direct, err_msg=f"threshold {t}")
    np.testing.assert_allclose(sweep.mious(), [mean_iou(c) for c in conf])
    t_best, m_best = sweep.best()
    assert m_best == pytest.approx(np.nanmax(sweep.mious()))
    assert t_best in np.asarray(thresholds, np.float32)


def test_threshold_sweep_float32_tie_goes_to_background():
    # 0.1 is not representable; as float32 both sides round the same way -> tie -> background
    sweep = ThresholdSweep(2, [0.1])
    sweep.add(np.full((1, 1, 2), 0.1, np.float32), np.array([0]), np.array([[1, 1]], np.uint8))
    np.testing.assert_array_equal(sweep.confusions()[0], [[0, 0], [2, 0]])


def test_evaluate_maps_drops_background_and_threads(tmp_path):
    rng = np.random.default_rng(1)
    n = 5
    thresholds, images = _random_images(rng, n, 8)
    ids = [f"im{i}" for i in range(len(images))]
    for i, (s, k, g) in zip(ids, images):
        bg = rng.random((1,) + s.shape[1:]).astype(np.float32)  # AMN-style channel 0
        hr = np.concatenate([bg, s])
        save_maps(tmp_path / "amn" / f"{i}.npz", k, hr[:, ::4, ::4], hr)
        save_maps(tmp_path / "cam" / f"{i}.npz", k, s[:, ::4, ::4], s)
        save_png(tmp_path / "gt" / f"{i}.png", g)
    ref = ThresholdSweep(n, thresholds)  # of the stored (16-bit) values
    for i, (_, k, g) in zip(ids, images):
        ref.add(load_maps(tmp_path / "cam" / f"{i}.npz")["high_res"], k, g)
    for map_dir, drop in (("cam", False), ("amn", True)):
        for workers in (1, 3):
            got = evaluate_maps(ids, tmp_path / map_dir, tmp_path / "gt", n, thresholds,
                                drop, num_workers=workers)
            np.testing.assert_array_equal(got.confusions(), ref.confusions())
    with pytest.raises(FileNotFoundError, match="make_cam"):
        evaluate_maps(["missing"], tmp_path / "cam", tmp_path / "gt", n, thresholds, False)
