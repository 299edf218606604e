"""IRNet (Ahn et al., CVPR 2019): a frozen ResNet-50 with a class-boundary branch and a
displacement-field branch, both at stride 4 (docs/pipeline.md §3.9).

The module tree mirrors the reference, so the state_dict has its keys (`resnet50.*`,
`stage1..5.*`, `fc_edge1..6.*`, `fc_dp1..7.*`, `backbone.*`, `edge_layers.*`, `dp_layers.*`,
`mean_shift.running_mean`). The reference's checkpoint also holds its loss module's index
buffers (`path_indices*`, `ind_from`, `ind_to`, `disp_target`): `REFERENCE_LOSS_BUFFERS` names
them so that a loader can drop exactly those and stay strict about everything else.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from net.resnet50 import ResNet50, load_backbone_weights

REFERENCE_LOSS_BUFFERS = ("path_indices", "ind_from", "ind_to", "disp_target")


def _branch(in_ch: int, out_ch: int, groups: int, upsample: int = 1) -> nn.Sequential:
    """1x1 conv (no bias) -> GroupNorm -> [bilinear x upsample] -> ReLU."""
    layers = [nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.GroupNorm(groups, out_ch)]
    if upsample > 1:
        layers.append(nn.Upsample(scale_factor=upsample, mode="bilinear", align_corners=False))
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


class MeanShift(nn.Module):
    """Identity in training; subtracts the stored displacement mean in eval mode.

    Its only state is the reference's `running_mean` buffer (num_features,). Training never
    changes it: train_irn sets it once, after the last epoch, to the mean displacement over
    --infer_list computed in eval mode (misc.irn.ins_seg.fit_mean_shift, docs/pipeline.md §3.9)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_features, h, w) -> same shape, minus the mean in eval mode."""
        if self.training:
            return x
        return x - self.running_mean.view(1, -1, 1, 1)


class Net(nn.Module):
    """forward(x (B,3,H,W) normalised) -> (edge logits (B,1,h4,w4), displacement (B,2,h4,w4)),
    h4 = ceil(H/4). The reference freezes the whole backbone (outputs detached); `freeze_stages`
    can leave its later stages trainable. Its batch norms always keep their statistics (eval mode),
    as the CAM network's."""

    def __init__(self, backbone_weights: str | None = None):
        super().__init__()
        self.frozen_stages = 5
        self.resnet50 = ResNet50(strides=(2, 2, 2, 1))
        if backbone_weights is not None:
            load_backbone_weights(self.resnet50, backbone_weights)
        r = self.resnet50
        self.stage1 = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
        self.stage2, self.stage3 = nn.Sequential(r.layer1), nn.Sequential(r.layer2)
        self.stage4, self.stage5 = nn.Sequential(r.layer3), nn.Sequential(r.layer4)
        self.fc_edge1, self.fc_edge2 = _branch(64, 32, 4), _branch(256, 32, 4)
        self.fc_edge3 = _branch(512, 32, 4, upsample=2)
        self.fc_edge4 = _branch(1024, 32, 4, upsample=4)
        self.fc_edge5 = _branch(2048, 32, 4, upsample=4)
        self.fc_edge6 = nn.Conv2d(160, 1, 1, bias=True)
        self.fc_dp1, self.fc_dp2 = _branch(64, 64, 8), _branch(256, 128, 16)
        self.fc_dp3 = _branch(512, 256, 16)
        self.fc_dp4 = _branch(1024, 256, 16, upsample=2)
        self.fc_dp5 = _branch(2048, 256, 16, upsample=2)
        self.fc_dp6 = _branch(768, 256, 16, upsample=2)
        self.mean_shift = MeanShift(2)
        self.fc_dp7 = nn.Sequential(nn.Conv2d(448, 256, 1, bias=False), nn.GroupNorm(16, 256),
                                    nn.ReLU(inplace=True), nn.Conv2d(256, 2, 1, bias=False),
                                    self.mean_shift)
        self.backbone = nn.ModuleList([self.stage1, self.stage2, self.stage3, self.stage4, self.stage5])
        self.edge_layers = nn.ModuleList([self.fc_edge1, self.fc_edge2, self.fc_edge3,
                                          self.fc_edge4, self.fc_edge5, self.fc_edge6])
        self.dp_layers = nn.ModuleList([self.fc_dp1, self.fc_dp2, self.fc_dp3, self.fc_dp4,
                                        self.fc_dp5, self.fc_dp6, self.fc_dp7])
        self.freeze_stages(5)

    def freeze_stages(self, n: int) -> None:
        """Keep backbone stages 1..n fixed (--irn_frozen_stages; the reference: all 5): no
        gradient, and no backward pass into them. Stages after n train with the edge branch."""
        self.frozen_stages = n
        for i, stage in enumerate(self.backbone, 1):
            for p in stage.parameters():
                p.requires_grad_(i > n)

    def train(self, mode: bool = True) -> "Net":
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.backbone, 1):
            x = stage(x)
            if i <= self.frozen_stages:
                x = x.detach()
            feats.append(x)
        x1, x2, x3, x4, x5 = feats
        crop = lambda t, ref: t[..., :ref.shape[2], :ref.shape[3]]
        e2 = self.fc_edge2(x2)
        edges = [self.fc_edge1(x1), e2] + [crop(f(x), e2) for f, x in
                                           ((self.fc_edge3, x3), (self.fc_edge4, x4), (self.fc_edge5, x5))]
        edge = self.fc_edge6(torch.cat(edges, dim=1))
        d3 = self.fc_dp3(x3)
        d6 = self.fc_dp6(torch.cat([d3, crop(self.fc_dp4(x4), d3), crop(self.fc_dp5(x5), d3)], 1))
        d2 = self.fc_dp2(x2)
        disp = self.fc_dp7(torch.cat([self.fc_dp1(x1), d2, crop(d6, d2)], dim=1))
        return edge, disp

    def param_groups(self) -> tuple[list, list]:
        """(edge branch + trainable backbone params, displacement branch params) for the 1x / 10x
        learning rates."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        return list(self.edge_layers.parameters()) + backbone, list(self.dp_layers.parameters())
