"""eval_amn_cam: AMN seed mIoU on the foreground channels (docs/pipeline.md §3.7), with the sweep."""
from __future__ import annotations

import argparse

from step.common import run_seed_eval


def run(args: argparse.Namespace) -> dict:
    return run_seed_eval(args, args.amn_cam_out_dir, drop_background_channel=True,
                         step="eval_amn_cam")
