"""Multi-scale + flip inference over an image list: the shared mechanism of make_cam,
make_amn_cam and make_transcam (one mechanism, three configurations: the views, the network
call and the per-image merge).

Images are batched by size, and each scale of a batch is one forward pass of (2B, 3, h_s, w_s)
holding every image and its mirror: exact when the batch shares a size, otherwise zero-padded
with every activation masked to each image's region (misc/seeds/padded_batch.py), which gives each
image's own outputs up to float rounding.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from misc.data.samples import MultiScaleDataset
from misc.engine import dist
from misc.imutils import pil_resize
from misc.io.maps import save_maps
from misc.io.png import load_png
from misc.io.records import is_done
from misc.seeds.bao import reference_min_max, threshold_free_labels
from misc.seeds.padded_batch import crop_outputs, pad_to_canvas, valid_region_masks

# forward(x (2B,3,h,w) normalised, labels (2B,C)) -> (2B, C', h', w') scores or logits
ForwardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# merge(per-scale flip-merged outputs [(C', h_s', w_s')], label (C,), (H, W), image id)
#   -> (keys, cam, high_res) or (keys, cam, high_res, hard labels (H, W) or (L, H, W)):
#   save_maps' arrays
MergeFn = Callable[[list, torch.Tensor, tuple, str], tuple]


def size_batches(sizes: Sequence[tuple[int, ...]], batch_size: int,
                 exact: bool = False) -> list[list[int]]:
    """Indices in batches of at most `batch_size`, ordered by size within each orientation so
    that a batch holds equal or similar sizes (the least padding). A batch never mixes
    landscape and portrait images: a 500x375 and a 375x500 image share a 512x512 canvas, 36%
    of it padding, slower than one at a time (docs/measurements.md). `exact`: a batch holds
    equal sizes only (networks that cannot be masked to a padded region, e.g. attention)."""
    if exact:
        groups: dict[tuple, list[int]] = {}
        for i in sorted(range(len(sizes)), key=lambda i: tuple(sizes[i])):
            groups.setdefault(tuple(sizes[i]), []).append(i)
        return [g[k:k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]
    batches = []
    for portrait in (False, True):
        group = sorted((i for i in range(len(sizes)) if (sizes[i][0] >= sizes[i][1]) == portrait),
                       key=lambda i: tuple(sizes[i]))
        batches += [group[k:k + batch_size] for k in range(0, len(group), batch_size)]
    return batches


def mirrored_views(imgs: Sequence[torch.Tensor], stride: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One scale of a batch on the host, ready for one copy to the device: [(3, h_i, w_i)] ->
    (2B, 3, h, w) the images then their mirrors, stacked when they share a size (valid None),
    else zero-padded to one canvas (a multiple of `stride`) with the valid sizes (2B, 2). Built
    in the loader's collate, so that its pinned memory is the very tensor copied to the GPU
    (a batch assembled after the loader is unpinned, and its non_blocking copy synchronous)."""
    views = list(imgs) + [img.flip(-1) for img in imgs]
    if len({tuple(img.shape) for img in imgs}) == 1:
        return torch.stack(views), None
    return pad_to_canvas(views, stride)


def views_forward(forward: ForwardFn, views: torch.Tensor, valid: torch.Tensor | None,
                  labels: torch.Tensor, reduce: str) -> list[torch.Tensor]:
    """One pass over `mirrored_views` (on the device); labels (B, C). A padded canvas runs with
    every activation masked to each view's region (misc/seeds/padded_batch.py), so each output
    equals the image's own pass up to rounding. The mirror's output is flipped back and
    combined ('sum' as make_cam, 'mean' as make_amn_cam) -> [(C', h_i', w_i')] per image."""
    b = views.shape[0] // 2
    pair_labels = torch.cat([labels, labels])
    if valid is None:
        outs = list(forward(views, pair_labels))
    else:
        canvas = tuple(views.shape[-2:])
        with valid_region_masks(valid, canvas):
            out = forward(views, pair_labels)
        outs = crop_outputs(out, valid, canvas)
    merged = [outs[i] + outs[b + i].flip(-1) for i in range(b)]
    return [m / 2 for m in merged] if reduce == "mean" else merged


def flip_views_forward(forward: ForwardFn, imgs: torch.Tensor, labels: torch.Tensor,
                       reduce: str) -> torch.Tensor:
    """`views_forward` of same-size images (B, 3, h, w) -> (B, C', h', w')."""
    views, _ = mirrored_views(list(imgs), 1)
    return torch.stack(views_forward(forward, views, None, labels, reduce))


def padded_flip_views_forward(forward: ForwardFn, imgs: list[torch.Tensor], labels: torch.Tensor,
                              reduce: str, stride: int) -> list[torch.Tensor]:
    """`views_forward` of images of different sizes [(3, h_i, w_i)] in one zero-padded, masked
    pass -> [(C', ceil(h_i / stride), ceil(w_i / stride))]."""
    canvas, valid = pad_to_canvas(list(imgs) + [img.flip(-1) for img in imgs], stride)
    return views_forward(forward, canvas.to(labels.device), valid, labels, reduce)


def resize_sum(outs: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Sum over scales of bilinear (align_corners=False) resizes of (C, h, w) maps to `size`."""
    return sum(F.interpolate(o[None], size, mode="bilinear", align_corners=False)[0] for o in outs)


def _collate(samples: list[dict], stride: int = 16) -> dict:
    """Samples of possibly different sizes: per scale, the batch's `mirrored_views` ("views",
    "valid")."""
    per_scale = [mirrored_views([s["imgs"][k] for s in samples], stride)
                 for k in range(len(samples[0]["imgs"]))]
    return {"name": [s["name"] for s in samples], "size": [s["size"] for s in samples],
            "label": torch.stack([s["label"] for s in samples]),
            "views": [v for v, _ in per_scale], "valid": [m for _, m in per_scale]}


def run_multiscale_inference(dataset: MultiScaleDataset, forward: ForwardFn, merge: MergeFn,
                             out_dir: str | Path, device: torch.device, reduce: str,
                             batch_size: int = 8, num_workers: int = 0,
                             overwrite: bool = False, desc: str = "maps",
                             stride: int = 16, exact: bool = False) -> dict:
    """Write out_dir/<id>.npz for this rank's share of the dataset; skip finished images
    unless `overwrite`. Images of similar sizes share a batch (`views_forward`; `stride`: the
    network's output stride, the canvas multiple); with `exact` only images whose views have
    equal shapes (`dataset.views_size`), so no batch is padded. Returns counts and seconds."""
    out_dir = Path(out_dir)
    start = time.time()
    mine = dist.shard(list(range(len(dataset))))
    todo = {dataset.ids[i] for i in mine
            if overwrite or not is_done(out_dir / f"{dataset.ids[i]}.npz")}
    # batches formed over the whole share, so that a resumed run batches (and rounds) each image
    # as an uninterrupted one: bit-identical maps; a partly finished batch is recomputed
    sizes = [dataset.views_size(i) for i in mine]
    batches = [[mine[j] for j in b] for b in size_batches(sizes, batch_size, exact)]
    batches = [b for b in batches if any(dataset.ids[i] in todo for i in b)]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                        collate_fn=partial(_collate, stride=stride),
                        pin_memory=device.type == "cuda")
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not dist.is_main(), total=len(batches)):
            labels = batch["label"].to(device, non_blocking=True)
            outs = [views_forward(forward, views.to(device, non_blocking=True), valid, labels, reduce)
                    for views, valid in zip(batch["views"], batch["valid"])]
            for b, name in enumerate(batch["name"]):
                if name not in todo:
                    continue
                merged = merge([o[b] for o in outs], labels[b], batch["size"][b], name)
                save_maps(out_dir / f"{name}.npz", *(t.cpu().numpy() for t in merged))
    return {"written": len(todo), "skipped": len(mine) - len(todo),
            "seconds": time.time() - start}


def strided_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1


def present_keys(label: torch.Tensor) -> torch.Tensor:
    """0-based indices of the classes present in a (C,) multi-hot label."""
    return torch.nonzero(label)[:, 0]


def cam_merge(outs: list[torch.Tensor], label: torch.Tensor, size: tuple[int, int], _name=None):
    """make_cam's merge: sum of scales at stride 4 and at full size (via the 16-multiple size,
    then cropped), keep present classes, divide each by its max + 1e-5.

    outs: [(C, h_s, w_s)] >= 0; returns keys (K,) 0-based, cam (K, h4, w4), high_res (K, H, W)
    in [0, 1)."""
    h, w = size
    keys = present_keys(label)
    strided = resize_sum(outs, strided_size(size, 4))[keys]
    up = tuple(16 * n for n in strided_size(size, 16))
    high = resize_sum(outs, up)[keys, :h, :w]
    norm = lambda m: m / (m.amax(dim=(1, 2), keepdim=True) + 1e-5)
    return keys, norm(strided), norm(high)


def min_max(maps: torch.Tensor) -> torch.Tensor:
    """(K, h, w) maps min-max normalised per channel: (m - min) / (max - min + 1e-5), in [0, 1)."""
    lo, hi = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
    return (maps - lo) / (hi - lo + 1e-5)


def transcam_merge(outs: list[torch.Tensor], label: torch.Tensor, size: tuple[int, int],
                   _name=None):
    """make_transcam's merge (docs/bao.md §3.2): the views' flip-summed TransCAMs resized
    bilinearly straight to the image (and to stride 4) and summed, the present classes kept,
    ReLU, min-max per class.

    outs: [(C, h_s, w_s)] real-valued; returns keys (K,) 0-based, cam (K, h4, w4), high_res
    (K, H, W) in [0, 1)."""
    keys = present_keys(label)
    maps = [min_max(F.relu(resize_sum(outs, out_size)[keys]))
            for out_size in (strided_size(size, 4), tuple(size))]
    return keys, maps[0], maps[1]


def _bao_maps(scores: Callable[[tuple], torch.Tensor], label: torch.Tensor,
              size: tuple[int, int]) -> tuple:
    """BAO's inference rule on per-image scores (C+1, h, w) = `scores(out_size)` [background,
    classes] at stride 4 and full size: multiplied by [1, y], ReLU, each channel normalised as
    infer_bao (`reference_min_max`, absent classes -1), argmax. Returns keys (K,) 0-based, cam
    (K+1, h4, w4) and high_res (K+1, H, W) [background, present classes] clipped to [0, 1] for
    storage, and the full-size argmax label (H, W) uint8 in 0..C taken before the clip (the
    clip would send pixels where every channel sits at its minimum to background)."""
    keys = present_keys(label)
    keep = torch.cat([keys.new_zeros(1), keys + 1])
    gate = torch.cat([label.new_ones(1), label])[:, None, None]
    maps, hard = [], None
    for out_size in (strided_size(size, 4), tuple(size)):
        norm = reference_min_max(F.relu(scores(out_size) * gate))
        maps.append(norm[keep].clamp(0, 1))
        hard = norm.argmax(dim=0).to(torch.uint8)
    return keys, maps[0], maps[1], hard


def bao_merge(outs: list[torch.Tensor], label: torch.Tensor, size: tuple[int, int],
              _name=None):
    """make_bao's merge (docs/bao.md §4.2): the views' flip-summed [AM_0, M*_1..C] (C+1, h_s,
    w_s), real-valued, resized bilinearly to the image (and to stride 4) and summed, then
    `_bao_maps`' rule."""
    return _bao_maps(lambda out_size: resize_sum(outs, out_size), label, size)


def amn_probabilities(outs: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
    """AMN's per-pixel class probabilities: the mean of the scales' flip-averaged logits
    [(C+1, h_s, w_s)] resized bilinearly to `out_size`, softmax over the C+1 channels."""
    return F.softmax(resize_sum(outs, out_size) / len(outs), dim=0)


def bao_amn_merge(outs: list[torch.Tensor], label: torch.Tensor, size: tuple[int, int],
                  _name=None):
    """make_bao_amn's merge (docs/bao.md §5.2): BAO's rule (`_bao_maps`) on the BAO-trained
    AMN's probabilities (`amn_probabilities`): its background channel against its foreground
    channels, each min-max normalised, argmax."""
    return _bao_maps(lambda out_size: amn_probabilities(outs, out_size), label, size)


def amn_merge(ir_label_dir: str | Path) -> MergeFn:
    """make_amn_cam's merge (docs/pipeline.md §3.6): mean of the scales' logits at stride 4 and
    straight at full size, softmax, keep [background, present classes], min-max per channel, and
    keep the raw probability where the CAM IR label (PIL-nearest resized) is confident
    background. Beside the maps, the two threshold-free labels of the full-size probabilities
    (`threshold_free_labels`, docs/bao.md §5.1), which eval_amn_cam scores with
    --amn_bao_eval True.

    Returns keys (K,), cam (K+1, h4, w4), high_res (K+1, H, W), background first, in [0, 1],
    and labels (2, H, W) uint8 in 0..C."""
    def merge(outs: list[torch.Tensor], label: torch.Tensor, size: tuple[int, int], name: str):
        keys = present_keys(label)
        keep = torch.cat([keys.new_zeros(1), keys + 1])
        ir_label = load_png(Path(ir_label_dir) / f"{name}.png")
        maps = []
        for out_size in (strided_size(size, 4), tuple(size)):
            prob = amn_probabilities(outs, out_size)[keep]
            confident_bg = torch.from_numpy(pil_resize(ir_label, out_size, 0) == 0).to(prob.device)
            maps.append(torch.where(confident_bg, prob, min_max(prob)))
        return keys, maps[0], maps[1], threshold_free_labels(prob, keep)
    return merge
