"""make_amn_cam: multi-scale + flip AMN maps of the train list (docs/pipeline.md §3.6) -> result/amn_cam.

Dropout stays active at inference by default, as in the reference (docs/quirks.md Q1);
--amn_deterministic True turns it off.
"""
from __future__ import annotations

import argparse

from misc.data.samples import MultiScaleDataset
from misc.engine.log import log
from misc.io.checkpoints import load_checkpoint
from misc.seeds.multiscale import amn_merge, run_multiscale_inference
from step.driver import context
from step.driver.interface import Files, Flag, Step, str2bool

STEP = Step(
    "make_amn_cam", "multi-scale + flip AMN maps, background channel first (docs/pipeline.md "
                    "§3.6)",
    flags=(
        Flag("amn_deterministic", str2bool, False,
             help="turn dropout off at AMN inference (the reference leaves it on: "
                  "docs/quirks.md Q1)"),
        Flag("amn_cam_out_dir", default="result/amn_cam", shapes=False)),
    uses=("amn_network", "cam_scales", "amn_dropout", "seed", "amp", "channels_last",
          "infer_batch_size"),
    reads=(Files("amn_weights_name"), Files("ir_label_out_dir", "train_list")),
    writes=(Files("amn_cam_out_dir", "train_list", ".npz", "AMN map"),), images=("train_list",))


def run(args: argparse.Namespace) -> dict:
    data = context.dataset(args)
    device = context.device(args)
    model = context.network(args.amn_network, "--amn_network")(data.n_classes,
                                                               dropout=args.amn_dropout)
    load_checkpoint(model, args.amn_weights_name, made_by="train_amn (--train_amn_pass True)")
    model.to(device).eval()
    model.set_inference_dropout(not args.amn_deterministic)
    dataset = MultiScaleDataset(context.id_list(args.train_list), data, args.train_list,
                                tuple(args.cam_scales))
    stats = run_multiscale_inference(
        dataset, context.fast_forward(args, model), amn_merge(args.ir_label_out_dir),
        args.amn_cam_out_dir, device,
        reduce="mean", batch_size=args.infer_batch_size, num_workers=args.num_workers,
        overwrite=args.overwrite, desc="make_amn_cam")
    log(f"make_amn_cam: {stats['written']} maps written, {stats['skipped']} already done, "
                f"{stats['seconds']:.0f} s -> {args.amn_cam_out_dir}")
    return stats
