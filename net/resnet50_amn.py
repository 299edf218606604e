"""AMN: ResNet-50 (OS16) whose stage-4 features are scaled channel-wise by a linear embedding
of the image-level label (label conditioning), then Dropout(0.1) and a summed 4-branch ASPP
(3x3, rates 6/12/18/24) to C+1 classes (background first).

The module tree mirrors the reference, so the state_dict has the reference's keys and its
released res50_amn.pth(.pth) loads as it is. The reference registers the same modules under
several names; every alias is saved:
    resnet50.*            the backbone (torchvision names)
    stage1.0/1/4.*        conv1 / bn1 / layer1;  stage2.0.*, stage3.0.*, stage4.0.* = layer2..4
    backbone.{0..3}.*     stage1..stage4 again
    label_enc.*           Linear(C, 2048)
    classifier.1.c{0..3}.* the ASPP convolutions (classifier.0 is the dropout, no weights)
    newly_added.0.* = classifier.*, newly_added.1.* = label_enc.*
"""
from __future__ import annotations

import torch
import torch.nn as nn

from net.aspp import ASPP
from net.resnet50 import reference_backbone


class Net(nn.Module):
    """forward(img (B,3,H,W) normalised, label_cls (B,C) multi-hot float) ->
    logits (B, C+1, ceil(H/16), ceil(W/16)), channel 0 = background."""

    def __init__(self, n_classes: int, backbone_weights: str | None = None,
                 dropout: float = 0.1):
        super().__init__()
        self.resnet50, stages = reference_backbone(backbone_weights)
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.label_enc = nn.Linear(n_classes, 2048)
        self.classifier = nn.Sequential(nn.Dropout(dropout), ASPP(2048, n_classes + 1))
        self.backbone = nn.ModuleList([self.stage1, self.stage2, self.stage3, self.stage4])
        self.newly_added = nn.ModuleList([self.classifier, self.label_enc])
        self.n_classes = n_classes

    def forward(self, img: torch.Tensor, label_cls: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stage1(img))))
        x = x * self.label_enc(label_cls)[:, :, None, None]
        return self.classifier(x)

    def set_inference_dropout(self, active: bool) -> None:
        """Keep Dropout sampling at inference (the reference's behaviour, docs/quirks.md Q1) or not."""
        self.classifier[0].train(active)

    def param_groups(self) -> tuple[list, list]:
        """(backbone params, newly added params) for the two Adam learning rates."""
        backbone = [p for p in self.resnet50.parameters() if p.requires_grad]
        return backbone, list(self.classifier.parameters()) + list(self.label_enc.parameters())
