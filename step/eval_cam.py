"""eval_cam: CAM seed mIoU at --cam_eval_thres and over a threshold sweep (docs/pipeline.md §3.3),
with PMM's PPMG rows when --ppmg_eval True (docs/pmm.md §4)."""
from __future__ import annotations

import argparse

from step.driver.interface import NON_NEGATIVE, POSITIVE, UNIT, Files, Flag, Step, str2bool
from step.driver.runners import run_seed_eval

STEP = Step(
    "eval_cam", "CAM seeds against the ground truth, at one threshold and a sweep",
    flags=(
        Flag("cam_eval_thres", float, 0.25, domain=UNIT),
        Flag("sweep_thres", float, tuple(round(0.05 * i, 2) for i in range(1, 20)), nargs="+",
             help="thresholds evaluated in the same pass as --cam_eval_thres", domain=UNIT),
        Flag("ppmg_eval", str2bool, False,
             help="eval_cam, eval_amn_cam, eval_transcam: also score PMM's CVS + PPMG "
                  "pseudo-masks (per-class dense CRFs on the CPU pool, docs/pmm.md) for every "
                  "--ppmg_alphas x --ppmg_cv_scales"),
        Flag("ppmg_alphas", float, (4.8, 8.0, 11.0, 16.0, 24.0), nargs="+",
             help="exponents of PPMG's background (1 - v)^alpha (11: PMM's; 4.8 crosses at the "
                  "0.25 threshold)", domain=POSITIVE),
        Flag("ppmg_cv_scales", float, (0.3, 0.0), nargs="+",
             help="CVS scales (0.3: PMM's; 0: CVS off)", domain=NON_NEGATIVE)),
    reads=(Files("cam_out_dir", "eval_list"),), gt=("eval_list",), images=("eval_list",),
    unlabelled=("eval_list",))


def run(args: argparse.Namespace) -> dict:
    return run_seed_eval(args, args.cam_out_dir, drop_background_channel=False, step="eval_cam")
