"""eval_cam: CAM seed mIoU at --cam_eval_thres and over a threshold sweep (docs/pipeline.md §3.3)."""
from __future__ import annotations

import argparse

from step.driver.interface import UNIT, Files, Flag, Step
from step.driver.runners import run_seed_eval

STEP = Step(
    "eval_cam", "CAM seeds against the ground truth, at one threshold and a sweep",
    flags=(
        Flag("cam_eval_thres", float, 0.25, domain=UNIT),
        Flag("sweep_thres", float, tuple(round(0.05 * i, 2) for i in range(1, 20)), nargs="+",
             help="thresholds evaluated in the same pass as --cam_eval_thres", domain=UNIT)),
    reads=(Files("cam_out_dir", "eval_list"),), gt=("eval_list",))


def run(args: argparse.Namespace) -> dict:
    return run_seed_eval(args, args.cam_out_dir, drop_background_channel=False, step="eval_cam")
