"""eval_cam: CAM seed mIoU at --cam_eval_thres and over a threshold sweep (docs/pipeline.md §3.3)."""
from __future__ import annotations

import argparse

from step.common import run_seed_eval


def run(args: argparse.Namespace) -> dict:
    return run_seed_eval(args, args.cam_out_dir, drop_background_channel=False, step="eval_cam")
