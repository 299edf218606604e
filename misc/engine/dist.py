"""Distributed helpers: torchrun/DDP setup, rank-aware sampling and sharding, device choice.

Training keeps the global batch of one process: with W processes each rank takes its slice of
every global batch, so the optimiser sees the same samples whatever W is.
"""
from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from misc.errors import BadInput


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


# How long a rank waits in a collective before NCCL's watchdog aborts it. Only the main rank
# validates (train_cam), monitors (train_amn), evaluates and scores, while the others wait in
# the next barrier; at COCO size such a pass takes hours, far past torch's 10-minute default.
DEFAULT_TIMEOUT_MINUTES = 360.0


def init_distributed(device_request: str = "auto",
                     timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> torch.device:
    """Initialise the process group when launched by torchrun and pick this process's device.

    device_request: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N" (one process only).
    Asking for CUDA on a machine without it is an error rather than a silent fallback. Under
    torchrun, rank LOCAL_RANK takes the LOCAL_RANK-th visible GPU, or the only one when the
    launcher shows each process one GPU (CUDA_VISIBLE_DEVICES per process). The device is set
    before the process group starts, so that NCCL binds each rank to its own GPU.
    """
    if device_request.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput("--device cuda was requested but this machine has no usable CUDA "
                           "device; pass --device cpu (or auto)")
    use_cuda = device_request.startswith("cuda") or (device_request == "auto"
                                                     and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device("cpu")
    if use_cuda:
        device = torch.device("cuda", cuda_index(device_request, int(os.environ.get("LOCAL_RANK", 0)),
                                                 world_size, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=timedelta(minutes=timeout_minutes))
        # tear the group down before interpreter shutdown: left to static destructors, gloo
        # can abort (SIGABRT) a process whose peer exited first
        atexit.register(_destroy)
    return device


def cuda_index(device_request: str, local_rank: int, world_size: int, visible: int) -> int:
    """The GPU number of this process among the `visible` ones (see init_distributed)."""
    explicit = torch.device(device_request).index if device_request.startswith("cuda") else None
    if explicit is not None:
        if world_size > 1:
            raise ValueError(f"--device {device_request} under torchrun: every rank would use "
                             f"GPU {explicit}; pass --device cuda (rank r takes GPU r) and choose "
                             f"the GPUs with CUDA_VISIBLE_DEVICES")
        if explicit >= visible:
            raise ValueError(f"--device {device_request}: only {visible} GPUs are visible")
        return explicit
    if visible == 1:
        return 0
    if local_rank >= visible:
        raise ValueError(f"LOCAL_RANK {local_rank} but only {visible} GPUs are visible: start "
                         f"at most {visible} processes per node")
    return local_rank


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def collective_device() -> torch.device:
    """Where a collective's tensor must live: NCCL reduces CUDA tensors only, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(value: torch.Tensor, op) -> torch.Tensor:
    """`value` reduced over ranks with `op`, on the collective's device and back on value's."""
    work = value.to(collective_device(), copy=True)
    dist.all_reduce(work, op=op)
    return work.to(value.device)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (identity in one process)."""
    if world()[1] == 1:
        return value
    return _all_reduce(value, dist.ReduceOp.SUM) / world()[1]


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over ranks (identity in one process), on value's device: a CPU tensor
    travels to the GPU and back under NCCL."""
    if world()[1] == 1:
        return value
    return _all_reduce(value, dist.ReduceOp.SUM)


def agree(ok: bool) -> bool:
    """True when `ok` holds on every rank. A collective (every rank must call it): a rank that
    hits a fault tells the others, so all stop together instead of some waiting forever in the
    next collective."""
    if world()[1] == 1:
        return ok
    return bool(_all_reduce(torch.tensor([int(ok)]), dist.ReduceOp.MIN).item())


def gather_to_main(obj: object) -> list | None:
    """Every rank's picklable `obj`, indexed by rank, on the main rank (None on the others).
    A collective."""
    rank, world_size = world()
    if world_size == 1:
        return [obj]
    out = [None] * world_size if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def shard(items: list, rank: int | None = None, world_size: int | None = None) -> list:
    """This rank's share of an inference list (every world_size-th item)."""
    r, w = world()
    return items[(r if rank is None else rank)::(w if world_size is None else world_size)]


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's slice of each global batch of a seeded per-epoch permutation.

    With W ranks, global batch i is perm[i*B:(i+1)*B] and rank r takes its r-th B/W slice, so
    the union over ranks equals the one-process batch. drop_last as in the reference.
    """

    def __init__(self, n: int, global_batch: int, shuffle: bool = True, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None):
        r, w = world()
        self.rank, self.world_size = (r if rank is None else rank), (w if world_size is None else world_size)
        if global_batch % self.world_size:
            raise BadInput(f"batch size {global_batch} is not divisible by the "
                             f"{self.world_size} processes")
        if n < global_batch:
            raise BadInput(f"the list has {n} images, fewer than one batch of {global_batch}; "
                             f"lower the batch size")
        self.n, self.batch, self.shuffle, self.seed, self.epoch = n, global_batch, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        local = self.batch // self.world_size
        for i in range(len(self)):
            start = i * self.batch + self.rank * local
            yield order[start:start + local]
