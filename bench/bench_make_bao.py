"""Benchmark: make_bao's batched square views vs BAO's one-view-at-a-time inference loop.

Run from the repository root:
    python -m bench.bench_make_bao [--n_images N] [--size H W] [--sides S ...] [--depth D]
                                   [--device cpu|cuda] [--batch_size B]

Builds a temporary VOC-layout dataset (bench_make_cam's images: most share one size, a few
differ), runs a Conformer-S with BAO's layers (random weights, eval mode; --depth 12 is
Conformer-S, fewer blocks for a quick smoke run) through
  * reference style (infer_bao): a loader of batch 1; each image resized to s x s for every s of
    --sides and its mirror, one forward per view (6 with the reference's three sides); each
    view's [AM_0, M*_1..C] upsampled bilinearly to the image, multiplied by [1, y], un-flipped,
    summed; ReLU, infer_bao's per-channel min-max with its 1e-5 terms, argmax;
  * ours: misc.seeds.multiscale.run_multiscale_inference with bao_merge over SquareViewsDataset
    (every image of a batch and its mirror in one forward per side, no padding), as make_bao;
and reports both wall times (dataset creation and a warm-up forward excluded), images/s, the
ratio, the forward counts, and whether the outputs agree: the argmax labels (share of equal
pixels) and the maps of the present channels (max |difference|). TF32 is off on CUDA.

The two ways sum the same terms in another order (flips and scales summed before or after the
resize), so in float32 they differ by rounding, which infer_bao's per-channel min-max magnifies
where a channel is nearly constant on a large offset (random weights make such channels): a
few 1e-4 in the maps and a few argmax ties. `--dtype float64` runs both in double precision: the
check that they compute the same maps (equal labels, maps within the 16-bit storage step); time
in float32.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bench.bench_make_cam import N_CLASSES, CountingForward, image_sizes, sync, write_dataset
from misc.data.samples import SquareViewsDataset
from misc.io.maps import load_maps
from misc.seeds.multiscale import bao_merge, run_multiscale_inference
from net.conformer import Net
from voc12.dataloader import VOCDataset


def reference_loop(dataset: SquareViewsDataset, forward, device: torch.device,
                   num_workers: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """infer_bao's loop: per image, one view per forward. Returns {id: (label (H, W), maps of
    [background, present classes] (K+1, H, W) clipped to [0, 1])}."""
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers)
    results = {}
    with torch.inference_mode():
        for pack in loader:
            name, label = pack["name"][0], pack["label"][0].to(device)
            h, w = (int(v) for v in pack["size"])
            gate = torch.cat([label.new_ones(1), label])[:, None, None]
            total = 0.0
            for view in pack["imgs"]:
                view = view.to(device)
                for flip in (False, True):
                    x = view.flip(-1) if flip else view
                    s = forward(x, label[None])[0]
                    s = F.interpolate(s[None], (h, w), mode="bilinear", align_corners=False)[0]
                    total = total + (s.flip(-1) if flip else s) * gate
            total = total.clamp(min=0)
            lo = total.amin(dim=(1, 2), keepdim=True)
            hi = total.amax(dim=(1, 2), keepdim=True)
            total = torch.where(total < lo + 1e-5, 0.0, total)
            norm = (total - lo - 1e-5) / (hi - lo + 1e-5)
            keep = torch.cat([label.new_zeros(1, dtype=torch.long),
                              torch.nonzero(label)[:, 0] + 1])
            results[name] = (norm.argmax(0).cpu().numpy(),
                             norm[keep].clamp(0, 1).cpu().numpy())
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n_images", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    p.add_argument("--sides", type=int, nargs="+", default=(256, 512, 768))
    p.add_argument("--depth", type=int, default=12, help="transformer blocks (12: Conformer-S)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="float64: the exact agreement check (not a timing)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = Net(N_CLASSES, with_bao_layers=True, depth=args.depth).to(device, dtype).eval()
    scores = CountingForward(lambda pair: model(*pair).bao_scores())

    def forward(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return scores((x.to(dtype), labels.to(dtype)))  # (B, C+1, h, w) [AM_0, M*_1..C]
    with tempfile.TemporaryDirectory(prefix="bench_make_bao_") as tmp:
        tmp = Path(tmp)
        sizes = image_sizes(args.n_images, *args.size)
        ids = write_dataset(tmp / "voc", sizes)
        dataset = SquareViewsDataset(ids, VOCDataset(tmp / "voc"), "bench", tuple(args.sides))
        with torch.inference_mode():  # warm-up: first-call allocations / kernel selection
            forward(torch.zeros(2, 3, args.sides[0], args.sides[0], device=device),
                    torch.zeros(2, N_CLASSES, device=device))
        sync(device)
        scores.calls = 0  # the warm-up is not counted
        t0 = time.perf_counter()
        ref = reference_loop(dataset, forward, device, args.num_workers)
        sync(device)
        t_ref, n_ref = time.perf_counter() - t0, scores.calls
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # silence the progress bar
            run_multiscale_inference(dataset, forward, bao_merge, tmp / "ours", device,
                                     reduce="sum", batch_size=args.batch_size,
                                     num_workers=args.num_workers, overwrite=True, exact=True)
        sync(device)
        t_ours, n_ours = time.perf_counter() - t0, scores.calls - n_ref
        equal = total = 0
        d_maps = 0.0
        for i in ids:
            ours = load_maps(tmp / "ours" / f"{i}.npz")
            equal += int((ours["label"] == ref[i][0]).sum())
            total += ours["label"].size
            d_maps = max(d_maps, float(np.abs(ours["high_res"] - ref[i][1]).max()))
    n = args.n_images
    print(f"make_bao bench: {n} images ({len(set(sizes))} sizes), sides {tuple(args.sides)} "
          f"and flips, Conformer depth {args.depth}, {args.dtype}, device {device}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'':24}{'reference (1 view)':>20}{f'ours (bs {args.batch_size})':>16}")
    print(f"{'wall time (s)':24}{t_ref:>20.2f}{t_ours:>16.2f}")
    print(f"{'images/s':24}{n / t_ref:>20.2f}{n / t_ours:>16.2f}")
    print(f"{'forward passes':24}{n_ref:>20}{n_ours:>16}")
    print(f"speed ratio (reference / ours): {t_ref / t_ours:.2f}x")
    print(f"labels equal on {100 * equal / total:.4f}% of pixels; maps max |diff| {d_maps:.2e} "
          f"(16-bit storage: 7.6e-6) -> {'AGREE' if equal == total and d_maps < 1e-4 else 'DIFFER'}")


if __name__ == "__main__":
    main()
