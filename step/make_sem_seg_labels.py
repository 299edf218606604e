"""make_sem_seg_labels: IRN boundaries + random walk from the AMN seeds -> pseudo-masks
(spec §3.10) in result/sem_seg/<id>.png (uint8, 0 background, c+1 class c).

IRN runs on [image, mirror] pairs zero-padded on the right/bottom to --irn_crop_size when the
image fits (the reference pads VOC to 512; larger images, as on COCO, are not padded), so padded
images batch together exactly. The random walk is the sparse exact form (misc.random_walk).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from misc import dist, session
from misc.artifacts import load_checkpoint, load_maps, save_png
from misc.multiscale import strided_size
from misc.random_walk import random_walk
from net.resnet50_irn import REFERENCE_LOSS_BUFFERS, Net
from voc12.dataloader import MultiScaleDataset

INFER_RADIUS = 5


def boundary_map(model: Net, img: torch.Tensor, pad_to: int) -> torch.Tensor:
    """Boundary probability (h4, w4) in [0, 1] of one normalised image (3, H, W): the mean of
    the edge logits of the image and its mirror, then a sigmoid."""
    h, w = img.shape[1:]
    pair = torch.stack([img, img.flip(-1)])
    if h <= pad_to and w <= pad_to:
        pair = F.pad(pair, (0, pad_to - w, 0, pad_to - h))
    h4, w4 = strided_size((h, w), 4)
    edge = model(pair)[0][:, 0, :h4, :w4]
    return torch.sigmoid((edge[0] + edge[1].flip(-1)) / 2)


def pseudo_mask(maps: dict, boundary: torch.Tensor, size: tuple[int, int],
                args: argparse.Namespace) -> torch.Tensor:
    """Random walk of the AMN seeds (fg channels of cam^power) over the boundary map, x4
    bilinear, global-max normalisation, constant background, argmax -> (H, W) labels."""
    keys = torch.as_tensor(maps["keys"], device=boundary.device)
    if len(keys) == 0:
        return torch.zeros(size, dtype=torch.uint8)
    seeds = torch.as_tensor(maps["cam"], device=boundary.device).pow(args.sem_seg_power)[1:]
    rw = random_walk(seeds, boundary, args.beta, args.exp_times, INFER_RADIUS)
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    up = up[:, :size[0], :size[1]]
    up = up / up.max()
    scores = torch.cat([torch.full_like(up[:1], args.sem_seg_bg_thres), up])
    keys_pad = torch.cat([keys.new_zeros(1), keys + 1])
    return keys_pad[scores.argmax(0)].to(torch.uint8).cpu()


def run(args: argparse.Namespace) -> dict:
    root, labels = session.dataset(args)
    device = session.device(args)
    model = Net()
    load_checkpoint(model, args.irn_weights_name, made_by="train_irn (--train_irn_pass True)",
                    ignore_prefixes=REFERENCE_LOSS_BUFFERS)
    model.to(device).eval()
    out_dir = Path(args.sem_seg_out_dir)
    ids = [i for i in dist.shard(session.id_list(args.infer_list))
           if args.overwrite or not (out_dir / f"{i}.png").is_file()]
    dataset = MultiScaleDataset(ids, root, labels, args.infer_list, (1.0,))
    start = time.time()
    with torch.inference_mode():
        for k in tqdm(range(len(dataset)), desc="make_sem_seg", disable=not dist.is_main()):
            sample = dataset[k]
            maps = load_maps(Path(args.amn_cam_out_dir) / f"{ids[k]}.npz")
            boundary = boundary_map(model, sample["imgs"][0].to(device), args.irn_crop_size)
            save_png(out_dir / f"{ids[k]}.png",
                     pseudo_mask(maps, boundary, sample["size"], args).numpy())
    stats = {"written": len(ids), "seconds": round(time.time() - start, 1)}
    session.log(f"make_sem_seg_labels: {stats['written']} masks in {stats['seconds']} s -> {out_dir}")
    dist.barrier()
    return stats
