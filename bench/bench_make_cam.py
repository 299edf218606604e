"""Benchmark: make_cam's batched multi-scale inference vs the reference's one-image-at-a-time loop.

Run from the repository root:
    python -m bench.bench_make_cam [--n_images N] [--size H W] [--device cpu|cuda] [--batch_size B]

Builds a temporary VOC-layout dataset (most images share one size, a few differ, as in VOC), runs
the real ResNet-50 CAM network (random weights, eval mode) through
  * reference style: DataLoader with batch size 1, one forward of the pair [img, flip(img)]
    (2, 3, h_s, w_s) per scale, flip sum, per-image bilinear merges, max-normalisation, one file
    per image (misc.io.maps.save_maps instead of the reference's pickled np.save, so both sides
    write the same format at the same cost);
  * ours: misc.seeds.multiscale.run_multiscale_inference with cam_merge (reduce="sum") and batch size B,
and reports both wall times (dataset creation and a warm-up forward excluded), the speed ratio,
the number of forward passes of each side and whether every image's output agrees (keys equal,
cam and high_res within atol 1e-4). TF32 is switched off on CUDA so that the check is meaningful.
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
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from misc.data.samples import MultiScaleDataset
from misc.io.maps import load_maps, save_maps
from misc.seeds.multiscale import cam_merge, run_multiscale_inference
from net.resnet50_cam import Net
from voc12.dataloader import VOCDataset

SCALES = (1.0, 0.5, 1.5, 2.0)
N_CLASSES = 20


def image_sizes(n: int, h: int, w: int) -> list[tuple[int, int]]:
    """Three quarters of the images at (h, w), the rest at a few other sizes."""
    n_common = max(1, round(0.75 * n))
    others = [(w, h), (h + 16, w), (h, w - 16), (h - 12, w)]
    return [(h, w)] * n_common + [others[i % len(others)] for i in range(n - n_common)]


def write_dataset(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[str]:
    """JPEGImages/<id>.jpg (smooth colour fields + ellipses + noise) and cls_labels.csv."""
    from PIL import ImageDraw
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True)
    ids, rows = [], []
    for i, (h, w) in enumerate(sizes):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
            x1, y1 = x0 + rng.integers(w // 8, w // 2), y0 + rng.integers(h // 8, h // 2)
            draw.ellipse([int(x0), int(y0), int(x1), int(y1)],
                         fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        arr = np.asarray(img, np.float32) + rng.normal(0, 6, (h, w, 3))
        img_id = f"bench_{i:04d}"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(
            root / "JPEGImages" / f"{img_id}.jpg", quality=90)
        label = np.zeros(N_CLASSES, int)
        label[rng.choice(N_CLASSES, rng.integers(1, 4), replace=False)] = 1
        ids.append(img_id)
        rows.append(img_id + "," + ",".join(map(str, label)))
    header = "image_id," + ",".join(f"class{c}" for c in range(N_CLASSES))
    (root / "cls_labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return ids


class CountingForward:
    """Wraps the CAM forward and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fn(x)


class PairDataset(Dataset):
    """The reference's MSF sample: per scale the stacked pair [img, flip(img)] (2, 3, h_s, w_s)."""

    def __init__(self, base: MultiScaleDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        s = self.base[index]
        return {"name": s["name"], "size": s["size"], "label": s["label"],
                "imgs": [torch.stack([x, x.flip(-1)]) for x in s["imgs"]]}


def reference_make_cam(dataset: MultiScaleDataset, forward, out_dir: Path,
                       device: torch.device, num_workers: int) -> None:
    """One image per iteration, one forward per scale, per-image merge, one file per image."""
    loader = DataLoader(PairDataset(dataset), batch_size=1, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    with torch.inference_mode():
        for pack in loader:
            name, label = pack["name"][0], pack["label"][0]
            h, w = (int(v) for v in pack["size"])
            outs = []
            for pair in pack["imgs"]:
                a = forward(pair[0].to(device, non_blocking=True))
                outs.append(a[0] + a[1].flip(-1))
            strided_size = ((h + 3) // 4, (w + 3) // 4)
            up_size = (16 * ((h + 15) // 16), 16 * ((w + 15) // 16))
            strided = torch.stack([F.interpolate(o[None], strided_size, mode="bilinear",
                                                 align_corners=False)[0] for o in outs]).sum(0)
            high = torch.stack([F.interpolate(o[:, None], up_size, mode="bilinear",
                                              align_corners=False) for o in outs]).sum(0)
            high = high[:, 0, :h, :w]
            keys = torch.nonzero(label)[:, 0].to(device)
            strided, high = strided[keys], high[keys]
            strided = strided / (F.adaptive_max_pool2d(strided, (1, 1)) + 1e-5)
            high = high / (F.adaptive_max_pool2d(high, (1, 1)) + 1e-5)
            save_maps(out_dir / f"{name}.npz", keys.cpu().numpy(), strided.cpu().numpy(),
                      high.cpu().numpy())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n_images", type=int, default=16)
    p.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    torch.manual_seed(0)
    model = Net(N_CLASSES).to(device).eval()
    with tempfile.TemporaryDirectory(prefix="bench_make_cam_") as tmp:
        tmp = Path(tmp)
        sizes = image_sizes(args.n_images, *args.size)
        ids = write_dataset(tmp / "voc", sizes)
        voc = VOCDataset(tmp / "voc")
        dataset = MultiScaleDataset(ids, voc, "bench", SCALES)
        ref_dir, our_dir = tmp / "ref", tmp / "ours"
        ref_dir.mkdir()

        with torch.inference_mode():  # warm-up: first-call allocations / kernel selection
            for b in sorted({2, 2 * args.batch_size}):
                model.cam(torch.zeros(b, 3, *args.size, device=device))
        sync(device)

        ref_fwd = CountingForward(model.cam)
        t0 = time.perf_counter()
        reference_make_cam(dataset, ref_fwd, ref_dir, device, args.num_workers)
        sync(device)
        t_ref = time.perf_counter() - t0

        our_fwd = CountingForward(model.cam)
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # silence the progress bar
            run_multiscale_inference(dataset, lambda x, _l: our_fwd(x), cam_merge, our_dir,
                                     device, reduce="sum", batch_size=args.batch_size,
                                     num_workers=args.num_workers, overwrite=True)
        sync(device)
        t_ours = time.perf_counter() - t0

        n_equal, d_cam, d_high = 0, 0.0, 0.0
        for i in ids:
            r, o = load_maps(ref_dir / f"{i}.npz"), load_maps(our_dir / f"{i}.npz")
            same = (np.array_equal(r["keys"], o["keys"]) and r["cam"].shape == o["cam"].shape
                    and r["high_res"].shape == o["high_res"].shape)
            if same:
                d_cam = max(d_cam, float(np.abs(r["cam"] - o["cam"]).max()))
                d_high = max(d_high, float(np.abs(r["high_res"] - o["high_res"]).max()))
                same = (np.allclose(r["cam"], o["cam"], atol=1e-4)
                        and np.allclose(r["high_res"], o["high_res"], atol=1e-4))
            n_equal += same

    n_sizes = len(set(sizes))
    print(f"make_cam bench: {args.n_images} images ({n_sizes} sizes, {sizes.count(tuple(args.size))} "
          f"at {args.size[0]}x{args.size[1]}), scales {SCALES}, ResNet-50 CAM, device {device}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'':24}{'reference (bs 1)':>18}{f'ours (bs {args.batch_size})':>16}")
    print(f"{'wall time (s)':24}{t_ref:>18.2f}{t_ours:>16.2f}")
    print(f"{'images / s':24}{args.n_images / t_ref:>18.2f}{args.n_images / t_ours:>16.2f}")
    print(f"{'forward passes':24}{ref_fwd.calls:>18d}{our_fwd.calls:>16d}")
    print(f"speed-up (reference / ours): {t_ref / t_ours:.2f}x")
    print(f"outputs equal: {n_equal}/{len(ids)} images (max |diff| cam {d_cam:.2e}, "
          f"high_res {d_high:.2e}, atol 1e-4)")
    if n_equal != len(ids):
        raise SystemExit("MISMATCH between the reference-style and the batched outputs")


if __name__ == "__main__":
    main()
