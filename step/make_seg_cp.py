"""make_seg_cp: PMM's cyclic pseudo-masks (docs/pmm.md §9): round 1's DeepLab (the LAST
checkpoint of train_seg, --seg_weights_name; never a selection on val ground truth as PMM's
pick_best_pth: docs/quirks.md Q30) predicts the images of --seg_train_list at PMM's views
(scales 0.5-1.75, each with its mirror) with PMM's dense CRF, into --seg_cp_out_dir: the
labels train_seg_cp learns from. Optional: a whole-chain run adds it with --make_seg_cp_pass
True."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from misc.engine import dist
from misc.engine.log import log
from step import eval_seg
from step.driver import context
from step.driver.interface import POSITIVE, Files, Flag, Step, str2bool

STEP = Step(
    "make_seg_cp", "PMM's cyclic pseudo-masks: round 1's DeepLab predicts its own training "
                   "images (docs/pmm.md §9)",
    flags=(
        Flag("seg_cp_scales", float, (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), nargs="+",
             help="input scales of the CP predictions (PMM's)", domain=POSITIVE),
        Flag("seg_cp_flip", str2bool, True, help="also predict the mirrored image (PMM: yes)"),
        Flag("seg_cp_crf_params", float, (10, 3, 1, 4, 67, 3), nargs=6,
             metavar=("ITER", "POS_W", "POS_XY", "BI_W", "BI_XY", "BI_RGB"),
             help="PMM's CRF on the averaged softmax", domain=POSITIVE),
        Flag("seg_cp_out_dir", default="result/seg_cp_label", shapes=False)),
    uses=("seg_backbone", "seg_backbone_style", "seg_channels_last", "seg_tf32", "amp"),
    reads=(Files("seg_weights_name"),),
    writes=(Files("seg_cp_out_dir", "seg_train_list", ".png", "CP pseudo-mask"),),
    images=("seg_train_list",), unlabelled=("seg_train_list",), optional=True)


def run(args: argparse.Namespace) -> dict:
    forward, device = eval_seg.load_model(args, args.seg_weights_name, "train_seg")
    out_dir = Path(args.seg_cp_out_dir)
    how = eval_seg.infer_settings(args, args.seg_cp_scales, args.seg_cp_flip,
                                  args.seg_cp_crf_params)
    start = time.time()
    eval_seg.predict_list(forward, args.seg_train_list, args, out_dir, device, with_gt=False,
                          how=how)
    stats = {"written": len(context.id_list(args.seg_train_list)),
             "seconds": round(time.time() - start, 1)}
    log(f"make_seg_cp: {stats['written']} CP masks of {args.seg_train_list} from "
        f"{args.seg_weights_name} in {stats['seconds']} s -> {out_dir}")
    dist.barrier()
    return stats
