"""Seed evaluation shared by eval_cam and eval_amn_cam: mIoU at one threshold plus a whole
threshold sweep, in one pass over the map files; optionally PMM's PPMG rows (docs/pmm.md §4)
and, for AMN maps, the threshold-free rows of AMN's own background channel (docs/bao.md §5.1)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from misc.engine.workers import map_jobs
from misc.errors import BadInput
from misc.eval.metrics import confusion_matrix, error_rates, evaluate_maps, mean_iou, summary
from misc.imutils import read_image
from misc.io.maps import load_maps
from misc.io.png import load_png
from misc.seeds.bao import crf_label
from misc.seeds.ppmg import ppmg_many


def evaluate_seeds(ids: Sequence[str], map_dir: str | Path, gt_dir: str | Path,
                   class_names: Sequence[str], eval_thres: float, sweep_thres: Sequence[float],
                   drop_background_channel: bool, num_workers: int = 1) -> dict:
    """Score `map_dir/<id>.npz` (high_res maps in [0, 1]) against `gt_dir/<id>.png`.

    `class_names` are the C foreground names (background is added). Returns the summary at
    `eval_thres` (miou, per-class iou, ...) with `threshold`, `best_threshold`, `best_miou` and
    `sweep` {"0.05": miou, ...} over `sweep_thres` plus `eval_thres`."""
    thresholds = sorted(set(float(t) for t in sweep_thres) | {float(eval_thres)})
    sweep = evaluate_maps(ids, map_dir, gt_dir, len(class_names) + 1, thresholds,
                          drop_background_channel, num_workers)
    at_ref = summary(sweep.confusions()[thresholds.index(float(eval_thres))],
                     ("background",) + tuple(class_names))
    best_t, best_miou = sweep.best()
    return {"threshold": eval_thres, **at_ref, "best_threshold": best_t, "best_miou": best_miou,
            "sweep": {f"{t:.2f}": round(float(m), 5) for t, m in zip(thresholds, sweep.mious())}}


# (map path, image path, GT path, n_classes, ((alpha, cv_scale), ...), drop_background_channel)
PpmgJob = tuple[str, str, str, int, tuple[tuple[float, float], ...], bool]

# one toy image's PPMG rows take ~0.1 s, a spawned worker ~1 s to start: below this many images
# one process is faster
PPMG_MIN_JOBS_FOR_POOL = 16


def _ppmg_confusions(job: PpmgJob) -> np.ndarray:
    """(S, n, n) int64 confusions of one image's PPMG labels, one per setting."""
    map_path, image_path, gt_path, n_classes, settings, drop_bg = job
    m = load_maps(map_path)
    maps = m["high_res"][1:] if drop_bg else m["high_res"]
    gt = load_png(gt_path)
    labels = ppmg_many(read_image(image_path), maps, m["keys"], settings)
    try:
        return np.stack([confusion_matrix(lab, gt, n_classes) for lab in labels])
    except ValueError as err:
        raise ValueError(f"{Path(map_path).stem}: {err}") from err


def setting_name(alpha: float, cv_scale: float) -> str:
    """The key of a PPMG row in records and reports, e.g. "a11_cv0.3"."""
    return f"a{alpha:g}_cv{cv_scale:g}"


def parse_setting(name: str) -> tuple[float, float]:
    """(alpha, cv_scale) of a `setting_name`."""
    alpha, cv = name[1:].split("_cv")
    return float(alpha), float(cv)


def evaluate_ppmg(ids: Sequence[str], map_dir: str | Path, image_path: Callable[[str], Path],
                  gt_dir: str | Path, class_names: Sequence[str],
                  settings: Sequence[tuple[float, float]], drop_background_channel: bool,
                  num_workers: int = 1) -> dict:
    """PPMG rows of a seed evaluation (docs/pmm.md §4): for every (α, cv_scale) setting, the
    mIoU of `misc.seeds.ppmg` labels made from `map_dir/<id>.npz` (high_res in [0, 1]; channel
    0 dropped for AMN maps) and the image, against `gt_dir/<id>.png`, per image on the CPU pool.

    Returns {'ppmg': {setting_name: miou} in the order of `settings`, 'ppmg_best': {'alpha',
    'cv_scale', 'miou', 'iou'} (the first best), 'ppmg_seconds'}; {} when `settings` is empty.
    """
    settings = tuple((float(a), float(c)) for a, c in settings)
    if not settings:
        return {}
    start = time.perf_counter()
    n = len(class_names) + 1
    jobs = [(str(Path(map_dir) / f"{i}.npz"), str(image_path(i)), str(Path(gt_dir) / f"{i}.png"),
             n, settings, bool(drop_background_channel)) for i in ids]
    conf = np.zeros((len(settings), n, n), np.int64)
    for part in map_jobs(_ppmg_confusions, jobs, num_workers, f"ppmg {Path(map_dir).name}",
                         PPMG_MIN_JOBS_FOR_POOL):
        conf += part
    mious = [mean_iou(k) for k in conf]
    best = max(range(len(mious)), key=lambda j: (mious[j], -j))
    return {"ppmg": {setting_name(a, c): round(float(m), 5) for (a, c), m in zip(settings, mious)},
            "ppmg_best": {"alpha": settings[best][0], "cv_scale": settings[best][1],
                          **summary(conf[best], ("background",) + tuple(class_names))},
            "ppmg_seconds": round(time.perf_counter() - start, 2)}


def scored(conf: np.ndarray, names: Sequence[str]) -> dict:
    """mIoU, per-class IoU, and BAO's FP and FN (`error_rates`) of one confusion."""
    return {**summary(conf, tuple(names)), **error_rates(conf, tuple(names))}


# the threshold-free rows of eval_amn_cam --amn_bao_eval True, in the order of their confusions
THRESHOLD_FREE_ROWS = ("softmax_argmax", "bao_min_max", "bao_min_max_crf")

# (map path, image path, GT path, n_classes, CRF n_labels, CRF gt_prob)
ThresholdFreeJob = tuple[str, str, str, int, int, float]


def stored_labels(map_path: str | Path, expected: int) -> np.ndarray:
    """The hard labels a map file stores, (expected, H, W) uint8; a map file made before
    make_amn_cam stored them is a clear error saying how to remake it."""
    labels = load_maps(map_path).get("label")
    if labels is None or labels.ndim != 3 or len(labels) != expected:
        raise BadInput(f"map file {map_path} holds no threshold-free labels (made before "
                       f"make_amn_cam stored them, or by another step): remake the maps with "
                       f"--make_amn_cam_pass True --overwrite True, or drop --amn_bao_eval")
    return labels


def _threshold_free_confusions(job: ThresholdFreeJob) -> np.ndarray:
    """(3, n, n) confusions of one image's THRESHOLD_FREE_ROWS."""
    map_path, image_path, gt_path, n, n_labels, gt_prob = job
    softmax_argmax, bao = stored_labels(map_path, 2)
    gt = load_png(gt_path)
    preds = (softmax_argmax, bao, crf_label(bao, image_path, n_labels, gt_prob))
    return np.stack([confusion_matrix(p, gt, n) for p in preds])


def evaluate_threshold_free(ids: Sequence[str], map_dir: str | Path,
                            image_path: Callable[[str], Path], gt_dir: str | Path,
                            class_names: Sequence[str], n_labels: int, gt_prob: float,
                            num_workers: int = 1) -> dict:
    """eval_amn_cam's threshold-free rows (docs/bao.md §5.1) from the labels make_amn_cam
    stores beside the maps: (a) the softmax argmax over [background, present classes],
    (b) BAO's per-channel min-max + argmax, before and after the label CRF (n_labels, gt_prob;
    per image on the CPU pool). Returns {'threshold_free': {row: scored}}."""
    n = len(class_names) + 1
    jobs = [(str(Path(map_dir) / f"{i}.npz"), str(image_path(i)), str(Path(gt_dir) / f"{i}.png"),
             n, int(n_labels), float(gt_prob)) for i in ids]
    conf = np.zeros((len(THRESHOLD_FREE_ROWS), n, n), np.int64)
    for part in map_jobs(_threshold_free_confusions, jobs, num_workers,
                         f"threshold-free {Path(map_dir).name}", PPMG_MIN_JOBS_FOR_POOL):
        conf += part
    names = ("background",) + tuple(class_names)
    return {"threshold_free": {row: scored(c, names) for row, c in zip(THRESHOLD_FREE_ROWS, conf)}}
