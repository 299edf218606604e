"""Batches of images of different sizes that compute what each image alone would
(docs/pipeline.md §8.1).

Images are zero-padded on the right and bottom to one canvas (a multiple of the network's
output stride). Padding alone changes border activations: a convolution's bias or a
normalisation's shift makes the padded area non-zero, and the next 3x3 convolution near the
border reads it, where the image alone would read zero padding. So while the batch runs, the
4-D input of every module that looks at neighbouring pixels (a convolution with a kernel larger
than 1x1 or with padding, a pooling layer) is multiplied by each image's valid-region mask at
that resolution (valid size ceil(h / stride), the size a stride-s layer gives the image alone):
every such layer then sees zeros outside the image, exactly the zero padding of the image
alone. Pointwise layers (1x1 convolutions, normalisation, activations, dropout) need no mask:
what they leave outside the image is never read by a valid output before the next mask, and the
cropped outputs drop it. (Masking every leaf module's output instead cost 16% of make_cam.)
Max pooling pads with -inf instead of 0; both give the same maximum on non-negative inputs
(the ResNet stem pools after a ReLU). A network that mixes pixels in a functional call
(F.interpolate, F.conv2d with a 3x3 kernel) outside such modules is not covered. The outputs,
cropped to each image's valid size, equal the per-image outputs up to float rounding (tested on
the CAM and AMN networks).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def ceil_div(a: Tensor | int, b: int) -> Tensor | int:
    return -(-a // b)


def pad_to_canvas(imgs: Sequence[Tensor], multiple: int) -> tuple[Tensor, Tensor]:
    """[(C, h_i, w_i)] -> canvas (N, C, Hc, Wc) zero-padded right/bottom, Hc and Wc the largest
    sizes rounded up to `multiple`; and the valid sizes (N, 2) int64."""
    valid = torch.tensor([img.shape[-2:] for img in imgs], dtype=torch.int64)
    hc, wc = (int(ceil_div(int(v), multiple)) * multiple for v in valid.max(0).values)
    canvas = torch.stack([F.pad(img, (0, wc - img.shape[-1], 0, hc - img.shape[-2]))
                          for img in imgs])
    return canvas, valid


def crop_outputs(out: Tensor, valid: Tensor, canvas: tuple[int, int]) -> list[Tensor]:
    """(N, C', h, w) outputs of a canvas of size `canvas` -> each image's (C', ceil(h_i / s),
    ceil(w_i / s)) with s = canvas / output size."""
    sh, sw = _strides(out.shape[-2:], canvas)
    return [o[:, :ceil_div(int(v[0]), sh), :ceil_div(int(v[1]), sw)] for o, v in zip(out, valid)]


def _strides(size: Sequence[int], canvas: tuple[int, int]) -> tuple[int, int]:
    if canvas[0] % size[0] or canvas[1] % size[1]:
        raise ValueError(f"an activation of size {tuple(size)} does not divide the canvas "
                         f"{canvas}: pad the canvas to a multiple of the network's stride")
    return canvas[0] // size[0], canvas[1] // size[1]


# windowed layers; global (adaptive) pooling over a padded canvas differs from the image's own
# even with masks (the map-making networks have none before their outputs)
SPATIAL_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d, nn.Upsample)


def mixes_neighbours(module: nn.Module) -> bool:
    """Whether an output pixel of `module` reads input pixels other than its own position (or
    padding): such a module's input must be zero outside each image."""
    if isinstance(module, nn.Conv2d):
        return any(k > 1 for k in module.kernel_size) or module.padding not in ((0, 0), "valid")
    return isinstance(module, SPATIAL_POOLS)


@contextlib.contextmanager
def valid_region_masks(valid: Tensor, canvas: tuple[int, int]) -> Iterator[None]:
    """While active, the 4-D input of batch size N = len(valid) of every spatial module
    (`mixes_neighbours`) is zeroed outside each image's valid region (see the module
    docstring)."""
    cache: dict = {}

    def mask(size: tuple[int, int], like: Tensor) -> Tensor:
        key = (size, like.device, like.dtype)
        if key not in cache:
            sh, sw = _strides(size, canvas)
            vh = ceil_div(valid[:, 0], sh).to(like.device)
            vw = ceil_div(valid[:, 1], sw).to(like.device)
            rows = torch.arange(size[0], device=like.device)[None, :] < vh[:, None]
            cols = torch.arange(size[1], device=like.device)[None, :] < vw[:, None]
            cache[key] = (rows[:, None, :, None] & cols[:, None, None, :]).to(like.dtype)
        return cache[key]

    def hook(module: torch.nn.Module, inputs: tuple):
        if not mixes_neighbours(module) or not inputs:
            return None
        x = inputs[0]
        if isinstance(x, Tensor) and x.dim() == 4 and x.shape[0] == len(valid):
            return (x * mask(tuple(x.shape[-2:]), x), *inputs[1:])
        return None

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()
