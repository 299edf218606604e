"""ResNet-50 backbone of the IRN/AMN lineage, with torchvision's state_dict keys.

Topology: torchvision ResNet-50 v1.5 (stride on the 3x3 conv of a stage's first bottleneck),
layers [3, 4, 6, 3], strides (2, 2, 2, 1) -> output stride 16, no dilation. Every BatchNorm is a
FixedBatchNorm (running statistics in train and eval mode) unless a pretraining caller asks for
ordinary BatchNorm.

Optional arguments (defaults keep the above) serve DeepLab-V2 (net/deeplabv2.py): `layers`
(3, 4, 23, 3) gives ResNet-101, `dilations` dilates every 3x3 of a stage (DeepLab-V2: (1, 1, 2, 4)
with strides (2, 2, 1, 1) -> output stride 8), and `caffe_style` puts the stride on the first 1x1
conv and uses a ceil_mode max pool, as the MSRA/Caffe ResNet that deeplab-pytorch's weights were
trained with. None of them changes a state_dict key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.errors import BadInput, MissingInput

WEIGHTS_HELP = (
    "Pass --backbone_weights FILE with torchvision's ImageNet ResNet-50 state_dict "
    "(resnet50-19c8e357.pth or resnet50-0676ba61.pth from download.pytorch.org/models/, "
    "downloaded by hand: this project never downloads), or run `python -m data.pretrain_backbone` "
    "to build the synthetic-data backbone used with the toy dataset."
)


class FixedBatchNorm(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics (eps 1e-5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, norm: Callable[[int], nn.Module],
                 dilation: int = 1, stride_in_1x1: bool = False):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=s1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=s3, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), norm(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet50(nn.Module):
    """ResNet-50 (or -101 with layers=(3, 4, 23, 3)); `forward` returns the stage-4 features
    (B, 2048, ceil(H/16), ceil(W/16)) for the default strides, or logits (B, num_classes) when
    built with `num_classes`. `strides` = (conv1, layer2, layer3, layer4); `dilations` per
    layer1..layer4 apply to every 3x3 of the stage."""

    def __init__(self, strides: Sequence[int] = (2, 2, 2, 1), fixed_bn: bool = True,
                 num_classes: int | None = None, layers: Sequence[int] = (3, 4, 6, 3),
                 dilations: Sequence[int] = (1, 1, 1, 1), caffe_style: bool = False):
        super().__init__()
        norm = FixedBatchNorm if fixed_bn else nn.BatchNorm2d
        self.n_blocks = tuple(layers)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=strides[0], padding=3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=caffe_style)
        inplanes = 64
        stages = []
        for planes, blocks, stride, dil in zip((64, 128, 256, 512), layers,
                                               (1, strides[1], strides[2], strides[3]), dilations):
            stage = [Bottleneck(inplanes, planes, stride, norm, dil, caffe_style)]
            inplanes = planes * 4
            stage += [Bottleneck(inplanes, planes, 1, norm, dil) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(2048, num_classes) if num_classes else None

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        if self.fc is None:
            return x
        return self.fc(x.mean(dim=(2, 3)))


def load_backbone_weights(model: ResNet50, path: str | Path | None,
                          help_text: str = WEIGHTS_HELP) -> None:
    """Load torchvision-format ResNet weights into `model` (fc.* keys are ignored; BatchNorm
    `num_batches_tracked` counters, absent from pre-2018 torchvision files, are optional).

    Raises FileNotFoundError naming the flag (`help_text`) when the file is missing, and
    ValueError naming the offending keys when the file does not fit the model.
    """
    if path is None or not Path(path).is_file():
        raise MissingInput(f"backbone weights not found: {path!s}. {help_text}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or pickled-with-code files
        raise BadInput(f"cannot read backbone weights {path}: {err}. {help_text}") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own_state = model.state_dict()
    own = {k for k in own_state if not k.startswith("fc.")}
    missing = sorted(k for k in own - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - own)
    if missing or unexpected:
        depth = 3 * sum(getattr(model, "n_blocks", (3, 4, 6, 3))) + 2  # 50 or 101
        raise BadInput(
            f"{path} is not a torchvision ResNet-{depth} state_dict: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}. {help_text}")
    for key, value in state.items():
        if own_state[key].shape != value.shape:
            raise BadInput(f"{path}: key {key} has shape {tuple(value.shape)}, "
                             f"expected {tuple(own_state[key].shape)}. {help_text}")
    state.update({k: v for k, v in own_state.items()  # keep own head and absent counters
                  if k.startswith("fc.") or k not in state})
    model.load_state_dict(state)


def reference_backbone(weights: str | None) -> tuple[ResNet50, tuple[nn.Sequential, ...]]:
    """The CAM/AMN networks' backbone: ResNet-50 (OS16) with `weights` loaded (None: random) and
    conv1/bn1 frozen as in the reference, plus the reference's views of it (state_dict keys
    stage1..stage4): stage1 = conv1, bn1, relu, maxpool, layer1; stage2..4 = layer2..layer4."""
    r = ResNet50(strides=(2, 2, 2, 1))
    if weights is not None:
        load_backbone_weights(r, weights)
    for p in list(r.conv1.parameters()) + list(r.bn1.parameters()):
        p.requires_grad_(False)
    return r, (nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1), nn.Sequential(r.layer2),
               nn.Sequential(r.layer3), nn.Sequential(r.layer4))
