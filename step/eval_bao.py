"""eval_bao: BAO's pseudo-labels against the ground truth (docs/bao.md §4.3): the threshold-free
CRF labels (mIoU with BAO's FP and FN per class, and the same for the argmax before the CRF),
and the threshold sweep of the BAO foreground maps as eval_cam's. Optional: a whole-chain run
adds it with --eval_bao_pass True."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from misc.engine import dist
from misc.engine.log import log
from misc.eval.metrics import confusion_matrix, evaluate_label_pngs
from misc.eval.seed_eval import evaluate_seeds, scored
from misc.io.maps import load_maps
from misc.io.metrics_file import append_metrics
from misc.io.png import load_png
from step.driver.context import cpu_workers, dataset, eval_ids
from step.driver.interface import UNIT, Files, Flag, Step

STEP = Step(
    "eval_bao", "BAO's threshold-free labels and its foreground maps' threshold sweep",
    flags=(Flag("bao_eval_thres", float, 0.5, domain=UNIT,
                help="background threshold of the maps' single-threshold row (0.5: the cut "
                     "BAO's training labels make; published best 0.49 and 0.50 tie, "
                     "docs/numbers.md)"),),
    uses=("sweep_thres",),
    reads=(Files("bao_out_dir", "eval_list"), Files("bao_cam_out_dir", "eval_list")),
    gt=("eval_list",), images=("eval_list",), unlabelled=("eval_list",), optional=True)


def argmax_confusion(ids: list[str], map_dir: str | Path, gt_dir: Path, n: int) -> np.ndarray:
    """Confusion of the argmax labels stored in the BAO map files (before the CRF)."""
    conf = np.zeros((n, n), np.int64)
    for i in ids:
        conf += confusion_matrix(load_maps(Path(map_dir) / f"{i}.npz")["label"],
                                 load_png(gt_dir / f"{i}.png"), n)
    return conf


def evaluate_bao(args: argparse.Namespace, label_dir: str, map_dir: str, step: str) -> dict:
    """eval_bao / eval_bao_amn: the CRF labels of `label_dir` and the argmax labels and
    foreground maps of `map_dir` against the ground truth, one metrics line."""
    if not dist.is_main():
        return {}
    data = dataset(args)
    ids, names = eval_ids(args), ("background",) + data.class_names
    n = data.n_classes + 1
    crf_conf, _ = evaluate_label_pngs(ids, label_dir, data.gt_dir(), n)
    record = {"step": step, "split": args.chainer_eval_set, **scored(crf_conf, names),
              "no_crf": scored(argmax_confusion(ids, map_dir, data.gt_dir(), n), names),
              "maps": evaluate_seeds(ids, map_dir, data.gt_dir(), data.class_names,
                                     args.bao_eval_thres, args.sweep_thres, True,
                                     cpu_workers(args))}
    append_metrics(args.metrics_file, record)
    maps = record["maps"]
    log(f"{step}: threshold-free mIoU {100 * record['miou']:.2f} (FP {100 * record['mean_fp']:.2f}"
        f", FN {100 * record['mean_fn']:.2f}); before the CRF {100 * record['no_crf']['miou']:.2f}"
        f"; foreground maps {100 * maps['miou']:.2f} at {args.bao_eval_thres}, best "
        f"{100 * maps['best_miou']:.2f} at {maps['best_threshold']:.2f}")
    return record


def run(args: argparse.Namespace) -> dict:
    return evaluate_bao(args, args.bao_out_dir, args.bao_cam_out_dir, "eval_bao")
