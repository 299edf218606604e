"""eval_bao_amn: the BAO-trained AMN's pseudo-labels against the ground truth (docs/bao.md
§5.2), as eval_bao: the CRF labels and the argmax before the CRF (mIoU with BAO's FP and FN per
class), and the sweep of its foreground maps. Optional: a whole-chain run adds it with
--eval_bao_amn_pass True."""
from __future__ import annotations

import argparse

from step.driver.interface import Files, Step
from step.eval_bao import evaluate_bao

STEP = Step(
    "eval_bao_amn", "the BAO-trained AMN's threshold-free labels and its maps' sweep",
    uses=("bao_eval_thres", "sweep_thres"),
    reads=(Files("bao_amn_out_dir", "eval_list"), Files("bao_amn_cam_out_dir", "eval_list")),
    gt=("eval_list",), images=("eval_list",), unlabelled=("eval_list",), optional=True)


def run(args: argparse.Namespace) -> dict:
    return evaluate_bao(args, args.bao_amn_out_dir, args.bao_amn_cam_out_dir, "eval_bao_amn")
