"""Where a ResNet-50 feature cell looks, against where the maps' upsampling puts it (docs/toy.md §7).

    python -m experiments.feature_alignment [--weights data/cache/resnet50_synthetic.pth]

For each backbone stage of the CAM / IRN ResNet-50 (strides 2, 2, 2, 1: output stride 16), the
centre of the receptive field of the middle cell j of a 128x128 input: the centroid of
|d feature(j) / d input| over the input pixels, rows and columns. Bilinear upsampling with
align_corners=False, as make_cam and the reference use it, puts cell j at pixel
stride * j + (stride - 1) / 2. The difference is the shift that upsampling adds to every map,
in pixels, down and to the right. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from net.resnet50 import ResNet50, load_backbone_weights

SIZE = 128
STRIDES = (4, 4, 8, 16, 16)  # output stride of stages 1..5 with strides (2, 2, 2, 1)


def receptive_centres(model: ResNet50) -> list[tuple[float, float]]:
    """(row, col) centroid of the input gradient of each stage's middle cell, in pixels."""
    stages = [torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
              model.layer1, model.layer2, model.layer3, model.layer4]
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0), requires_grad=True)
    outs, y = [], x
    for stage in stages:
        y = stage(y)
        outs.append(y)
    rows = torch.arange(SIZE, dtype=torch.float64).view(-1, 1)
    cols = torch.arange(SIZE, dtype=torch.float64).view(1, -1)
    centres = []
    for out in outs:
        j = out.shape[2] // 2
        grad, = torch.autograd.grad(out[0, :, j, j].abs().sum(), x, retain_graph=True)
        w = grad.abs().sum(1)[0].double()
        centres.append((float((w * rows).sum() / w.sum()), float((w * cols).sum() / w.sum())))
    return centres


def alignment(weights: str | None) -> list[dict]:
    torch.manual_seed(0)
    model = ResNet50(strides=(2, 2, 2, 1))
    if weights:
        load_backbone_weights(model, weights)
    model.eval()
    rows = []
    for stage, ((cy, cx), stride) in enumerate(zip(receptive_centres(model), STRIDES), 1):
        j = (SIZE // stride) // 2
        assumed = stride * j + (stride - 1) / 2
        rows.append({"stage": stage, "stride": stride, "cell": j,
                     "receptive_centre": [round(cy, 2), round(cx, 2)], "upsampling_puts_it_at": assumed,
                     "shift_px": [round(assumed - cy, 2), round(assumed - cx, 2)]})
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="torchvision-format ResNet-50 weights (default: random)")
    args = p.parse_args(argv)
    result = {"weights": args.weights or "random", "stages": alignment(args.weights)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
