"""train_seg_gt: DeepLab-V2 trained on the ground-truth masks of the images train_seg learns
from, with the same recipe: the upper bound the pseudo-masks are measured against
(docs/toy.md, "Claims"). Optional: a whole-chain run adds it with --train_seg_gt_pass True.
"""
from __future__ import annotations

import argparse

from step import common, train_seg


def run(args: argparse.Namespace) -> dict:
    return train_seg.run(common.on_ground_truth(args), step="train_seg_gt")
