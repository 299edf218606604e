"""The training loop shared by train_cam, train_amn and train_irn.

One process or several under torchrun (DistributedDataParallel): each rank takes its slice of
every global batch (misc.dist.GlobalBatchSampler) and DDP averages the gradients, so the update
equals the one-process update on the same global batch. Losses are averaged over ranks before
they are logged; a non-finite loss stops the run before it touches the checkpoint.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from misc import dist
from misc.artifacts import save_checkpoint
from misc.session import log

# loss_fn(model, batch on device) -> scalar loss
LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # per step, averaged over ranks
    seconds: float = 0.0


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def train(model: torch.nn.Module, loss_fn: LossFn, dataset, batch_size: int, epochs: int,
          make_optimizer: Callable[[int], torch.optim.Optimizer], device: torch.device,
          out_path: str | Path, num_workers: int = 0, seed: int = 0, desc: str = "train",
          end_of_epoch: Callable[[torch.nn.Module, int], None] | None = None) -> TrainResult:
    """Train for `epochs` over `dataset` with global batch `batch_size`; save the state_dict
    to `out_path` on the main rank. `make_optimizer(max_step)` builds the optimiser."""
    start = time.time()
    model.to(device).train()
    rank, world_size = dist.world()
    sampler = dist.GlobalBatchSampler(len(dataset), batch_size, shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                      else None) if world_size > 1 else model
    optimizer = make_optimizer(len(sampler) * epochs)
    result = TrainResult()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        bar = tqdm(loader, desc=f"{desc} {epoch + 1}/{epochs}", disable=not dist.is_main())
        for batch in bar:
            loss = loss_fn(trained, _to_device(batch, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = dist.all_reduce_mean(loss.detach()).item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{desc}: loss became {value} at epoch {epoch + 1}, step {len(result.losses)}; "
                    f"nothing was saved. Lower the learning rate or check the labels.")
            result.losses.append(value)
            bar.set_postfix(loss=f"{value:.4f}")
        log(f"{desc}: epoch {epoch + 1}/{epochs} mean loss "
            f"{sum(result.losses[-len(sampler):]) / len(sampler):.4f}")
        if end_of_epoch is not None:
            end_of_epoch(model, epoch)
            model.train()
    if dist.is_main():
        save_checkpoint(out_path, model.state_dict())
        curve = Path(out_path).with_suffix(".losses.csv")  # the loss curve, for plots and tests
        curve.write_text("step,loss\n" + "".join(f"{i},{v!r}\n" for i, v in enumerate(result.losses)))
    dist.barrier()
    result.seconds = time.time() - start
    return result
