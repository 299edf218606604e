"""Instance-segmentation evaluation: VOC mask AP at several IoU thresholds in one pass
(docs/pipeline.md §3.12, eval_ins_seg).

Protocol (that of the reference's evaluator, chainercv's `eval_instance_segmentation_voc` with its
default `use_07_metric=False`, no difficult flags):

* GT instances: SegmentationObject ids 1..254 (0 and 255 are not instances); an instance's class
  is the smallest SegmentationClass value under it, minus 1. Void (255) pixels belong to no GT
  instance and are NOT ignored: a prediction covering them pays for them in the union
  (`ignore_void=True` is an opt-in variant that drops void pixels from every mask).
* Per image and class, predictions sorted by descending score (`np.argsort(-)` order, ties as
  the reference's `argsort()[::-1]`); each takes the GT of highest IoU (first on ties, IoU in
  float32); a match needs IoU >= t and that GT not taken yet by a higher-scored prediction,
  otherwise it is a false positive (it never falls back to its second-best GT).
* Per class, all images' predictions sorted by score; precision/recall; AP = area under the
  monotone (right-to-left max) precision envelope over all recall points (VOC 2010+), or the
  11-point VOC07 average with `use_07_metric=True`. Classes without GT get nan; mAP = nanmean.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from misc.io.png import load_png
from misc.irn.ins_seg import load_instances

VOID = 255
DEFAULT_THRESHOLDS = (0.5, 0.25, 0.75)


@dataclasses.dataclass
class GtInstances:
    """labels: (H, W) int32, 0 none, i + 1 = instance i; cls: (n,) int64 0-based; void: (H, W)
    bool, the 255 pixels."""

    labels: np.ndarray
    cls: np.ndarray
    void: np.ndarray


def gt_instances(object_map: np.ndarray, class_map: np.ndarray) -> GtInstances:
    """GT instances from a SegmentationObject and a SegmentationClass map, both (H, W) uint8."""
    obj = np.asarray(object_map).astype(np.int64)
    cls_map = np.asarray(class_map).astype(np.int64)
    if obj.shape != cls_map.shape:
        raise ValueError(f"object map {obj.shape} and class map {cls_map.shape} differ in size")
    ids = np.unique(obj[(obj != 0) & (obj != VOID)])
    lut = np.zeros(256, np.int32)
    lut[ids] = np.arange(1, ids.size + 1)
    labels = lut[obj]
    classes = []
    for i in ids:
        under = cls_map[(obj == i) & (cls_map != 0) & (cls_map != VOID)]
        if under.size == 0:
            raise ValueError(f"instance {i} covers no foreground class pixel")
        classes.append(int(under.min()) - 1)
    return GtInstances(labels, np.array(classes, np.int64), obj == VOID)


def load_gt_instances(object_png: str | Path, class_png: str | Path) -> GtInstances:
    """`gt_instances` of two PNG files (palette indices)."""
    return gt_instances(load_png(object_png), load_png(class_png))


def iou_matrix(pred_labels: np.ndarray, n_pred: int, gt: GtInstances,
               ignore_void: bool = False) -> np.ndarray:
    """(n_pred, n_gt) float32 mask IoU of disjoint predictions given as a label image
    (0 none, i + 1 = prediction i) against the GT instances (also disjoint), by one bincount."""
    pred = np.asarray(pred_labels).astype(np.int64)
    if pred.shape != gt.labels.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.labels.shape} differ "
                         f"in size")
    n_gt = gt.cls.size
    g = gt.labels.astype(np.int64)
    if ignore_void:
        pred, g = pred[~gt.void], g[~gt.void]
    joint = np.bincount((pred * (n_gt + 1) + g).ravel(), minlength=(n_pred + 1) * (n_gt + 1))
    joint = joint.reshape(n_pred + 1, n_gt + 1)
    inter = joint[1:, 1:]
    union = joint[1:].sum(1)[:, None] + joint[:, 1:].sum(0)[None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return (inter / union).astype(np.float32)


def mask_iou(pred_masks: np.ndarray, gt_masks: np.ndarray) -> np.ndarray:
    """(n_pred, n_gt) float32 IoU of arbitrary (possibly overlapping) bool masks (N, H, W)."""
    p, g = np.asarray(pred_masks, bool), np.asarray(gt_masks, bool)
    p = p.reshape(p.shape[0], int(np.prod(p.shape[1:]))).astype(np.int64)
    g = g.reshape(g.shape[0], int(np.prod(g.shape[1:]))).astype(np.int64)
    inter = p @ g.T
    union = p.sum(1)[:, None] + g.sum(1)[None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return (inter / union).astype(np.float32)


def average_precision(prec: np.ndarray, rec: np.ndarray, use_07_metric: bool = False) -> float:
    """AP of one class from precision / recall in score order (arrays of equal length)."""
    prec = np.nan_to_num(np.asarray(prec, np.float64))
    rec = np.asarray(rec, np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            ap += (prec[rec >= t].max() if (rec >= t).any() else 0.0) / 11
        return float(ap)
    mpre = np.maximum.accumulate(np.concatenate([[0.0], prec, [0.0]])[::-1])[::-1]
    mrec = np.concatenate([[0.0], rec, [1.0]])
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


class InsSegEvaluator:
    """Accumulates matches image by image; `result()` gives AP per class and mAP per threshold."""

    def __init__(self, n_classes: int, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 use_07_metric: bool = False) -> None:
        self.n_classes, self.thresholds = n_classes, tuple(float(t) for t in thresholds)
        self.use_07_metric = use_07_metric
        self.n_pos: dict[int, int] = defaultdict(int)
        self.scores: dict[int, list[np.ndarray]] = defaultdict(list)
        self.matches: dict[tuple[float, int], list[np.ndarray]] = defaultdict(list)

    def add(self, pred_score: np.ndarray, pred_cls: np.ndarray, gt_cls: np.ndarray,
            iou: np.ndarray) -> None:
        """One image: scores (N,), 0-based classes (N,) and (M,) of predictions and GT, and
        their IoU (N, M) float."""
        pred_score, pred_cls = np.asarray(pred_score), np.asarray(pred_cls, np.int64)
        gt_cls, iou = np.asarray(gt_cls, np.int64), np.asarray(iou)
        if iou.shape != (pred_cls.size, gt_cls.size):
            raise ValueError(f"IoU {iou.shape} for {pred_cls.size} predictions and "
                             f"{gt_cls.size} GT instances")
        for c in np.unique(np.concatenate([pred_cls, gt_cls])):
            self._add_class(int(c), pred_score, pred_cls == c, gt_cls == c, iou)

    def _add_class(self, c: int, score: np.ndarray, pred_keep: np.ndarray, gt_keep: np.ndarray,
                   iou: np.ndarray) -> None:
        if not 0 <= c < self.n_classes:
            raise ValueError(f"class {c} outside [0, {self.n_classes})")
        order = np.flatnonzero(pred_keep)[score[pred_keep].argsort()[::-1]]
        self.n_pos[c] += int(gt_keep.sum())
        self.scores[c].append(score[order])
        sub = iou[order][:, gt_keep]
        for t in self.thresholds:
            self.matches[t, c].append(greedy_match(sub, t))

    def add_labels(self, pred_labels: np.ndarray, pred_score: np.ndarray,
                   pred_cls: np.ndarray, gt: GtInstances, ignore_void: bool = False) -> None:
        """One image with disjoint predictions as a label image (0 none, i + 1 prediction i)."""
        self.add(pred_score, pred_cls, gt.cls,
                 iou_matrix(pred_labels, len(pred_score), gt, ignore_void))

    def result(self) -> dict[float, dict]:
        """{threshold: {'ap': (n_classes,) float64 with nan for classes without GT, 'map'}}."""
        out = {}
        for t in self.thresholds:
            ap = np.full(self.n_classes, np.nan)
            for c, n_pos in self.n_pos.items():
                if n_pos == 0:
                    continue
                score = np.concatenate(self.scores[c])
                match = np.concatenate(self.matches[t, c])[score.argsort()[::-1]]
                tp, fp = np.cumsum(match == 1), np.cumsum(match == 0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    prec = tp / (fp + tp)
                ap[c] = average_precision(prec, tp / n_pos, self.use_07_metric)
            out[t] = {"ap": ap, "map": float(np.nanmean(ap)) if np.isfinite(ap).any()
                      else float("nan")}
        return out


def greedy_match(iou: np.ndarray, thresh: float) -> np.ndarray:
    """(N,) int8 1 = true positive for predictions in score order against (N, M) IoU."""
    match = np.zeros(iou.shape[0], np.int8)
    if iou.shape[1] == 0:
        return match
    best = iou.argmax(axis=1)
    best[iou.max(axis=1) < thresh] = -1
    taken = np.zeros(iou.shape[1], bool)
    for k, g in enumerate(best):
        if g >= 0:
            match[k] = not taken[g]
            taken[g] = True
    return match


def eval_ins_seg(pairs: Iterable[tuple[tuple[np.ndarray, np.ndarray, np.ndarray], GtInstances]],
                 n_classes: int, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 use_07_metric: bool = False, ignore_void: bool = False) -> dict[float, dict]:
    """mAP over images: pairs of ((labels (H, W), score (N,), class (N,)), GtInstances).
    Returns `InsSegEvaluator.result()`."""
    ev = InsSegEvaluator(n_classes, thresholds, use_07_metric)
    for (labels, score, cls), gt in pairs:
        ev.add_labels(labels, score, cls, gt, ignore_void)
    return ev.result()


def eval_ins_seg_files(ids: Iterable[str], pred_dir: str | Path, object_dir: str | Path,
                       class_dir: str | Path, n_classes: int,
                       thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                       use_07_metric: bool = False, ignore_void: bool = False) -> dict[float, dict]:
    """`eval_ins_seg` over files: <pred_dir>/<id>.npz (misc.irn.ins_seg.save_instances) against
    <object_dir>/<id>.png (SegmentationObject) and <class_dir>/<id>.png (SegmentationClass)."""
    def pairs():
        for i in ids:
            res = load_instances(Path(pred_dir) / f"{i}.npz")
            yield (res.labels, res.score, res.cls), load_gt_instances(
                Path(object_dir) / f"{i}.png", Path(class_dir) / f"{i}.png")
    return eval_ins_seg(pairs(), n_classes, thresholds, use_07_metric, ignore_void)


def summary(result: dict[float, dict], class_names: Sequence[str]) -> dict:
    """JSON-ready {'map@0.5': float | None, 'ap@0.5': {name: float | None}, ...}."""
    out = {}
    for t, r in result.items():
        if len(class_names) != len(r["ap"]):
            raise ValueError(f"{len(class_names)} class names for {len(r['ap'])} classes")
        out[f"map@{t:g}"] = None if np.isnan(r["map"]) else r["map"]
        out[f"ap@{t:g}"] = {n: (None if np.isnan(v) else float(v))
                            for n, v in zip(class_names, r["ap"])}
    return out
