"""cam_to_ir_label: CAMs -> confident IR labels with two dense-CRF passes (docs/pipeline.md §2.5, §3.4)."""
from __future__ import annotations

import argparse

from step.common import run_ir_label_step


def run(args: argparse.Namespace) -> dict:
    return run_ir_label_step(args, args.cam_out_dir, args.ir_label_out_dir,
                             args.cam_conf_fg_thres, args.cam_conf_bg_thres,
                             drop_background_channel=False, step="cam_to_ir_label")
