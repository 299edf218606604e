"""eval_seg_gt: eval_seg for the DeepLab of train_seg_gt (the ground-truth upper bound), its
predictions in --seg_gt_pred_out_dir."""
from __future__ import annotations

import argparse

from step import eval_seg
from step.driver import context
from step.driver.interface import Files, Flag, Step

STEP = Step(
    "eval_seg_gt", "predictions of the DeepLab trained on the ground truth",
    flags=(Flag("seg_gt_pred_out_dir", default="result/seg_pred_gt", shapes=False),),
    uses=tuple(f.name for f in eval_seg.STEP.flags) + eval_seg.STEP.uses,
    also_reads=("seg_weights_name",),  # the derived flags of context.on_ground_truth
    reads=(Files("seg_gt_weights_name"),),
    writes=(Files("seg_gt_pred_out_dir", "seg_eval_list", ".png", "prediction"),),
    images=("seg_eval_list",), unlabelled=("seg_eval_list",), gt=("seg_eval_list",),
    optional=True)


def run(args: argparse.Namespace) -> dict:
    return eval_seg.run(context.on_ground_truth(args), step="eval_seg_gt")
