"""A copy of a VOC-layout root, and of its map and label folders, with every image scaled by a
factor: IRN on the toy at VOC's scale (docs/toy.md §7).

    python -m experiments.scaled_root --factor 4 --root data/toy --out data/toy_x4 \
        --maps result/amn_cam=result/x4/amn_cam result/cam=result/x4/cam \
        --labels result/amn_ir_label=result/x4/amn_ir_label

Images are resized bicubically, label PNGs (ground truth, instances, IR labels) by nearest
neighbour, and map files (.npz of make_cam / make_amn_cam) bilinearly: their full-size maps to
the scaled image and their stride-4 maps to its stride-4 size, so that IRN's passes read them as
if the chain had run on the scaled images. Lists and image-level labels are copied. The toy's
~112 px images at factor 4 are VOC-sized (~450 px), and their objects span as many stride-4
cells as VOC's.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from misc.io.maps import load_maps, save_maps
from misc.io.png import load_png, save_png
from misc.seeds.multiscale import strided_size


def scale_image(src: Path, dst: Path, factor: int) -> None:
    with Image.open(src) as img:
        w, h = img.size
        img.convert("RGB").resize((w * factor, h * factor), Image.BICUBIC).save(dst, quality=95)


def scale_png(src: Path, dst: Path, factor: int) -> None:
    save_png(dst, load_png(src).repeat(factor, 0).repeat(factor, 1))


def _resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(maps)[None]
    return F.interpolate(t, size, mode="bilinear", align_corners=False)[0].clamp(0, 1).numpy()


def scale_maps(src: Path, dst: Path, factor: int) -> None:
    maps = load_maps(src)
    h, w = maps["high_res"].shape[1:]
    size = (h * factor, w * factor)
    label = maps.get("label")
    if label is not None:
        label = label.repeat(factor, -2).repeat(factor, -1)
    save_maps(dst, maps["keys"], _resize(maps["high_res"], strided_size(size, 4)),
              _resize(maps["high_res"], size), label)


def scale_folder(src: Path, dst: Path, factor: int, suffix: str, fn) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(src.glob(f"*{suffix}"))
    for f in files:
        fn(f, dst / f.name, factor)
    return len(files)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--root", type=Path, required=True, help="a VOC-layout root (e.g. data/toy)")
    p.add_argument("--out", type=Path, required=True, help="the scaled root to write")
    p.add_argument("--maps", nargs="*", default=[], help="SRC=DST map folders (.npz)")
    p.add_argument("--labels", nargs="*", default=[], help="SRC=DST label folders (.png)")
    args = p.parse_args(argv)
    if args.out.resolve() == args.root.resolve():
        p.error("--out must differ from --root")
    for name in ("ImageSets", "cls_labels.csv", "class_names.txt"):
        src = args.root / name
        if src.is_dir():
            shutil.copytree(src, args.out / name, dirs_exist_ok=True)
        elif src.is_file():
            args.out.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, args.out / name)
    n = scale_folder(args.root / "JPEGImages", args.out / "JPEGImages", args.factor, ".jpg", scale_image)
    print(f"{n} images x{args.factor} -> {args.out / 'JPEGImages'}")
    for sub in ("SegmentationClass", "SegmentationObject"):
        if (args.root / sub).is_dir():
            scale_folder(args.root / sub, args.out / sub, args.factor, ".png", scale_png)
    for pair in args.labels:
        src, dst = pair.split("=", 1)
        print(f"{scale_folder(Path(src), Path(dst), args.factor, '.png', scale_png)} labels -> {dst}")
    for pair in args.maps:
        src, dst = pair.split("=", 1)
        print(f"{scale_folder(Path(src), Path(dst), args.factor, '.npz', scale_maps)} maps -> {dst}")


if __name__ == "__main__":
    main(sys.argv[1:])
