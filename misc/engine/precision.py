"""Mixed precision and memory layout (`--amp`, `--channels_last`; docs/pipeline.md §8.1).

bf16 autocast where the device computes it natively (CPUs with AVX-512 BF16 / AMX, GPUs from
Ampere on), fp16 with a gradient scaler on older GPUs. Only the network's forward runs in low
precision: its outputs come back as float32, so merges, losses, normalisations and the random
walk keep their float32/float64 arithmetic.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch


def amp_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CPUs and on GPUs that support it, float16 on other GPUs."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def native_bf16(device: str | torch.device) -> bool:
    """Whether `device` ("auto", "cpu", "cuda", ...) computes bf16 natively: a GPU from Ampere
    on, a CPU with AVX-512 BF16 or AMX (elsewhere bf16 is emulated and slower than float32)."""
    kind = torch.device(device).type if str(device) != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """The autocast context of `device` (a no-op when not `enabled`)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype(device))


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A loss scaler, active only for fp16 (bf16 has float32's exponent range)."""
    active = enabled and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=active)


def as_float32(value: Any) -> Any:
    """Floating tensors (also inside tuples, named tuples, lists and dicts) cast to float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        items = [as_float32(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        return {k: as_float32(v) for k, v in value.items()}
    return value


def prepare_model(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """The model in channels_last layout when asked (in place; returns it)."""
    return model.to(memory_format=torch.channels_last) if channels_last else model


def low_precision(fn: Callable, device: torch.device, amp: bool,
                  channels_last: bool = False) -> Callable:
    """`fn` (a network or one of its methods, first argument a (B, 3, H, W) image batch) run
    under autocast when `amp`, the batch in channels_last when asked; float32 outputs."""
    if not amp and not channels_last:
        return fn

    def run(x: torch.Tensor, *args, **kwargs):
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            return as_float32(fn(x, *args, **kwargs))
    return run
