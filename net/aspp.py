"""DeepLab-V2's atrous spatial pyramid pooling, shared by AMN and DeepLab-V2."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

ASPP_RATES = (6, 12, 18, 24)


class ASPP(nn.Module):
    """Sum of parallel dilated 3x3 convs (B, in_ch, h, w) -> (B, out_ch, h, w); weights
    N(0, 0.01), bias 0; children named c0..c3 as in the reference checkpoints."""

    def __init__(self, in_ch: int, out_ch: int, rates: Sequence[int] = ASPP_RATES):
        super().__init__()
        for i, rate in enumerate(rates):
            conv = nn.Conv2d(in_ch, out_ch, 3, padding=rate, dilation=rate, bias=True)
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)
            self.add_module(f"c{i}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(conv(x) for conv in self.children())
