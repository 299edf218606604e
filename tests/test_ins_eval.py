"""misc.eval.ins_eval: VOC mask AP (all-point, the reference evaluator's default) against a brute-force
computation written here, on hand-made cases (docs/pipeline.md §3.12)."""
from __future__ import annotations

import numpy as np
import pytest

from misc.eval.ins_eval import (
    GtInstances,
    InsSegEvaluator,
    average_precision,
    eval_ins_seg,
    eval_ins_seg_files,
    gt_instances,
    iou_matrix,
    mask_iou,
    summary,
)
from misc.io.png import save_png
from misc.irn.ins_seg import InstanceResult, save_instances

THRESHOLDS = (0.5, 0.25, 0.75)


# ------------------------------------ brute force -------------------------------------------

def brute_ap(images: list[dict], n_classes: int, thresh: float) -> np.ndarray:
    """images: dicts with pred_masks (N,H,W), pred_score, pred_cls, gt_masks (M,H,W), gt_cls.
    Greedy VOC matching over all detections of a class by descending score (scores distinct),
    AP = sum over true positives of 1/n_pos * max precision at that rank or later."""
    ap = np.full(n_classes, np.nan)
    for c in range(n_classes):
        n_pos = sum(int(np.sum(np.asarray(im["gt_cls"]) == c)) for im in images)
        if n_pos == 0:
            continue
        dets = [(float(s), k, i) for k, im in enumerate(images)
                for i, (s, pc) in enumerate(zip(im["pred_score"], im["pred_cls"])) if pc == c]
        dets.sort(key=lambda d: -d[0])
        used, hits = set(), []
        for _, k, i in dets:
            im, pred = images[k], images[k]["pred_masks"][i]
            best, best_iou = None, -1.0
            for g, (gm, gc) in enumerate(zip(im["gt_masks"], im["gt_cls"])):
                if gc != c:
                    continue
                iou = np.logical_and(pred, gm).sum() / np.logical_or(pred, gm).sum()
                if iou > best_iou:
                    best, best_iou = g, iou
            hit = best is not None and best_iou >= thresh and (k, best) not in used
            if hit:
                used.add((k, best))
            hits.append(hit)
        prec = [sum(hits[:r + 1]) / (r + 1) for r in range(len(hits))]
        ap[c] = sum(max(prec[r:]) / n_pos for r in range(len(hits)) if hits[r])
    return ap


def evaluate(images: list[dict], n_classes: int, use_07: bool = False) -> dict:
    ev = InsSegEvaluator(n_classes, THRESHOLDS, use_07)
    for im in images:
        ev.add(im["pred_score"], im["pred_cls"], im["gt_cls"],
               mask_iou(im["pred_masks"], im["gt_masks"]))
    return ev.result()


def check_against_brute(images: list[dict], n_classes: int) -> dict:
    res = evaluate(images, n_classes)
    for t in THRESHOLDS:
        want = brute_ap(images, n_classes, t)
        np.testing.assert_allclose(res[t]["ap"], want, rtol=1e-12, atol=1e-12)
        if np.isfinite(want).any():
            assert res[t]["map"] == pytest.approx(np.nanmean(want))
    return res


def box(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def image(preds: list[tuple[np.ndarray, float, int]], gts: list[tuple[np.ndarray, int]]) -> dict:
    shape = (gts or preds)[0][0].shape
    return {"pred_masks": np.array([p[0] for p in preds]).reshape(-1, *shape),
            "pred_score": np.array([p[1] for p in preds], np.float32),
            "pred_cls": np.array([p[2] for p in preds], np.int64),
            "gt_masks": np.array([g[0] for g in gts]).reshape(-1, *shape),
            "gt_cls": np.array([g[1] for g in gts], np.int64)}


S = (10, 10)


# --------------------------------------- cases ----------------------------------------------

def test_no_detections() -> None:
    res = check_against_brute([image([], [(box(S, 0, 4, 0, 4), 0), (box(S, 5, 9, 5, 9), 1)])], 3)
    for t in THRESHOLDS:
        assert res[t]["ap"][:2].tolist() == [0.0, 0.0] and np.isnan(res[t]["ap"][2])
        assert res[t]["map"] == 0.0


def test_all_wrong_class() -> None:
    gt = box(S, 0, 5, 0, 5)
    res = check_against_brute([image([(gt, 0.9, 1), (gt, 0.8, 2)], [(gt, 0)])], 3)
    for t in THRESHOLDS:
        assert res[t]["ap"][0] == 0.0 and np.isnan(res[t]["ap"][1:]).all()
        assert res[t]["map"] == 0.0


def test_duplicate_detections() -> None:
    gt = box(S, 0, 5, 0, 5)                      # 25 px
    partial = box(S, 0, 5, 0, 3)                 # IoU 15/25 = 0.6
    res = check_against_brute([image([(partial, 0.9, 0), (gt, 0.8, 0)], [(gt, 0)])], 1)
    # 0.25 / 0.5: first TP, the duplicate FP -> precision 1 at recall 1
    assert res[0.5]["ap"][0] == 1.0 and res[0.25]["ap"][0] == 1.0
    # 0.75: the higher-scored partial is FP, then TP -> precision 1/2 at recall 1
    assert res[0.75]["ap"][0] == 0.5


def test_one_gt_split_in_two() -> None:
    gt = box(S, 0, 4, 0, 5)                      # 20 px
    halves = [(box(S, 0, 2, 0, 5), 0.7, 0), (box(S, 2, 4, 0, 5), 0.6, 0)]  # IoU exactly 0.5
    res = check_against_brute([image(halves, [(gt, 0)])], 1)
    assert res[0.5]["ap"][0] == 1.0 and res[0.25]["ap"][0] == 1.0 and res[0.75]["ap"][0] == 0.0


def test_no_fallback_to_second_best_gt() -> None:
    g1, g2 = box(S, 0, 4, 0, 4), box(S, 0, 4, 4, 8)   # 16 px each
    p1 = g1.copy()
    p2 = box(S, 0, 4, 1, 6)                          # IoU g1 12/24 = .5, g2 8/24 = .33
    res = check_against_brute([image([(p1, 0.9, 0), (p2, 0.8, 0)], [(g1, 0), (g2, 0)])], 1)
    assert res[0.25]["ap"][0] == 0.5                 # p2 takes g1 (taken) -> FP, not g2


def test_mixed_case() -> None:
    rng = np.random.default_rng(3)
    shape = (16, 16)
    images, scores = [], iter(rng.permutation(200) / 200 + 0.001)
    for _ in range(8):
        gts = []
        for _ in range(int(rng.integers(0, 4))):
            (y, x), (hh, ww) = rng.integers(0, 11, 2), rng.integers(3, 7, 2)
            gts.append((box(shape, y, y + hh, x, x + ww), int(rng.integers(0, 3))))
        preds = []
        for gm, gc in gts:
            for _ in range(int(rng.integers(0, 3))):  # jittered copies, sometimes wrong class
                m = np.roll(gm, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
                preds.append((m, float(next(scores)), gc if rng.random() < 0.8 else 3))
        for _ in range(int(rng.integers(0, 3))):      # pure false positives
            preds.append((box(shape, 0, int(rng.integers(1, 10)), 0, 3), float(next(scores)),
                          int(rng.integers(0, 4))))
        images.append(image(preds, gts) if gts or preds
                      else image([], [(box(shape, 0, 1, 0, 1), 0)]))
    res = check_against_brute(images, 4)
    assert np.isfinite(res[0.5]["ap"]).sum() >= 2 and 0 < res[0.5]["map"] < 1
    assert res[0.25]["map"] >= res[0.5]["map"] >= res[0.75]["map"]
    assert res[0.25]["map"] > res[0.75]["map"]


def test_label_image_path_matches_masks_and_gt_from_pngs() -> None:
    obj = np.zeros((8, 10), np.uint8)
    cls = np.zeros((8, 10), np.uint8)
    obj[0:3, 0:4], cls[0:3, 0:4] = 1, 3        # instance 1 of class 2
    obj[4:8, 0:4], cls[4:8, 0:4] = 2, 3        # instance 2 of class 2
    obj[0:4, 6:10], cls[0:4, 6:10] = 3, 1      # instance 3 of class 0
    obj[3, :4] = cls[3, :4] = 255              # void band
    gt = gt_instances(obj, cls)
    assert gt.cls.tolist() == [2, 2, 0] and gt.labels.max() == 3 and gt.void.sum() == 4
    pred = np.zeros((8, 10), np.int64)
    pred[0:4, 0:4] = 1                          # covers instance 1 and the void row
    pred[4:8, 0:4] = 2
    pred[0:4, 6:10] = 3
    score, pcls = np.array([0.9, 0.8, 0.7]), np.array([2, 2, 0])
    iou = iou_matrix(pred, 3, gt)
    masks = pred[None] == np.arange(1, 4)[:, None, None]
    gt_masks = gt.labels[None] == np.arange(1, 4)[:, None, None]
    assert np.array_equal(iou, mask_iou(masks, gt_masks)) and iou.dtype == np.float32
    assert iou[0, 0] == pytest.approx(12 / 16)  # void pixels count in the union
    assert iou_matrix(pred, 3, gt, ignore_void=True)[0, 0] == 1.0
    res = eval_ins_seg([((pred, score, pcls), gt)], 3)
    assert res[0.75]["ap"][2] == 1.0 and res[0.75]["ap"][0] == 1.0 and np.isnan(res[0.75]["ap"][1])
    res = eval_ins_seg([((pred, score, pcls), gt)], 3, thresholds=(0.8,))
    # 12/16 < 0.8 for instance 1: FP then TP, recall 1/2 -> 0.25
    assert res[0.8]["ap"][2] == 0.25 and res[0.8]["ap"][0] == 1.0
    with pytest.raises(ValueError, match="no foreground"):
        gt_instances(np.full((2, 2), 1, np.uint8), np.zeros((2, 2), np.uint8))


def test_use_07_metric() -> None:
    # precision 1 at recall 0.5, then 2/3 at recall 1: all-point 0.5 + 0.5*2/3; 11-point
    # (6 * 1 + 5 * 2/3) / 11
    prec, rec = np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])
    assert average_precision(prec, rec) == pytest.approx(0.5 + 1 / 3)
    assert average_precision(prec, rec, use_07_metric=True) == pytest.approx((6 + 5 * 2 / 3) / 11)
    gt = box(S, 0, 5, 0, 5)
    images = [image([(gt, 0.9, 0), (box(S, 6, 9, 6, 9), 0.8, 0)],
                    [(gt, 0), (box(S, 0, 3, 6, 9), 0)])]
    assert evaluate(images, 1, use_07=True)[0.5]["ap"][0] == pytest.approx(6 / 11)
    assert evaluate(images, 1)[0.5]["ap"][0] == pytest.approx(0.5)


def test_unknown_class_raises() -> None:
    ev = InsSegEvaluator(2)
    with pytest.raises(ValueError, match="outside"):
        ev.add(np.array([0.5]), np.array([2]), np.zeros(0, np.int64), np.zeros((1, 0)))
    assert isinstance(GtInstances(np.zeros((1, 1)), np.zeros(0), np.zeros((1, 1), bool)),
                      GtInstances)


def test_eval_from_files_and_summary(tmp_path) -> None:
    obj = np.zeros((6, 8), np.uint8)
    cls = np.zeros((6, 8), np.uint8)
    obj[0:3, 0:3], cls[0:3, 0:3] = 1, 2
    obj[3:6, 4:8], cls[3:6, 4:8] = 2, 2
    save_png(tmp_path / "obj" / "a.png", obj)
    save_png(tmp_path / "cls" / "a.png", cls)
    labels = np.zeros((6, 8), np.uint16)
    labels[0:3, 0:3] = 1                        # exact on instance 1, instance 2 missed
    save_instances(tmp_path / "pred" / "a.npz",
                   InstanceResult(labels, np.array([0.9], np.float32), np.array([1])))
    res = eval_ins_seg_files(["a"], tmp_path / "pred", tmp_path / "obj", tmp_path / "cls", 2)
    assert res[0.5]["ap"][1] == 0.5 and np.isnan(res[0.5]["ap"][0]) and res[0.5]["map"] == 0.5
    out = summary(res, ["cat", "dog"])
    assert out["map@0.5"] == 0.5 and out["ap@0.25"] == {"cat": None, "dog": 0.5}
