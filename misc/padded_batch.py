"""Batches of images of different sizes that compute what each image alone would
(docs/pipeline.md §8.1).

Images are zero-padded on the right and bottom to one canvas (a multiple of the network's
output stride). Padding alone changes border activations: a convolution's bias or a
normalisation's shift makes the padded area non-zero, and the next 3x3 convolution near the
border reads it, where the image alone would read zero padding. So while the batch runs, every
4-D output of every leaf module is multiplied by each image's valid-region mask at that
resolution (valid size ceil(h / stride), the size a stride-s layer gives the image alone):
outside the image, every layer then sees zeros, exactly the zero padding of the image alone.
Max pooling pads with -inf instead of 0; both give the same maximum on non-negative inputs
(the ResNet stem pools after a ReLU). The outputs, cropped to each image's valid size, equal the
per-image outputs up to float rounding (tested on the CAM and AMN networks).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
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


@contextlib.contextmanager
def valid_region_masks(valid: Tensor, canvas: tuple[int, int]) -> Iterator[None]:
    """While active, every leaf module's 4-D output of batch size N = len(valid) is zeroed
    outside each image's valid region (see the module docstring)."""
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

    def hook(module: torch.nn.Module, _inputs, output):
        if next(module.children(), None) is not None:  # containers: their leaves did it
            return None
        if isinstance(output, Tensor) and output.dim() == 4 and output.shape[0] == len(valid):
            return output * mask(tuple(output.shape[-2:]), output)
        return None

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
