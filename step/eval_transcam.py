"""eval_transcam: TransCAM seed mIoU at --transcam_eval_thres and over the threshold sweep of
eval_cam (docs/bao.md §3.3), with PMM's PPMG rows when --ppmg_eval True (docs/pmm.md §4).
Optional: a whole-chain run adds it with --eval_transcam_pass True."""
from __future__ import annotations

import argparse

from step.driver.interface import UNIT, Files, Flag, Step
from step.driver.runners import run_seed_eval

STEP = Step(
    "eval_transcam", "TransCAM seeds against the ground truth, at one threshold and a sweep",
    flags=(Flag("transcam_eval_thres", float, 0.44, domain=UNIT,
                help="background threshold of the single-threshold row (0.44: TransCAM's "
                     "published best on VOC train, docs/numbers.md)"),),
    uses=("sweep_thres", "ppmg_eval", "ppmg_alphas", "ppmg_cv_scales"),
    reads=(Files("transcam_out_dir", "eval_list"),), gt=("eval_list",), images=("eval_list",),
    unlabelled=("eval_list",), optional=True)


def run(args: argparse.Namespace) -> dict:
    return run_seed_eval(args, args.transcam_out_dir, drop_background_channel=False,
                         step="eval_transcam", threshold=args.transcam_eval_thres)
