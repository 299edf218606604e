"""Mixed precision and memory layout (`--amp`, `--channels_last`; docs/pipeline.md §8.1).

bf16 autocast where the device computes it natively (CPUs with AVX-512 BF16 / AMX, GPUs from
Ampere on), fp16 with a gradient scaler on older GPUs. Only the network's forward runs in low
precision: its outputs come back as float32, so merges, losses, normalisations and the random
walk keep their float32/float64 arithmetic.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Union

import torch

# --amp: False (float32), True (the device's choice, `amp_dtype`), or a dtype that forces it
# (bench/gpu_check.py measures bf16 and fp16 on the same GPU)
Amp = Union[bool, torch.dtype]


def amp_on(amp: Amp) -> bool:
    """Whether `amp` asks for mixed precision at all."""
    return isinstance(amp, torch.dtype) or bool(amp)


def amp_dtype(device: torch.device, amp: Amp = True) -> torch.dtype:
    """The autocast dtype of `amp` on `device`: a forced dtype as given; else bfloat16 on CPUs
    and on GPUs that compute it natively, float16 (with a loss scaler) on other GPUs. A GPU
    that only emulates bf16 (V100, T4: `is_bf16_supported()` says True by emulation) takes
    fp16, which it computes in its tensor cores, instead of emulated bf16 that is slower than
    float32 (docs/gpu_check.md, "AMP decision")."""
    if isinstance(amp, torch.dtype):
        return amp
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
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


def autocast(device: torch.device, amp: Amp) -> contextlib.AbstractContextManager:
    """The autocast context of `device` in `amp_dtype(device, amp)` (a no-op when `amp` is
    off)."""
    if not amp_on(amp):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype(device, amp))


def grad_scaler(device: torch.device, amp: Amp) -> torch.amp.GradScaler:
    """A loss scaler, active only for fp16 (bf16 has float32's exponent range)."""
    active = amp_on(amp) and amp_dtype(device, amp) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=active)


@contextlib.contextmanager
def strict_float32() -> Iterator[None]:
    """While active: float32 means float32 on CUDA too (no TF32 in convolutions or matmuls)
    and cuDNN does not benchmark; the previous settings come back on exit. The driver runs
    every pass inside it (run_sample.run_pass), so a pass that allows TF32 (train_seg,
    eval_seg: --seg_tf32) or benchmarking changes neither for the passes after it, and the
    float32 reference of CAM / AMN / IRN is the same strict float32 on every device. These are
    process-wide switches of torch; on a CPU they change nothing."""
    backends = torch.backends
    saved = (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32, backends.cudnn.benchmark)
    allow_tf32(False)
    backends.cudnn.benchmark = False
    try:
        yield
    finally:
        backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32, backends.cudnn.benchmark = saved


def allow_tf32(allowed: bool) -> None:
    """TF32 for CUDA convolutions and matmuls on or off (process-wide; see strict_float32)."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed


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


def low_precision(fn: Callable, device: torch.device, amp: Amp,
                  channels_last: bool = False) -> Callable:
    """`fn` (a network or one of its methods, first argument a (B, 3, H, W) image batch) run
    under autocast when `amp` (True or a dtype), the batch in channels_last when asked; float32
    outputs."""
    if not amp_on(amp) and not channels_last:
        return fn

    def run(x: torch.Tensor, *args, **kwargs):
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            return as_float32(fn(x, *args, **kwargs))
    return run
