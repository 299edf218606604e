"""eval_amn_cam: AMN seed mIoU on the foreground channels (docs/pipeline.md §3.7), with the sweep."""
from __future__ import annotations

import argparse

from step.driver.interface import Files, Step
from step.driver.runners import run_seed_eval

STEP = Step(
    "eval_amn_cam", "AMN seeds against the ground truth, at one threshold and a sweep",
    uses=("cam_eval_thres", "sweep_thres"),
    reads=(Files("amn_cam_out_dir", "eval_list"),), gt=("eval_list",))


def run(args: argparse.Namespace) -> dict:
    return run_seed_eval(args, args.amn_cam_out_dir, drop_background_channel=True,
                         step="eval_amn_cam")
