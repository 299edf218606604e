"""DeepLab-V2 with multi-scale inputs (MSC), the segmentation network of the last stage.

Architecture (docs/deeplab.md §1):
- backbone: ResNet-101 (or ResNet-50, `backbone="resnet50"`, used by the toy run) with frozen
  BatchNorm (FixedBatchNorm: running statistics always, gamma/beta not trained), strides
  (2, 2, 1, 1) and every 3x3 of layer3 / layer4 dilated 2 / 4 -> output stride 8
  (321 -> 41 logits);
- head: ASPP = the SUM of four 3x3 convs 2048 -> n_classes with dilation = padding = 6, 12, 18,
  24, bias, init N(0, 0.01) / 0; no BN, no ReLU, no image pooling;
- MSC: the same network on the input and on bilinear 0.5x and 0.75x copies (align_corners=False,
  size floor(H*s)); the smaller logits are resized bilinearly to the 1x logits and fused by an
  element-wise max. Training returns [l_1, l_0.5, l_0.75, l_max]; eval returns l_max.

Input: ImageNet-normalised RGB float32 (B, 3, H, W), as every data loader of this project makes
(misc.imutils.normalize). Output logits: (B, n_classes, h, w) with h = ceil(H/8)-ish (exactly
the conv arithmetic; 41 for 321).

state_dict keys: `backbone.*` with torchvision's ResNet names (conv1, bn1, layer1..layer4,
`layerK.J.convI` / `bnI` / `downsample.0|1`) and `aspp.c0..c3.weight|bias`.

Initial weights, from local files only (nothing is downloaded):
1. torchvision ImageNet ResNet-101 (`--seg_backbone_weights resnet101-63fe2227.pth`, the default
   `--seg_backbone_style torchvision`): loaded into the backbone by
   net.resnet50.load_backbone_weights; a key or shape mismatch is an error.
2. Caffe-origin DeepLab weights as deeplab-pytorch uses them (the ImageNet init the AdvCAM author
   distributes as deeplabv1_resnet101-imagenet.pth, the COCO init converted from
   init.caffemodel as deeplabv1_resnet101-coco.pth, or a trained
   deeplabv2_resnet101_msc-*.pth). Convert the names once, then select the Caffe conventions:

       python -m net.deeplabv2 convert deeplabv1_resnet101-coco.pth sess/r101_coco_init.pth
       python run_sample.py ... --seg_backbone_weights sess/r101_coco_init.pth \
           --seg_backbone_style caffe

   A file holding ASPP weights (a trained deeplab-pytorch model) converts to a whole DeepLab
   state_dict instead, usable as `--seg_weights_name` for eval_seg (with the same style flag).
   `--seg_backbone_style caffe` puts the stride on the first 1x1 conv, uses the ceil_mode max
   pool, and turns the normalised RGB input into the BGR, 0-255, mean-subtracted (B 104.008,
   G 116.669, R 122.675, no std) input those weights expect, exactly (an affine map per channel).
   The caffe init's COCO 91-class `fc` head is dropped, like the reference's "Skip init".
   Without the style flag, Caffe weights would see the wrong input scale: expect mIoU collapse.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.errors import BadInput
from misc.imutils import IMAGENET_MEAN, IMAGENET_STD
from net.aspp import ASPP
from net.aspp import ASPP_RATES as RATES
from net.resnet50 import FixedBatchNorm, ResNet50, load_backbone_weights

MSC_SCALES = (0.5, 0.75)
BACKBONES = {"resnet101": (3, 4, 23, 3), "resnet50": (3, 4, 6, 3)}
STYLES = ("torchvision", "caffe")
CAFFE_MEAN_RGB = (122.675, 116.669, 104.008)

SEG_WEIGHTS_HELP = (
    "Pass --seg_backbone_weights FILE: torchvision's ImageNet ResNet-101 state_dict "
    "(resnet101-*.pth from download.pytorch.org/models/, downloaded by hand: this project never "
    "downloads; ResNet-50 with --seg_backbone resnet50), or a deeplab-pytorch / Caffe init "
    "converted by `python -m net.deeplabv2 convert IN OUT` together with --seg_backbone_style "
    "caffe (see net/deeplabv2.py).")


class DeepLabV2(nn.Module):
    """Single-scale DeepLab-V2: backbone + ASPP (see the module docstring). `n_classes`
    includes the background. (B, 3, H, W) normalised RGB -> (B, n_classes, h, w) logits."""

    def __init__(self, n_classes: int, backbone: str = "resnet101", style: str = "torchvision",
                 rates: Sequence[int] = RATES):
        super().__init__()
        if backbone not in BACKBONES or style not in STYLES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)} (got {backbone!r}) "
                             f"and style one of {STYLES} (got {style!r})")
        self.style = style
        self.backbone = ResNet50(strides=(2, 2, 1, 1), layers=BACKBONES[backbone],
                                 dilations=(1, 1, 2, 4), caffe_style=style == "caffe")
        self.aspp = ASPP(2048, n_classes, rates)
        for m in self.backbone.modules():  # frozen BN: statistics and affine parameters
            if isinstance(m, FixedBatchNorm):
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)
        # normalised RGB -> BGR 0-255 minus the Caffe mean: x * scale + shift (per RGB channel)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float64) * 255
        shift = torch.tensor(IMAGENET_MEAN, dtype=torch.float64) * 255 - torch.tensor(CAFFE_MEAN_RGB)
        self.register_buffer("caffe_scale", std.float().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("caffe_shift", shift.float().view(1, 3, 1, 1), persistent=False)

    def single_scale(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone + ASPP on (B, 3, H, W) prepared input -> (B, n_classes, h, w) logits."""
        return self.aspp(self.backbone(x))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised RGB -> the input convention of the backbone's weights."""
        if self.style == "caffe":
            return (x * self.caffe_scale + self.caffe_shift).flip(1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.single_scale(self.prepare(x))

    def param_groups(self) -> tuple[list, list, list]:
        """(backbone conv weights, ASPP weights, ASPP biases): the 1x / 10x / 20x lr groups."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        weights = [m.weight for m in self.aspp.children()]
        biases = [m.bias for m in self.aspp.children()]
        return backbone, weights, biases

    def load_init(self, path: str | Path | None) -> None:
        """Load ImageNet (or converted COCO) backbone weights; the ASPP keeps its init."""
        load_backbone_weights(self.backbone, path, SEG_WEIGHTS_HELP)


class MSC(nn.Module):
    """Multi-scale inputs around a single-scale network `base` (which provides `prepare` and
    `single_scale`, as DeepLabV2): the base on the prepared input and on bilinear copies at
    `scales` (align_corners=False, size floor(H*s)); the smaller logits are resized to the 1x
    logits and fused by an element-wise max. Training returns [l_1, l_s..., l_max]; eval l_max.

    The state_dict keeps the base's own keys (`backbone.*`, `aspp.*`, no `base.` prefix), so
    checkpoints of the single-scale network and of this wrapper are the same files."""

    def __init__(self, base: nn.Module, scales: Sequence[float] = MSC_SCALES):
        super().__init__()
        self.base, self.scales = base, tuple(scales)
        self.register_state_dict_post_hook(_drop_base_prefix)
        self.register_load_state_dict_pre_hook(_add_base_prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.base.prepare(x)
        full = self.base.single_scale(x)
        small = [self.base.single_scale(F.interpolate(x, scale_factor=s, mode="bilinear",
                                                      align_corners=False)) for s in self.scales]
        up = [F.interpolate(o, full.shape[-2:], mode="bilinear", align_corners=False) for o in small]
        fused = torch.stack([full] + up).amax(dim=0)
        return [full] + small + [fused] if self.training else fused


def _drop_base_prefix(module: nn.Module, state: dict, prefix: str, _meta) -> None:
    for key in [k for k in state if k.startswith(prefix + "base.")]:
        state[prefix + key[len(prefix + "base."):]] = state.pop(key)


def _add_base_prefix(module: nn.Module, state: dict, prefix: str, *_args) -> None:
    for key in [k for k in state if k.startswith(prefix) and not k.startswith(prefix + "base.")]:
        state[prefix + "base." + key[len(prefix):]] = state.pop(key)


def deeplab_v2_msc(n_classes: int, backbone: str = "resnet101", style: str = "torchvision",
                   msc_scales: Sequence[float] = MSC_SCALES) -> MSC:
    """The segmentation network of the last stage: DeepLab-V2 inside MSC."""
    return MSC(DeepLabV2(n_classes, backbone, style), msc_scales)


# ---------------------- deeplab-pytorch / Caffe names -> this project's names ----------------------
_STEM = re.compile(r"layer1\.conv1\.(conv|bn)\.(.+)")
_BLOCK = re.compile(r"layer(\d)\.block(\d+)\.(reduce|conv3x3|increase|shortcut|proj)\.(conv|bn)\.(.+)")
_ASPP = re.compile(r"aspp\.(?:stages\.)?c(\d)\.(weight|bias)")
_UNIT = {"reduce": "1", "conv3x3": "2", "increase": "3"}


def convert_deeplab_pytorch(state: dict) -> tuple[dict, list[str]]:
    """Rename a deeplab-pytorch state_dict (`[module.][base.|scale.]layer2.block1.reduce.conv.
    weight`, ..., `aspp.c0.weight`) to this module's names (`backbone.layer1.0.conv1.weight`,
    ..., `aspp.c0.weight`). BatchNorm `num_batches_tracked` counters are added where absent.
    Returns (converted, dropped keys), e.g. the COCO init's `fc` head is dropped."""
    out, dropped = {}, []
    for key, value in state.items():
        name = re.sub(r"^(module\.)?((base|scale)\.)?", "", key)
        if m := _STEM.fullmatch(name):
            out[f"backbone.{m[1]}1.{m[2]}"] = value
        elif m := _BLOCK.fullmatch(name):
            layer, block, unit, kind, rest = int(m[1]) - 1, int(m[2]) - 1, m[3], m[4], m[5]
            if unit in _UNIT:
                new = f"{kind}{_UNIT[unit]}"
            else:
                new = "downsample." + ("0" if kind == "conv" else "1")
            out[f"backbone.layer{layer}.{block}.{new}.{rest}"] = value
        elif m := _ASPP.fullmatch(name):
            out[f"aspp.c{m[1]}.{m[2]}"] = value
        else:
            dropped.append(key)
    for key in [k for k in out if k.endswith(".running_mean")]:
        out.setdefault(key[:-len("running_mean")] + "num_batches_tracked",
                       torch.tensor(0, dtype=torch.long))
    return out, dropped


def convert_file(src: str | Path, dst: str | Path) -> str:
    """Convert a deeplab-pytorch .pth; writes a whole DeepLab state_dict when the file has ASPP
    weights, else a backbone-only state_dict in torchvision format. Returns a summary line."""
    from misc.io.checkpoints import save_checkpoint
    state = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    out, dropped = convert_deeplab_pytorch(state)
    if not any(k.startswith("backbone.") for k in out):
        raise BadInput(f"{src} has no deeplab-pytorch ResNet keys (layerK.blockJ.reduce...); "
                         f"first keys: {list(state)[:5]}")
    whole = any(k.startswith("aspp.") for k in out)
    if not whole:
        out = {k[len("backbone."):]: v for k, v in out.items()}
    save_checkpoint(dst, out)
    kind = "whole DeepLab state_dict (--seg_weights_name)" if whole else \
        "backbone state_dict (--seg_backbone_weights)"
    return f"wrote {dst}: {kind}, {len(out)} keys; dropped {len(dropped)}: {dropped[:5]}"


def _main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Convert deeplab-pytorch / Caffe-origin weights to "
                                            "this project's key names (use with "
                                            "--seg_backbone_style caffe).")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("src")
    c.add_argument("dst")
    args = p.parse_args(argv)
    print(convert_file(args.src, args.dst))


if __name__ == "__main__":
    _main()
