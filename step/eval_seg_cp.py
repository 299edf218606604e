"""eval_seg_cp: eval_seg for the round-2 DeepLab of train_seg_cp (docs/pmm.md §9), with
eval_seg's views and CRF, its predictions in --seg_cp_pred_out_dir. Optional."""
from __future__ import annotations

import argparse

from step import eval_seg
from step.driver import context

STEP = eval_seg.round_step(
    "eval_seg_cp", "predictions of the round-2 (CP) DeepLab", "seg_cp_pred_out_dir",
    "result/seg_pred_cp", "seg_cp_weights_name",
    also_reads=("seg_weights_name", "seg_cp_out_dir", "seg_puf"))  # context.cyclic_round


def run(args: argparse.Namespace) -> dict:
    return eval_seg.run(context.cyclic_round(args), step="eval_seg_cp")
