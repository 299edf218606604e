"""make_sem_seg_labels: IRN boundaries + random walk from the AMN seeds -> pseudo-masks
(docs/pipeline.md §3.10) in result/sem_seg/<id>.png (uint8, 0 background, c+1 class c).

IRN runs on [image, mirror] pairs zero-padded on the right/bottom to --irn_crop_size when the
image fits (the reference pads VOC to 512; larger images, as on COCO, are not padded). The
random walk is the sparse exact form (misc.irn.random_walk).
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
from misc.io.png import save_png
from misc.irn.sem_seg import boundary_map, pseudo_mask
from step.driver import context
from step.driver.interface import POSITIVE, PROFILE, UNIT, Files, Flag, Step

STEP = Step(
    "make_sem_seg", "pseudo-masks: IRN boundaries + random walk of the AMN seeds "
                    "(docs/pipeline.md §3.10)",
    flags=(
        Flag("sem_seg_power", float, 1.3, help="power on the AMN seeds before the walk", domain=POSITIVE),
        Flag("sem_seg_bg_thres", float, PROFILE, domain=UNIT),
        Flag("sem_seg_out_dir", default="result/sem_seg", shapes=False)),
    uses=("irn_network", "irn_crop_size", "beta", "exp_times", "walk_radius", "amp", "channels_last"),
    reads=(Files("irn_weights_name"), Files("amn_cam_out_dir", "infer_list")),
    writes=(Files("sem_seg_out_dir", "infer_list", ".png", "pseudo-mask"),), images=("infer_list",))


def run(args: argparse.Namespace) -> dict:
    out_dir = Path(args.sem_seg_out_dir)
    model, dataset, device = context.irn_inference(args, out_dir, ".png")
    ids = dataset.ids
    start = time.time()
    with torch.inference_mode():
        for k in tqdm(range(len(dataset)), desc="make_sem_seg", disable=not dist.is_main()):
            sample = dataset[k]
            maps = load_maps(Path(args.amn_cam_out_dir) / f"{ids[k]}.npz")
            boundary = boundary_map(model, sample["imgs"][0].to(device), args.irn_crop_size)
            mask = pseudo_mask(maps, boundary, sample["size"], power=args.sem_seg_power,
                               beta=args.beta, exp_times=args.exp_times,
                               bg_thres=args.sem_seg_bg_thres, radius=args.walk_radius)
            save_png(out_dir / f"{ids[k]}.png", mask.numpy())
    stats = {"written": len(ids), "seconds": round(time.time() - start, 1)}
    log(f"make_sem_seg_labels: {stats['written']} masks in {stats['seconds']} s -> {out_dir}")
    dist.barrier()
    return stats
