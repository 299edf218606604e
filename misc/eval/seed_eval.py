"""Seed evaluation shared by eval_cam and eval_amn_cam: mIoU at one threshold plus a whole
threshold sweep, in one pass over the map files."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from misc.eval.metrics import evaluate_maps, summary


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
