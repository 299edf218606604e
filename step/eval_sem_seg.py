"""eval_sem_seg: pseudo-mask mIoU on --chainer_eval_set (spec §3.11)."""
from __future__ import annotations

import argparse

from misc import dist, session
from misc.artifacts import append_metrics
from misc.metrics import evaluate_label_pngs, summary
from misc.seed_eval import eval_ids


def run(args: argparse.Namespace) -> dict:
    if not dist.is_main():
        return {}
    root, labels = session.dataset(args)
    conf, _ = evaluate_label_pngs(eval_ids(args), args.sem_seg_out_dir, root.gt_dir(),
                                  labels.n_classes + 1)
    record = {"step": "eval_sem_seg", "split": args.chainer_eval_set,
              **summary(conf, ("background",) + labels.names)}
    append_metrics(args.metrics_file, record)
    session.log(f"eval_sem_seg: mIoU {100 * record['miou']:.2f} on {args.chainer_eval_set}")
    return record
