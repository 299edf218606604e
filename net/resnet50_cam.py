"""CAM classifier of IRN/AMN: ResNet-50 (OS16) -> GAP -> 1x1 conv without bias.

The module tree mirrors the reference (`resnet50.*` plus `stage1..4` views of the same layers,
`classifier`), so its state_dict has the reference's keys. The reference's files also hold the
alias module lists `backbone.{0..3}.*` (= `stage1..4.*`) and `newly_added.0.*` (= `classifier.*`);
`checkpoint_keys` folds them on load (docs/pipeline.md §2.9), so its released
res50_cam.pth(.pth) loads strictly while this project's files keep one name per tensor.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.io.checkpoints import CheckpointKeys
from net.resnet50 import reference_backbone

# the reference's alias module lists -> the modules they alias (same tensors, saved twice)
REFERENCE_ALIASES = {**{f"backbone.{i}.": f"stage{i + 1}." for i in range(4)},
                     "newly_added.0.": "classifier."}


class Net(nn.Module):
    checkpoint_keys = CheckpointKeys(aliases=REFERENCE_ALIASES)

    def __init__(self, n_classes: int, backbone_weights: str | None = None):
        super().__init__()
        self.resnet50, stages = reference_backbone(backbone_weights)
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.classifier = nn.Conv2d(2048, n_classes, 1, bias=False)
        self.n_classes = n_classes
        self.frozen_stages = 2  # the reference trains stages 3-4 only (see freeze_stages)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised -> (B, 2048, ceil(H/16), ceil(W/16)); the output of stage
        `frozen_stages` detached (no backward through the frozen stages)."""
        for i, stage in enumerate((self.stage1, self.stage2, self.stage3, self.stage4), 1):
            x = stage(x)
            if i == self.frozen_stages:
                x = x.detach()
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classification logits (B, C)."""
        return self.classifier(self.features(x).mean(dim=(2, 3), keepdim=True)).flatten(1)

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """Class activation maps ReLU(W f) (B, C, ceil(H/16), ceil(W/16)), >= 0."""
        return F.relu(F.conv2d(self.features(x), self.classifier.weight))

    def freeze_stages(self, n: int) -> None:
        """Keep stages 1..n fixed in training (--cam_frozen_stages; conv1 and bn1 always are):
        no gradient, and no backward pass through them."""
        self.frozen_stages = n
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4)[:n]:
            for p in stage.parameters():
                p.requires_grad_(False)

    def param_groups(self) -> tuple[list, list]:
        """(backbone params, head params) for the 1x / 10x learning rates."""
        backbone = [p for p in self.resnet50.parameters() if p.requires_grad]
        return backbone, list(self.classifier.parameters())
