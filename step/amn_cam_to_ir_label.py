"""amn_cam_to_ir_label: AMN maps -> IR labels for IRN (docs/pipeline.md §3.8), thresholds 0.45 / 0.15."""
from __future__ import annotations

import argparse

from step.driver.interface import UNIT, Files, Flag, Step
from step.driver.runners import ir_ppmg_flags, run_ir_label_step

STEP = Step(
    "amn_cam_to_ir_label", "confident IR labels from the AMN maps, for IRN (docs/pipeline.md "
                           "§3.8)",
    flags=(
        Flag("amn_conf_fg_thres", float, 0.45, domain=UNIT),
        Flag("amn_conf_bg_thres", float, 0.15, domain=UNIT),
        *ir_ppmg_flags("amn", (1.34, 11.67)),
        Flag("amn_ir_label_out_dir", default="result/amn_ir_label", shapes=False)),
    reads=(Files("amn_cam_out_dir", "train_list"),),
    writes=(Files("amn_ir_label_out_dir", "train_list", ".png", "AMN IR label"),), images=("train_list",))


def run(args: argparse.Namespace) -> dict:
    return run_ir_label_step(args, "amn", args.amn_cam_out_dir, args.amn_ir_label_out_dir,
                             (args.amn_conf_fg_thres, args.amn_conf_bg_thres),
                             drop_background_channel=True, step="amn_cam_to_ir_label")
