"""Benchmark: what the plan check's image test costs (misc.data.dataset.check_readable: each
image's header and end marker) against decoding every image, as a step would, on synthetic
VOC-size JPEGs (500x375, quality 90). The figure for VOC's 12,031 ids is extrapolated from
the per-image rate.

Run from the repository root:  python -m bench.bench_plan_images [--n 2000]
The files were just written, so both reads come from the page cache (a cold disk costs more,
the same for both).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from misc.data.dataset import check_readable
from misc.imutils import read_image

VOC_IDS = 12_031  # train_aug + val


def write_images(folder: Path, n: int, seed: int = 0) -> dict[str, Path]:
    """`n` JPEGs of smooth colour fields with noise (about VOC's file size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:375, 0:500] / 500.0
    paths = {}
    for i in range(n):
        a, b, c = rng.random(3)
        img = np.stack([np.sin(6 * a * yy + 3 * xx), np.cos(5 * b * xx), np.sin(4 * c * (xx + yy))], -1)
        img = (127 + 100 * img + rng.normal(0, 12, img.shape)).clip(0, 255).astype(np.uint8)
        paths[f"{i:06d}"] = folder / f"{i:06d}.jpg"
        Image.fromarray(img).save(paths[f"{i:06d}"], quality=90)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), n)
        mb = sum(p.stat().st_size for p in paths.values()) / n / 1e6
        start = time.perf_counter()
        check_readable(paths, "bench")
        check = time.perf_counter() - start
        start = time.perf_counter()
        for p in paths.values():
            read_image(p)
        decode = time.perf_counter() - start
    print(f"{n} images of 500x375 ({mb:.3f} MB each)")
    print(f"plan check (header + end marker): {check / n * 1e6:.0f} us/image, "
          f"{check / n * VOC_IDS:.2f} s for VOC's {VOC_IDS} ids")
    print(f"full decode (reference-style):    {decode / n * 1e6:.0f} us/image, "
          f"{decode / n * VOC_IDS:.1f} s for {VOC_IDS} ids")
    print(f"ratio: the check costs {check / decode:.3f} of decoding every image")


if __name__ == "__main__":
    main()
