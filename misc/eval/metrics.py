"""Semantic-segmentation metrics: confusion matrices by bincount and one-pass threshold sweeps.

Conventions (docs/pipeline.md §2.6): label maps hold 0 = background, c+1 = class c, 255 = ignore.
Confusion matrices are (n, n) int64 with rows = ground truth, columns = prediction.
IoU_c = N_cc / (row_c + col_c - N_cc); mIoU = nanmean over all n classes (background included).
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from misc.errors import BadInput
from misc.imutils import IGNORE
from misc.io.maps import load_maps
from misc.io.png import load_png


def _check_range(name: str, values: np.ndarray, n_classes: int) -> None:
    """Raise ValueError if `values` (already stripped of ignored pixels) leave [0, n_classes)."""
    if values.size and (values.min() < 0 or values.max() >= n_classes):
        bad = np.unique(values[(values < 0) | (values >= n_classes)])[:10]
        raise BadInput(f"{name} holds values {bad.tolist()} outside [0, {n_classes}) "
                         f"(n_classes={n_classes}; only {IGNORE} may mark ignored pixels): "
                         f"wrong class count or wrong label files?")


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, n_classes: int,
                     ignore_pred: int | None = None) -> np.ndarray:
    """(n, n) int64 confusion of one prediction against its ground truth.

    pred, gt: integer arrays of equal shape. GT pixels equal to 255 are skipped; if
    `ignore_pred` is given, prediction pixels equal to it are skipped as well (IR labels with
    holes). Any other value outside [0, n_classes) raises ValueError.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    keep = gt != IGNORE
    if ignore_pred is not None:
        keep &= pred != ignore_pred
    p, g = pred[keep].astype(np.int64), gt[keep].astype(np.int64)
    _check_range("ground truth", g, n_classes)
    _check_range("prediction", p, n_classes)
    return np.bincount(g * n_classes + p, minlength=n_classes ** 2).reshape(n_classes, n_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """(n,) float64 IoU per class from an (n, n) confusion; nan where a class is in neither."""
    conf = np.asarray(conf, np.float64)
    tp = np.diag(conf)
    denom = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """nanmean of `iou_per_class` (nan if no class occurs at all)."""
    iou = iou_per_class(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan


def summary(conf: np.ndarray, class_names: Sequence[str]) -> dict:
    """{'miou': float, 'iou': {name: float | None}} for one JSON line (None where nan)."""
    iou = iou_per_class(conf)
    if len(class_names) != len(iou):
        raise ValueError(f"{len(class_names)} class names for a {len(iou)}-class confusion")
    return {"miou": mean_iou(conf),
            "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, iou)}}


def error_rates(conf: np.ndarray, class_names: Sequence[str]) -> dict:
    """BAO's FP and FN shares per class (docs/bao.md §4.3): FP_c = (P_c - TP_c) / U_c and
    FN_c = (T_c - TP_c) / U_c with U_c = T_c + P_c - TP_c the union (T: GT pixels, P: predicted
    pixels), so IoU_c + FP_c + FN_c = 1. Returns {'fp': {name: float | None}, 'fn': ...,
    'mean_fp', 'mean_fn'} (None where the class is in neither; means over the others)."""
    conf = np.asarray(conf, np.float64)
    tp, gt, pred = np.diag(conf), conf.sum(1), conf.sum(0)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        fp = np.where(union > 0, (pred - tp) / np.where(union > 0, union, 1), np.nan)
        fn = np.where(union > 0, (gt - tp) / np.where(union > 0, union, 1), np.nan)
    if len(class_names) != len(tp):
        raise ValueError(f"{len(class_names)} class names for a {len(tp)}-class confusion")
    named = lambda v: {n: (None if np.isnan(x) else float(x)) for n, x in zip(class_names, v)}
    mean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
    return {"fp": named(fp), "fn": named(fn), "mean_fp": mean(fp), "mean_fn": mean(fn)}


class ThresholdSweep:
    """Confusions of `pred = keys_pad[argmax([t; S])]` for many thresholds t in one pass.

    keys_pad = [0, keys+1]. Because numpy's argmax takes the first maximum and the comparison
    is in float32 (as the reference's padded float32 array), a pixel is foreground for t exactly
    when max_k S[k] > float32(t), and then its class is keys[first argmax]+1. Per image the
    best channel and its score are computed once; scores are bucketed against the sorted
    thresholds and histogrammed jointly with (gt, class); a suffix sum over buckets yields
    every threshold's confusion.
    """

    def __init__(self, n_classes: int, thresholds: Sequence[float]):
        self.n = int(n_classes)
        self.thresholds = np.asarray(thresholds, np.float32).reshape(-1)
        if self.thresholds.size == 0:
            raise ValueError("ThresholdSweep needs at least one threshold")
        self._order = np.argsort(self.thresholds, kind="stable")
        self._sorted = self.thresholds[self._order]
        # hist[g, c, b]: pixels with GT g, best fg class c (column index), bucket b = #thr < score
        self.hist = np.zeros((self.n, self.n, self._sorted.size + 1), np.int64)

    def image_hist(self, scores: np.ndarray, keys: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """(n, n, T+1) int64 histogram of one image; does not touch the accumulator.

        scores: (K, H, W) foreground scores (cast to float32); keys: (K,) 0-based classes;
        gt: (H, W) labels with 255 = ignore.
        """
        scores, keys, gt = np.asarray(scores), np.asarray(keys, np.int64).reshape(-1), np.asarray(gt)
        if scores.ndim != 3 or scores.shape[0] != keys.size or scores.shape[1:] != gt.shape:
            raise ValueError(f"scores {scores.shape}, keys {keys.shape} and gt {gt.shape} "
                             f"do not fit (expected (K, H, W), (K,), (H, W))")
        _check_range("class keys + 1", keys + 1, self.n)
        valid = gt != IGNORE
        g = gt[valid].astype(np.int64)
        _check_range("ground truth", g, self.n)
        if keys.size == 0:  # no foreground channel: background for every threshold
            cls = np.zeros_like(g)
            bucket = np.zeros_like(g)
        else:
            s = scores.astype(np.float32, copy=False)
            best = np.argmax(s, axis=0)[valid]
            top = np.max(s, axis=0)[valid]
            cls = (keys + 1)[best]
            bucket = np.searchsorted(self._sorted, top, side="left")  # thresholds < score
        nb = self._sorted.size + 1
        flat = (g * self.n + cls) * nb + bucket
        return np.bincount(flat, minlength=self.n * self.n * nb).reshape(self.n, self.n, nb)

    def add(self, scores: np.ndarray, keys: np.ndarray, gt: np.ndarray) -> None:
        """Accumulate one image (see `image_hist` for shapes)."""
        self.hist += self.image_hist(scores, keys, gt)

    def merge(self, other: "ThresholdSweep") -> None:
        """Add another sweep's counts (same classes and thresholds) into this one."""
        if other.n != self.n or not np.array_equal(other.thresholds, self.thresholds):
            raise ValueError("cannot merge sweeps with different classes or thresholds")
        self.hist += other.hist

    def confusions(self) -> np.ndarray:
        """(T, n, n) int64 confusions, in the order the thresholds were given."""
        # fg[b] = pixels with bucket > b (score above sorted threshold b), per (g, c)
        suffix = np.cumsum(self.hist[:, :, ::-1], axis=2)[:, :, ::-1]
        total = suffix[:, :, 0]
        fg = np.moveaxis(suffix[:, :, 1:], 2, 0)  # (T, n, n) in sorted order
        conf = fg.copy()
        conf[:, :, 0] += (total[None] - fg).sum(axis=2)  # the rest predicted background
        out = np.empty_like(conf)
        out[self._order] = conf
        return out

    def mious(self) -> np.ndarray:
        """(T,) mIoU per threshold (given order)."""
        return np.array([mean_iou(c) for c in self.confusions()])

    def best(self) -> tuple[float, float]:
        """(threshold, mIoU) with the highest mIoU (first one on ties)."""
        m = self.mious()
        i = int(np.nanargmax(m))
        return float(self.thresholds[i]), float(m[i])


def evaluate_maps(ids: Sequence[str], map_dir: str | Path, gt_dir: str | Path, n_classes: int,
                  thresholds: Sequence[float], drop_background_channel: bool,
                  num_workers: int = 1) -> ThresholdSweep:
    """Sweep thresholds over map files `map_dir/<id>.npz` against `gt_dir/<id>.png`.

    Reads `high_res` (dropping channel 0 for AMN maps when `drop_background_channel`) and the
    GT once per image. `num_workers` threads each fill a partial sweep; the parts are summed.
    """
    map_dir, gt_dir = Path(map_dir), Path(gt_dir)
    ids = list(ids)
    workers = max(1, min(int(num_workers), len(ids) or 1))
    parts = [ThresholdSweep(n_classes, thresholds) for _ in range(workers)]
    bar = tqdm(total=len(ids), desc=f"eval {map_dir.name}", unit="img", disable=None)
    lock, failed = threading.Lock(), threading.Event()

    def work(part: ThresholdSweep, chunk: Sequence[str]) -> None:
        for i in chunk:
            if failed.is_set():  # another worker hit an error: stop early
                return
            m = load_maps(map_dir / f"{i}.npz")
            scores = m["high_res"][1:] if drop_background_channel else m["high_res"]
            try:
                part.add(scores, m["keys"], load_png(gt_dir / f"{i}.png"))
            except ValueError as err:
                raise ValueError(f"image {i}: {err}") from err
            with lock:
                bar.update(1)

    def guarded(part: ThresholdSweep, chunk: Sequence[str]) -> None:
        try:
            work(part, chunk)
        except BaseException:
            failed.set()
            raise

    try:
        if workers == 1:
            work(parts[0], ids)
        else:
            with ThreadPoolExecutor(workers) as ex:
                futures = [ex.submit(guarded, p, ids[k::workers]) for k, p in enumerate(parts)]
                for f in futures:
                    f.result()
    finally:
        bar.close()
    for p in parts[1:]:
        parts[0].merge(p)
    return parts[0]


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes (with at least one positive) of the average precision of multi-label
    scores (N, C) against 0/1 labels (N, C); ties ranked pessimistically."""
    aps = []
    for s, y in zip(scores.T, labels.T):
        if y.sum() == 0:
            continue
        order = np.lexsort((y, -s))  # by score descending; among ties negatives first
        hits = y[order] > 0
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(precision[hits].mean())
    return float(np.mean(aps)) if aps else float("nan")


def evaluate_label_pngs(ids: Sequence[str], pred_dir: str | Path, gt_dir: str | Path,
                        n_classes: int, ignore_pred: int | None = None) -> tuple[np.ndarray, float]:
    """Confusion of label PNGs `pred_dir/<id>.png` against `gt_dir/<id>.png`, and coverage
    (share of GT-valid pixels whose prediction is not `ignore_pred`; 1.0 without holes).
    Used by eval_sem_seg and to score IR labels (ignore_pred=255)."""
    conf = np.zeros((n_classes, n_classes), np.int64)
    covered = total = 0
    for i in tqdm(list(ids), desc=f"eval {Path(pred_dir).name}", unit="img", disable=None):
        pred, gt = load_png(Path(pred_dir) / f"{i}.png"), load_png(Path(gt_dir) / f"{i}.png")
        if pred.shape != gt.shape:
            raise ValueError(f"image {i}: prediction {pred.shape} and GT {gt.shape} differ in size")
        conf += confusion_matrix(pred, gt, n_classes, ignore_pred)
        valid = gt != 255
        total += int(valid.sum())
        covered += int((valid & (pred != ignore_pred)).sum()) if ignore_pred is not None else int(valid.sum())
    return conf, covered / max(total, 1)
