"""eval_seg_gt: eval_seg for the DeepLab of train_seg_gt (the ground-truth upper bound), its
predictions in --seg_gt_pred_out_dir."""
from __future__ import annotations

import argparse

from step import common, eval_seg


def run(args: argparse.Namespace) -> dict:
    return eval_seg.run(common.on_ground_truth(args), step="eval_seg_gt")
