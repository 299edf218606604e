"""Seed evaluation shared by eval_cam and eval_amn_cam: mIoU at the flag's threshold plus a
whole threshold sweep in one pass over the map files, appended to result/metrics.jsonl."""
from __future__ import annotations

import argparse
from pathlib import Path

from misc import dist, session
from misc.artifacts import append_metrics
from misc.metrics import evaluate_maps, summary


def eval_ids(args: argparse.Namespace) -> list[str]:
    """Ids of the evaluation split (`--chainer_eval_set`, read from the dataset root)."""
    return session.id_list(Path(args.voc12_root) / "ImageSets" / "Segmentation"
                           / f"{args.chainer_eval_set}.txt")


def run_seed_eval(args: argparse.Namespace, map_dir: str | Path, drop_background_channel: bool,
                  step: str) -> dict:
    """Evaluate `map_dir` at args.cam_eval_thres and at every threshold of args.sweep_thres."""
    if not dist.is_main():
        return {}
    root, labels = session.dataset(args)
    thresholds = sorted(set(float(t) for t in args.sweep_thres) | {float(args.cam_eval_thres)})
    sweep = evaluate_maps(eval_ids(args), map_dir, root.gt_dir(), labels.n_classes + 1,
                          thresholds, drop_background_channel, args.num_workers)
    names = ("background",) + labels.names
    at_ref = summary(sweep.confusions()[thresholds.index(float(args.cam_eval_thres))], names)
    mious = sweep.mious()
    best_t, best_miou = sweep.best()
    record = {"step": step, "split": args.chainer_eval_set, "threshold": args.cam_eval_thres,
              **at_ref, "best_threshold": best_t, "best_miou": best_miou,
              "sweep": {f"{t:.2f}": round(float(m), 5) for t, m in zip(thresholds, mious)}}
    append_metrics(args.metrics_file, record)
    session.log(f"{step}: mIoU {100 * at_ref['miou']:.2f} at threshold {args.cam_eval_thres}; "
                f"best {100 * best_miou:.2f} at {best_t:.2f}")
    session.log("  per class: " + ", ".join(f"{n} {100 * v:.1f}" if v is not None else f"{n} -"
                                           for n, v in at_ref["iou"].items()))
    return record
