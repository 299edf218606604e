"""make_cam: multi-scale + flip CAMs of the train list (spec §3.2) -> result/cam/<id>.npz."""
from __future__ import annotations

import argparse

import torch

from misc import session
from misc.artifacts import load_checkpoint
from misc.multiscale import cam_merge, run_multiscale_inference
from net.resnet50_cam import Net
from voc12.dataloader import MultiScaleDataset


def run(args: argparse.Namespace) -> dict:
    root, labels = session.dataset(args)
    device = session.device(args)
    model = Net(labels.n_classes)
    load_checkpoint(model, args.cam_weights_name, made_by="train_cam (--train_cam_pass True)")
    model.to(device).eval()
    dataset = MultiScaleDataset(session.id_list(args.train_list), root, labels, args.train_list,
                                tuple(args.cam_scales))
    stats = run_multiscale_inference(
        dataset, lambda x, _labels: model.cam(x), cam_merge, args.cam_out_dir, device,
        reduce="sum", batch_size=args.infer_batch_size, num_workers=args.num_workers,
        overwrite=args.overwrite, desc="make_cam")
    session.log(f"make_cam: {stats['written']} maps written, {stats['skipped']} already done, "
                f"{stats['seconds']:.0f} s -> {args.cam_out_dir}")
    return stats
