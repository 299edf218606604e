"""Conformer-S (Peng et al., ICCV 2021) with TransCAM's heads and, optionally, BAO's two extra
layers (docs/bao.md).

Two branches run side by side: a ResNet-like CNN (stem, then bottlenecks of 256, 512 and 1024
channels at strides 4, 8 and 16) and a ViT (384-d tokens, one per 16x16 patch, plus a cls
token, 12 blocks of 6 heads). Feature coupling units join them in every block after the first:
FCUDown (1x1 conv, average pooling to the token grid, LayerNorm, GELU) feeds the CNN's mid
features into the tokens, FCUUp (1x1 conv, BatchNorm, ReLU, nearest upsampling) feeds the
tokens back into the CNN. As in TransCAM, the last fusion block keeps stride 1, so the final
CNN map is at stride 16 and has one cell per patch token; this is what lets the attention
propagate the CNN's CAM.

The module tree has the reference's names (`conv_1`, `trans_1`, `conv_trans_2..12` with
`cnn_block`, `fusion_block`, `squeeze_block`, `expand_block`, `trans_block`), so the state_dict
has the keys and shapes of TransCAM's and BAO's checkpoints (718 / 722 entries) and of the
ImageNet Conformer-S apart from its two heads; `load_conformer_weights` loads all three.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.errors import BadInput, MissingInput
from misc.io.checkpoints import network_of, read_weights

EMBED_DIM = 384
NUM_HEADS = 6
MLP_RATIO = 4
BASE_CHANNELS = 64 * 4  # base_channel 64 x channel_ratio 4 (Conformer-S)
PATCH = 16
HEAD_KEYS = ("trans_cls_head.weight", "trans_cls_head.bias",
             "conv_cls_head.weight", "conv_cls_head.bias")
BAO_KEYS = ("label_enc.weight", "label_enc.bias", "classifier_x.weight", "classifier_x.bias")
WEIGHTS_HELP = ("Pass a Conformer-S state_dict: the ImageNet Conformer_small_patch16.pth of "
                "pengzhiliang/Conformer (downloaded by hand: this project never downloads) or a "
                "TransCAM-trained file")
RANDOM_INIT = "none"  # the value of a starting-weights flag that asks for random initialisation


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole sample's residual branch with probability p
    and scale the kept ones by 1/(1-p), so the expectation is unchanged; identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention that also returns its attention, averaged over heads."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> (out (B, T, D), attention (B, T, T), rows >= 0 summing to 1)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (B, heads, T, T)
        out = (attn @ v).transpose(1, 2).reshape(b, t, d)
        return self.proj(out), attn.mean(dim=1)


class TransformerBlock(nn.Module):
    """Pre-norm ViT block (LayerNorm eps 1e-6), drop-path on both residual branches."""

    def __init__(self, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(EMBED_DIM, eps=1e-6)
        self.attn = Attention(EMBED_DIM, NUM_HEADS)
        self.norm2 = nn.LayerNorm(EMBED_DIM, eps=1e-6)
        self.mlp = Mlp(EMBED_DIM, EMBED_DIM * MLP_RATIO)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> (x (B, T, D), head-mean attention (B, T, T))."""
        y, attn = self.attn(self.norm1(x))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x))), attn


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-6)  # Conformer's blocks use eps 1e-6, the stem 1e-5


class ConvBlock(nn.Module):
    """Bottleneck (1x1, 3x3 with the stride, 1x1; width out/4) whose 3x3 conv may add the
    transformer's contribution to its input; a 1x1 projection shortcut when `res_conv`."""

    def __init__(self, inplanes: int, outplanes: int, stride: int = 1, res_conv: bool = False):
        super().__init__()
        mid = outplanes // 4
        self.conv1 = nn.Conv2d(inplanes, mid, 1, bias=False)
        self.bn1 = _bn(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(mid)
        self.conv3 = nn.Conv2d(mid, outplanes, 1, bias=False)
        self.bn3 = _bn(outplanes)
        self.res_conv = res_conv
        if res_conv:
            self.residual_conv = nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False)
            self.residual_bn = _bn(outplanes)

    def forward(self, x: torch.Tensor, x_t: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, in, H, W), x_t (B, out/4, H, W) or None -> (out (B, out, H/s, W/s) >= 0,
        mid features after the 3x3 (B, out/4, H/s, W/s) >= 0)."""
        y = F.relu(self.bn1(self.conv1(x)))
        mid = F.relu(self.bn2(self.conv2(y if x_t is None else y + x_t)))
        y = self.bn3(self.conv3(mid))
        shortcut = self.residual_bn(self.residual_conv(x)) if self.res_conv else x
        return F.relu(y + shortcut), mid


class FCUDown(nn.Module):
    """CNN mid features -> patch tokens (the cls token is taken from the current tokens)."""

    def __init__(self, inplanes: int, dw_stride: int):
        super().__init__()
        self.conv_project = nn.Conv2d(inplanes, EMBED_DIM, 1)
        self.sample_pooling = nn.AvgPool2d(dw_stride, dw_stride)
        self.ln = nn.LayerNorm(EMBED_DIM, eps=1e-6)

    def forward(self, x: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """x (B, C, h*s, w*s), x_t (B, 1+h*w, D) -> (B, 1+h*w, D)."""
        tokens = self.sample_pooling(self.conv_project(x)).flatten(2).transpose(1, 2)
        return torch.cat([x_t[:, :1], F.gelu(self.ln(tokens))], dim=1)


class FCUUp(nn.Module):
    """Patch tokens -> CNN features at the CNN's resolution (the cls token is dropped)."""

    def __init__(self, outplanes: int, up_stride: int):
        super().__init__()
        self.up_stride = up_stride
        self.conv_project = nn.Conv2d(EMBED_DIM, outplanes, 1)
        self.bn = _bn(outplanes)

    def forward(self, x_t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x_t (B, 1+h*w, D) -> (B, outplanes, h*s, w*s) >= 0."""
        grid = x_t[:, 1:].transpose(1, 2).reshape(x_t.shape[0], -1, h, w)
        y = F.relu(self.bn(self.conv_project(grid)))
        return F.interpolate(y, size=(h * self.up_stride, w * self.up_stride), mode="nearest")


class ConvTransBlock(nn.Module):
    """One Conformer stage block: CNN bottleneck -> FCUDown -> ViT block -> FCUUp -> fusion
    bottleneck (the last one of the network with a projection shortcut, stride 1)."""

    def __init__(self, inplanes: int, outplanes: int, res_conv: bool, stride: int, dw_stride: int,
                 drop_path: float, last_fusion: bool = False):
        super().__init__()
        self.dw_stride = dw_stride
        self.cnn_block = ConvBlock(inplanes, outplanes, stride, res_conv)
        self.fusion_block = ConvBlock(outplanes, outplanes, 1, res_conv=last_fusion)
        self.squeeze_block = FCUDown(outplanes // 4, dw_stride)
        self.expand_block = FCUUp(outplanes // 4, dw_stride)
        self.trans_block = TransformerBlock(drop_path)

    def forward(self, x: torch.Tensor, x_t: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, in, H, W), x_t (B, T, D) -> (x (B, out, H', W'), x_t (B, T, D),
        head-mean attention (B, T, T))."""
        x, mid = self.cnn_block(x)
        h, w = mid.shape[2] // self.dw_stride, mid.shape[3] // self.dw_stride
        x_t, attn = self.trans_block(self.squeeze_block(mid, x_t) + x_t)
        x, _ = self.fusion_block(x, self.expand_block(x_t, h, w))
        return x, x_t, attn


class ConformerOutput(NamedTuple):
    """One forward pass; K = n_classes + 1 channels, channel 0 = background (in TransCAM's heads
    channel 0 is never trained), h x w = the stride-16 grid, N = h*w patch tokens.

    conv_logits   (B, K)  GAP of conv_cam: z_cnn, real-valued
    trans_logits  (B, K)  trans_cls_head on the normalised cls token: z_trans, real-valued
    conv_cam      (B, K, h, w)  M = conv_cls_head(X_cnn), the plain CNN CAM, real-valued
    cam           (B, K, h, w)  TransCAM's M* = A* ⊗ M (propagate), real-valued
    attention     (B, N, N)     A*: per block the head-mean attention, patch rows and columns
                  only, summed over the blocks; >= 0, each row sums to <= depth (12)
    am            (B, K, h, w) or None  BAO's activation map A* ⊗ classifier_x(X_cnn ⊙ E(y)),
                  real-valued; only when label_cls was given
    """
    conv_logits: torch.Tensor
    trans_logits: torch.Tensor
    conv_cam: torch.Tensor
    cam: torch.Tensor
    attention: torch.Tensor
    am: torch.Tensor | None = None

    def bao_scores(self) -> torch.Tensor:
        """BAO's inference map (the reference's `camsfg_ambg`): the AM's background channel then
        TransCAM's foreground channels, (B, K, h, w), real-valued."""
        if self.am is None:
            raise BadInput("bao_scores needs the AM: call the network with label_cls")
        return torch.cat([self.am[:, :1], self.cam[:, 1:]], dim=1)


def propagate(attention: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """TransCAM's propagation out_c(i) = sum_j A(i, j) maps_c(j).
    attention (B, N, N), maps (B, K, h, w) with h*w = N -> (B, K, h, w)."""
    return torch.bmm(maps.flatten(2), attention.transpose(1, 2)).view_as(maps)


class Net(nn.Module):
    """Conformer-S with TransCAM's 21-way heads (and BAO's label_enc / classifier_x when
    `with_bao_layers`). `depth` (a multiple of 3; 12 is Conformer-S) exists so that tests can
    build a small network of the same structure.

    forward(img (B, 3, H, W) ImageNet-normalised, H and W multiples of 16,
            label_cls (B, n_classes) multi-hot float or None) -> ConformerOutput
    """

    def __init__(self, n_classes: int = 20, with_bao_layers: bool = False, depth: int = 12,
                 drop_path_rate: float = 0.1):
        super().__init__()
        if depth % 3 or depth < 3:
            raise BadInput(f"depth must be a positive multiple of 3 (Conformer-S: 12), got {depth}")
        k, top = n_classes + 1, 4 * BASE_CHANNELS  # 1024 channels at the end
        self.n_classes, self.depth, self.with_bao_layers = n_classes, depth, with_bao_layers
        # registration order = the reference's key order
        self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        if with_bao_layers:
            self.label_enc = nn.Linear(n_classes, top)
        self.trans_norm = nn.LayerNorm(EMBED_DIM)  # eps 1e-5 here, as in the reference
        self.trans_cls_head = nn.Linear(EMBED_DIM, k)
        self.conv_cls_head = nn.Conv2d(top, k, 3, padding=1)
        if with_bao_layers:
            self.classifier_x = nn.Conv2d(top, k, 3, padding=1)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # rising linearly
        self.conv_1 = ConvBlock(64, BASE_CHANNELS, res_conv=True)
        self.trans_patch_conv = nn.Conv2d(64, EMBED_DIM, PATCH // 4, stride=PATCH // 4)
        self.trans_1 = TransformerBlock(rates[0])
        for i in range(2, depth + 1):
            self.add_module(f"conv_trans_{i}", self._stage_block(i, rates[i - 1]))
        self._init_weights()

    def _stage_block(self, i: int, drop_path: float) -> ConvTransBlock:
        """Block i (2..depth): stage s = 0, 1, 2 for the thirds of the depth; the first block of
        stages 1 and 2 halves the resolution and doubles the channels."""
        per_stage = self.depth // 3
        stage = (i - 1) // per_stage
        first = i == stage * per_stage + 1 and stage > 0
        out = BASE_CHANNELS * 2 ** stage
        return ConvTransBlock(out // 2 if first else out, out, res_conv=first,
                              stride=2 if first else 1, dw_stride=(PATCH // 4) >> stage,
                              drop_path=drop_path, last_fusion=i == self.depth)

    def _init_weights(self) -> None:
        """Conformer's init: truncated normal (std .02) for Linear weights and the cls token,
        Kaiming (fan_out) for convs, ones/zeros for norms; the pretrained file replaces all but
        the heads (and BAO's layers, which keep this init as in BAO)."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def blocks(self) -> Iterator[ConvTransBlock]:
        return (getattr(self, f"conv_trans_{i}") for i in range(2, self.depth + 1))

    def backbone(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """img (B, 3, H, W) -> (X_cnn (B, 1024, H/16, W/16) >= 0, tokens (B, 1+N, 384),
        A* (B, N, N))."""
        if img.shape[2] % PATCH or img.shape[3] % PATCH:
            raise BadInput(f"Conformer input must be a multiple of {PATCH} pixels on each side "
                             f"(one token per patch on the CNN's stride-16 grid), got "
                             f"{tuple(img.shape[2:])}")
        base = self.maxpool(F.relu(self.bn1(self.conv1(img))))
        x, _ = self.conv_1(base)
        tokens = self.trans_patch_conv(base).flatten(2).transpose(1, 2)
        x_t, attn = self.trans_1(torch.cat([self.cls_token.expand(img.shape[0], -1, -1), tokens], 1))
        attn_sum = attn
        for block in self.blocks():
            x, x_t, attn = block(x, x_t)
            attn_sum = attn_sum + attn
        return x, x_t, attn_sum[:, 1:, 1:]

    def forward(self, img: torch.Tensor, label_cls: torch.Tensor | None = None) -> ConformerOutput:
        if label_cls is not None and not self.with_bao_layers:
            raise BadInput("label_cls feeds BAO's label_enc: build Net(with_bao_layers=True)")
        x, x_t, attention = self.backbone(img)
        conv_cam = self.conv_cls_head(x)
        trans_logits = self.trans_cls_head(self.trans_norm(x_t)[:, 0])
        am = None
        if label_cls is not None:
            am = propagate(attention, self.classifier_x(x * self.label_enc(label_cls)[:, :, None, None]))
        return ConformerOutput(conv_cam.mean(dim=(2, 3)), trans_logits, conv_cam,
                               propagate(attention, conv_cam), attention, am)


# ----------------------------------- loading weights -----------------------------------


@dataclass(frozen=True)
class ConformerLoad:
    """What load_conformer_weights did. kind: "imagenet", "transcam" or "bao" (what the file
    holds); dropped: the file's keys not loaded (the ImageNet heads); kept_init: the network's
    keys that keep their initialisation (its heads for ImageNet, BAO's layers for a TransCAM
    file loaded into a BAO network)."""
    kind: str
    dropped: tuple[str, ...]
    kept_init: tuple[str, ...]


def _file_kind(state: dict[str, torch.Tensor], path: Path, fix: str) -> str:
    """"imagenet" (conv_cls_head is a Linear), "bao" (label_enc present) or "transcam"."""
    if "trans_patch_conv.weight" not in state:
        what = network_of(set(state)) or f"no Conformer keys (first keys {sorted(state)[:3]})"
        raise BadInput(f"weights file {path} is not a Conformer-S state_dict: it holds {what}. "
                         f"{fix}")
    if "label_enc.weight" in state:
        return "bao"
    head = state.get("conv_cls_head.weight")
    return "imagenet" if head is not None and head.dim() == 2 else "transcam"


def load_conformer_weights(net: Net, path: str | Path, flag: str = "--conformer_weights"
                           ) -> ConformerLoad:
    """Load an ImageNet Conformer-S, TransCAM or BAO file into `net`, strict apart from the
    documented differences (docs/bao.md): an ImageNet file's four head keys (`HEAD_KEYS`: a
    1000-way trans_cls_head and a Linear conv_cls_head) are dropped and the net's heads keep
    their init; a TransCAM file into a BAO net leaves `BAO_KEYS` at their init (BAO's code
    skips them silently; here they are named in `kept_init`). Anything else that differs is a
    BadInput naming the file, the keys and `flag`, a missing file a MissingInput; a failed load
    leaves the net unchanged."""
    path, fix = Path(path), f"{WEIGHTS_HELP} as {flag}."
    state = read_weights(path, fix)
    kind = _file_kind(state, path, fix)
    dropped = tuple(k for k in HEAD_KEYS if k in state) if kind == "imagenet" else ()
    state = {k: v for k, v in state.items() if k not in dropped}
    kept = set(dropped) | (set(BAO_KEYS) if net.with_bao_layers and kind != "bao" else set())
    own = net.state_dict()
    missing = sorted(own.keys() - state.keys() - kept)
    unexpected = sorted(state.keys() - own.keys())
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in sorted(own.keys() & state.keys()) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise BadInput(
            f"weights file {path} ({kind} Conformer-S) does not fit net.conformer.Net("
            f"with_bao_layers={net.with_bao_layers}, depth={net.depth}, n_classes="
            f"{net.n_classes}): missing {missing[:5]}, unexpected {unexpected[:5]}, shape "
            f"mismatches {shapes[:5]}. {fix}")
    kept_init = tuple(k for k in own if k in kept)
    net.load_state_dict({**{k: own[k] for k in kept_init}, **state})
    return ConformerLoad(kind, tuple(dropped), kept_init)


def load_starting_weights(net: Net, value: str | Path | None, flag: str = "--conformer_weights"
                          ) -> ConformerLoad | None:
    """The starting weights of a training pass: `value` is the flag's value, a file for
    `load_conformer_weights`, or "none" (RANDOM_INIT), which keeps the network's random
    initialisation and returns None: only when asked, never because a file is missing (tests;
    the toy defaults to the Conformer-S pretrained on synthetic data: docs/bao.md §3.1)."""
    if value is None:
        raise MissingInput(
            f"no {flag} given: training starts from an ImageNet Conformer-S. {WEIGHTS_HELP} as "
            f"{flag}, or `{flag} {RANDOM_INIT}` to start from random initialisation (tests "
            f"only: docs/bao.md §3.1)")
    if str(value).lower() == RANDOM_INIT:
        return None
    return load_conformer_weights(net, value, flag)
