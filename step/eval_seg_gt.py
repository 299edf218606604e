"""eval_seg_gt: eval_seg for the DeepLab of train_seg_gt (the ground-truth upper bound), its
predictions in --seg_gt_pred_out_dir."""
from __future__ import annotations

import argparse

from step import eval_seg
from step.driver import context

STEP = eval_seg.round_step(
    "eval_seg_gt", "predictions of the DeepLab trained on the ground truth",
    "seg_gt_pred_out_dir", "result/seg_pred_gt", "seg_gt_weights_name",
    also_reads=("seg_weights_name",))  # the derived flags of context.on_ground_truth


def run(args: argparse.Namespace) -> dict:
    return eval_seg.run(context.on_ground_truth(args), step="eval_seg_gt")
