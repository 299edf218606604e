"""cam_to_ir_label: CAMs -> confident IR labels with two dense-CRF passes (docs/pipeline.md §2.5, §3.4)."""
from __future__ import annotations

import argparse

from step.driver.interface import UNIT, Files, Flag, Step
from step.driver.runners import ir_ppmg_flags, run_ir_label_step

STEP = Step(
    "cam_to_ir_label", "confident IR labels from the CAMs, dense CRF (docs/pipeline.md §3.4)",
    flags=(
        Flag("conf_fg_thres", float, shapes=False,
             help="when given, overrides the fg threshold of the IR-label step(s) run in this "
                  "call", domain=UNIT),
        Flag("conf_bg_thres", float, shapes=False, help="likewise for the bg threshold", domain=UNIT),
        Flag("cam_conf_fg_thres", float, 0.30, help="the script's 0.30", domain=UNIT),
        Flag("cam_conf_bg_thres", float, 0.05, help="the script's 0.05", domain=UNIT),
        *ir_ppmg_flags("cam", (3.38, 58.4)),
        Flag("ir_label_out_dir", default="result/ir_label", shapes=False)),
    reads=(Files("cam_out_dir", "train_list"),),
    writes=(Files("ir_label_out_dir", "train_list", ".png", "IR label"),), images=("train_list",))


def run(args: argparse.Namespace) -> dict:
    return run_ir_label_step(args, "cam", args.cam_out_dir, args.ir_label_out_dir,
                             (args.cam_conf_fg_thres, args.cam_conf_bg_thres),
                             drop_background_channel=False, step="cam_to_ir_label")
