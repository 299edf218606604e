"""eval_seg_cp: eval_seg for the round-2 DeepLab of train_seg_cp (docs/pmm.md §9), with
eval_seg's views and CRF, its predictions in --seg_cp_pred_out_dir. Optional."""
from __future__ import annotations

import argparse

from step import eval_seg
from step.driver import context
from step.driver.interface import Files, Flag, Step

STEP = Step(
    "eval_seg_cp", "predictions of the round-2 (CP) DeepLab",
    flags=(Flag("seg_cp_pred_out_dir", default="result/seg_pred_cp", shapes=False),),
    uses=tuple(f.name for f in eval_seg.STEP.flags) + eval_seg.STEP.uses,
    also_reads=("seg_weights_name", "seg_cp_out_dir", "seg_puf"),  # context.cyclic_round
    reads=(Files("seg_cp_weights_name"),),
    writes=(Files("seg_cp_pred_out_dir", "seg_eval_list", ".png", "prediction"),),
    images=("seg_eval_list",), unlabelled=("seg_eval_list",), gt=("seg_eval_list",),
    optional=True)


def run(args: argparse.Namespace) -> dict:
    return eval_seg.run(context.cyclic_round(args), step="eval_seg_cp")
