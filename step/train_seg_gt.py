"""train_seg_gt: DeepLab-V2 trained on the ground-truth masks of the images train_seg learns
from, with the same recipe: the upper bound the pseudo-masks are measured against
(docs/toy.md, "Claims"). Optional: a whole-chain run adds it with --train_seg_gt_pass True.
"""
from __future__ import annotations

import argparse

from step import train_seg
from step.driver import context
from step.driver.interface import Files, Flag, Step

STEP = Step(
    "train_seg_gt", "DeepLab-V2 on the ground truth of --seg_train_list: the upper bound of "
                    "the pseudo-masks",
    flags=(Flag("seg_gt_weights_name", default="sess/deeplabv2_gt.pth", shapes=False),),
    uses=tuple(f.name for f in train_seg.STEP.flags) + train_seg.STEP.uses,
    also_reads=("seg_gt_pred_out_dir",),  # the derived flags of context.on_ground_truth
    reads=(Files("seg_backbone_weights"),), writes=(Files("seg_gt_weights_name"),),
    batch="seg_batch_size", trains_on=("seg_train_list",), images=("seg_train_list",),
    gt=("seg_train_list",),
    optional=True)


def run(args: argparse.Namespace) -> dict:
    return train_seg.run(context.on_ground_truth(args), step="train_seg_gt")
