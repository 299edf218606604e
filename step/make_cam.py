"""make_cam: multi-scale + flip CAMs of the train list (docs/pipeline.md §3.2) -> result/cam/<id>.npz."""
from __future__ import annotations

import argparse

from misc.data.samples import MultiScaleDataset
from misc.engine.log import log
from misc.io.checkpoints import load_checkpoint
from misc.seeds.multiscale import cam_merge, run_multiscale_inference
from step import common


def run(args: argparse.Namespace) -> dict:
    data = common.dataset(args)
    device = common.device(args)
    model = common.network(args.cam_network, "--cam_network")(data.n_classes)
    load_checkpoint(model, args.cam_weights_name, made_by="train_cam (--train_cam_pass True)")
    model.to(device).eval()
    dataset = MultiScaleDataset(common.id_list(args.train_list), data, args.train_list,
                                tuple(args.cam_scales))
    forward = common.fast_forward(args, model, lambda x, _labels: model.cam(x))
    stats = run_multiscale_inference(
        dataset, forward, cam_merge, args.cam_out_dir, device,
        reduce="sum", batch_size=args.infer_batch_size, num_workers=args.num_workers,
        overwrite=args.overwrite, desc="make_cam")
    log(f"make_cam: {stats['written']} maps written, {stats['skipped']} already done, "
                f"{stats['seconds']:.0f} s -> {args.cam_out_dir}")
    return stats
