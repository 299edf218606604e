"""make_transcam: TransCAM maps of the train list from square resizes and their flips
(docs/bao.md §3.2) -> result/transcam/<id>.npz, in make_cam's format. Optional: a whole-chain
run adds it with --make_transcam_pass True.
"""
from __future__ import annotations

import argparse

from misc.data.samples import SquareViewsDataset
from misc.engine.log import log
from misc.io.checkpoints import load_checkpoint
from misc.seeds.multiscale import run_multiscale_inference, transcam_merge
from net import conformer
from step.driver import context
from step.driver.interface import COUNT, PROFILE, Files, Flag, Step, str2bool
from step.train_transcam import check_patch_multiple

STEP = Step(
    "make_transcam", "TransCAM maps from square resizes and their flips (docs/bao.md §3.2)",
    flags=(
        Flag("transcam_sizes", int, PROFILE, nargs="+", domain=COUNT,
             help="sides of the resized views, multiples of 16 (each with its flip)"),
        Flag("transcam_square", str2bool, True,
             help="resize the whole image to side x side as the reference (aspect-distorting, "
                  "docs/quirks.md); False: the long side to the side, the aspect kept up to "
                  "16-pixel rounding"),
        Flag("transcam_out_dir", default="result/transcam", shapes=False)),
    uses=("transcam_depth", "amp", "channels_last", "infer_batch_size"),
    reads=(Files("transcam_weights_name"),),
    writes=(Files("transcam_out_dir", "train_list", ".npz", "TransCAM map"),),
    images=("train_list",),
    optional=True)


def run(args: argparse.Namespace) -> dict:
    check_patch_multiple("transcam_sizes", args.transcam_sizes)
    data = context.dataset(args)
    device = context.device(args)
    model = conformer.Net(data.n_classes, depth=args.transcam_depth)
    load_checkpoint(model, args.transcam_weights_name,
                    made_by="train_transcam (--train_transcam_pass True)")
    model.to(device).eval()
    dataset = SquareViewsDataset(context.id_list(args.train_list), data, args.train_list,
                                 tuple(args.transcam_sizes), square=args.transcam_square)
    # TransCAM's attention-propagated CAM M*, the C foreground channels (channel 0 untrained)
    forward = context.fast_forward(args, model, lambda x, _labels: model(x).cam[:, 1:])
    stats = run_multiscale_inference(
        dataset, forward, transcam_merge, args.transcam_out_dir, device, reduce="sum",
        batch_size=args.infer_batch_size, num_workers=args.num_workers,
        overwrite=args.overwrite, desc="make_transcam", exact=True)
    log(f"make_transcam: {stats['written']} maps written, {stats['skipped']} already done, "
        f"{stats['seconds']:.0f} s -> {args.transcam_out_dir}")
    return stats
