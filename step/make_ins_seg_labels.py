"""make_ins_seg_labels: IRN displacements and boundaries + random walk of the ORIGINAL CAMs ->
instance pseudo-labels (docs/pipeline.md §3.12) in result/ins_seg/<id>.npz (labels uint16 (H, W),
0 none, i + 1 segment i; score (N,); class (N,) 0-based).

As in IRN, the seeds are the CAM stage's maps (--cam_out_dir "cam", no background channel, no
power), not AMN's; the walk has make_sem_seg's radius, --beta and --exp_times, the background
score is --ins_seg_bg_thres. IRN runs on the [image, mirror] pair padded as in §3.10; its
displacement field has the mean of train_irn's pass subtracted (§3.9).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

from misc.engine import dist
from misc.engine.log import log
from misc.io.maps import load_maps
from misc.irn.ins_seg import edge_and_displacement, instance_masks, save_instances
from step.driver import context
from step.driver.interface import NON_NEGATIVE, POSITIVE, PROFILE, UNIT, Domain, Files, Flag, Step

STEP = Step(
    "make_ins_seg", "instance pseudo-labels from IRN and the CAMs (docs/pipeline.md §3.12)",
    flags=(
        Flag("beta", float, 10.0, help="power of the affinities in the random walk (typed, "
                                       "unlike the reference: docs/quirks.md Q13)", domain=POSITIVE),
        Flag("exp_times", int, PROFILE, help="the walk takes 2^exp_times steps", domain=NON_NEGATIVE),
        Flag("walk_radius", int, PROFILE, help="the walk's affinities reach this many stride-4 "
                                               "cells (the reference: 5)", domain=Domain(2)),
        Flag("ins_seg_bg_thres", float, 0.25,
             help="background score against the normalised walk of the CAMs", domain=UNIT),
        Flag("ins_seg_out_dir", default="result/ins_seg", shapes=False)),
    uses=("irn_network", "irn_crop_size", "amp", "channels_last"),
    reads=(Files("irn_weights_name"), Files("cam_out_dir", "infer_list")),
    writes=(Files("ins_seg_out_dir", "infer_list", ".npz", "instance label"),), images=("infer_list",))


def run(args: argparse.Namespace) -> dict:
    out_dir = Path(args.ins_seg_out_dir)
    model, dataset, device = context.irn_inference(args, out_dir, ".npz")
    ids = dataset.ids
    start, n_segments = time.time(), 0
    with torch.inference_mode():
        for k in tqdm(range(len(dataset)), desc="make_ins_seg", disable=not dist.is_main()):
            sample = dataset[k]
            maps = load_maps(Path(args.cam_out_dir) / f"{ids[k]}.npz")
            boundary, disp = edge_and_displacement(model, sample["imgs"][0].to(device),
                                                   args.irn_crop_size)
            result = instance_masks(torch.as_tensor(maps["cam"], device=device), maps["keys"],
                                    boundary, disp, tuple(sample["size"]), beta=args.beta,
                                    exp_times=args.exp_times, bg_thres=args.ins_seg_bg_thres,
                                    radius=args.walk_radius)
            save_instances(out_dir / f"{ids[k]}.npz", result)
            n_segments += len(result)
    stats = {"written": len(ids), "segments": n_segments,
             "seconds": round(time.time() - start, 1)}
    log(f"make_ins_seg_labels: {stats['written']} images, {n_segments} segments in "
        f"{stats['seconds']} s -> {out_dir}")
    dist.barrier()
    return stats
