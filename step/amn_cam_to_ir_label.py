"""amn_cam_to_ir_label: AMN maps -> IR labels for IRN (docs/pipeline.md §3.8), thresholds 0.45 / 0.15."""
from __future__ import annotations

import argparse

from step.common import run_ir_label_step


def run(args: argparse.Namespace) -> dict:
    return run_ir_label_step(args, args.amn_cam_out_dir, args.amn_ir_label_out_dir,
                             args.amn_conf_fg_thres, args.amn_conf_bg_thres,
                             drop_background_channel=True, step="amn_cam_to_ir_label")
