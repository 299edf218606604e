"""eval_sem_seg: pseudo-mask mIoU on --chainer_eval_set (docs/pipeline.md §3.11)."""
from __future__ import annotations

import argparse

from misc.engine import dist
from misc.engine.log import log
from misc.eval.metrics import evaluate_label_pngs, summary
from misc.io.metrics_file import append_metrics
from step.driver.context import dataset, eval_ids
from step.driver.interface import Files, Step

STEP = Step(
    "eval_sem_seg", "pseudo-masks against the ground truth",
    reads=(Files("sem_seg_out_dir", "eval_list"),), gt=("eval_list",))


def run(args: argparse.Namespace) -> dict:
    if not dist.is_main():
        return {}
    data = dataset(args)
    conf, _ = evaluate_label_pngs(eval_ids(args), args.sem_seg_out_dir, data.gt_dir(),
                                  data.n_classes + 1)
    record = {"step": "eval_sem_seg", "split": args.chainer_eval_set,
              **summary(conf, ("background",) + data.class_names)}
    append_metrics(args.metrics_file, record)
    log(f"eval_sem_seg: mIoU {100 * record['miou']:.2f} on {args.chainer_eval_set}")
    return record
