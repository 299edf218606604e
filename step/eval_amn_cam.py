"""eval_amn_cam: AMN seed mIoU on the foreground channels (docs/pipeline.md §3.7), with the sweep
and, with --ppmg_eval True, PMM's PPMG rows (docs/pmm.md §4)."""
from __future__ import annotations

import argparse

from step.driver.interface import Files, Step
from step.driver.runners import run_seed_eval

STEP = Step(
    "eval_amn_cam", "AMN seeds against the ground truth, at one threshold and a sweep",
    uses=("cam_eval_thres", "sweep_thres", "ppmg_eval", "ppmg_alphas", "ppmg_cv_scales"),
    reads=(Files("amn_cam_out_dir", "eval_list"),), gt=("eval_list",), images=("eval_list",),
    unlabelled=("eval_list",))


def run(args: argparse.Namespace) -> dict:
    return run_seed_eval(args, args.amn_cam_out_dir, drop_background_channel=True,
                         step="eval_amn_cam")
