"""make_cam: multi-scale + flip CAMs of the train list (docs/pipeline.md §3.2) -> result/cam/<id>.npz."""
from __future__ import annotations

import argparse

from misc.data.samples import MultiScaleDataset
from misc.engine.log import log
from misc.io.checkpoints import load_checkpoint
from misc.seeds.multiscale import cam_merge, run_multiscale_inference
from step.driver import context
from step.driver.interface import COUNT, POSITIVE, PROFILE, Files, Flag, Step

STEP = Step(
    "make_cam", "multi-scale + flip CAMs of the train list (docs/pipeline.md §3.2)",
    flags=(
        Flag("cam_scales", float, PROFILE, nargs="+",
             help="input scales of make_cam and make_amn_cam (with flips)", domain=POSITIVE),
        Flag("infer_batch_size", int, PROFILE, shapes=False,
             help="equal-size images per forward pass (each computes what it would alone)", domain=COUNT),
        Flag("cam_out_dir", default="result/cam", shapes=False)),
    uses=("cam_network", "amp", "channels_last"),
    reads=(Files("cam_weights_name"),), writes=(Files("cam_out_dir", "train_list", ".npz", "CAM"),),
    images=("train_list",))


def run(args: argparse.Namespace) -> dict:
    data = context.dataset(args)
    device = context.device(args)
    model = context.network(args.cam_network, "--cam_network")(data.n_classes)
    load_checkpoint(model, args.cam_weights_name, made_by="train_cam (--train_cam_pass True)")
    model.to(device).eval()
    dataset = MultiScaleDataset(context.id_list(args.train_list), data, args.train_list,
                                tuple(args.cam_scales))
    forward = context.fast_forward(args, model, lambda x, _labels: model.cam(x))
    stats = run_multiscale_inference(
        dataset, forward, cam_merge, args.cam_out_dir, device,
        reduce="sum", batch_size=args.infer_batch_size, num_workers=args.num_workers,
        overwrite=args.overwrite, desc="make_cam")
    log(f"make_cam: {stats['written']} maps written, {stats['skipped']} already done, "
                f"{stats['seconds']:.0f} s -> {args.cam_out_dir}")
    return stats
