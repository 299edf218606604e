"""The training loop shared by train_cam, train_amn and train_irn.

One process or several under torchrun (DistributedDataParallel): each rank takes its slice of
every global batch (misc.dist.GlobalBatchSampler) and DDP averages the gradients, so the update
equals the one-process update on the same global batch. Losses are averaged over ranks before
they are logged; a non-finite loss stops the run before it touches the checkpoint.

Optional, for long runs: `max_steps` trains for a number of updates instead of whole epochs (the
last epoch is cut short), and `checkpoint_every` > 0 writes a training state (model, optimiser,
step, losses, RNG) to `<out_path stem>.state.pth` every that many steps; with `resume` a later
call continues from that state exactly where the killed run stopped (same batches, same
augmentations, since both are keyed by seed and epoch). The state file is removed once the
final checkpoint is written.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from misc import dist
from misc.artifacts import atomic_path, save_checkpoint
from misc.log import log

# loss_fn(model, batch on device) -> scalar loss
LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # per step, averaged over ranks
    seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        """Mean loss over the last tenth of the steps (a less noisy end-of-training value)."""
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return sum(tail) / len(tail) if tail else float("nan")


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class _SkipFirst(Sampler[list[int]]):
    """A batch sampler without its first `skip` batches (the resumed part of an epoch)."""

    def __init__(self, sampler: Sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __len__(self) -> int:
        return len(self.sampler) - self.skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)


def state_path(out_path: str | Path) -> Path:
    """Where `train` keeps the resumable training state of `out_path`."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".state.pth")


def _save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                max_step: int, batch_size: int, losses: list[float]) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "max_step": max_step, "batch_size": batch_size, "losses": list(losses),
             "rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                max_step: int, batch_size: int) -> tuple[int, list[float]]:
    """Restore a state written by `_save_state`; returns (step, losses)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if (state["max_step"], state["batch_size"]) != (max_step, batch_size):
        raise ValueError(
            f"{path} is the state of a run with {state['max_step']} steps at batch "
            f"{state['batch_size']}, not {max_step} at batch {batch_size}; delete it (or turn "
            f"resuming off) to start afresh")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if hasattr(optimizer, "global_step"):  # PolyOptimizer keeps its schedule position outside
        optimizer.global_step = state["step"]
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])
    return int(state["step"]), [float(v) for v in state["losses"]]


def train(model: torch.nn.Module, loss_fn: LossFn, dataset, batch_size: int, epochs: int,
          make_optimizer: Callable[[int], torch.optim.Optimizer], device: torch.device,
          out_path: str | Path, num_workers: int = 0, seed: int = 0, desc: str = "train",
          end_of_epoch: Callable[[torch.nn.Module, int], None] | None = None,
          max_steps: int | None = None, checkpoint_every: int = 0,
          resume: bool = False) -> TrainResult:
    """Train for `epochs` over `dataset` (or for `max_steps` updates when given) with global
    batch `batch_size`; save the state_dict to `out_path` on the main rank.
    `make_optimizer(max_step)` builds the optimiser."""
    start = time.time()
    model.to(device).train()
    rank, world_size = dist.world()
    sampler = dist.GlobalBatchSampler(len(dataset), batch_size, shuffle=True, seed=seed)
    per_epoch = len(sampler)
    total = max_steps if max_steps is not None else per_epoch * epochs
    epochs = math.ceil(total / per_epoch)
    trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                      else None) if world_size > 1 else model
    optimizer = make_optimizer(total)
    result = TrainResult()
    step, saved = 0, state_path(out_path)
    if resume and saved.is_file():
        step, result.losses = _load_state(saved, model, optimizer, total, batch_size)
        log(f"{desc}: resumed from {saved} at step {step}/{total}")
    for epoch in range(step // per_epoch, epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        done_in_epoch = step - epoch * per_epoch
        batches = _SkipFirst(sampler, done_in_epoch) if done_in_epoch else sampler
        # the loader seeds its workers from its own generator, not the global RNG that dropout
        # draws from: a resumed run then continues the global stream exactly
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                            pin_memory=device.type == "cuda", persistent_workers=False,
                            generator=torch.Generator().manual_seed(seed * 10007 + epoch))
        todo = min(len(batches), total - step)
        bar = tqdm(itertools.islice(loader, todo), total=todo,
                   desc=f"{desc} {epoch + 1}/{epochs}", disable=not dist.is_main())
        for batch in bar:
            loss = loss_fn(trained, _to_device(batch, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = dist.all_reduce_mean(loss.detach()).item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{desc}: loss became {value} at epoch {epoch + 1}, step {step}; the final "
                    f"checkpoint was not written. Lower the learning rate or check the labels.")
            result.losses.append(value)
            step += 1
            bar.set_postfix(loss=f"{value:.4f}")
            if checkpoint_every and step % checkpoint_every == 0 and step < total and dist.is_main():
                _save_state(saved, model, optimizer, step, total, batch_size, result.losses)
        n = len(result.losses) - epoch * per_epoch
        log(f"{desc}: epoch {epoch + 1}/{epochs} mean loss {sum(result.losses[-n:]) / n:.4f}")
        if end_of_epoch is not None:
            end_of_epoch(model, epoch)
            model.train()
    if dist.is_main():
        save_checkpoint(out_path, model.state_dict())
        curve = Path(out_path).with_suffix(".losses.csv")  # the loss curve, for plots and tests
        curve.write_text("step,loss\n" + "".join(f"{i},{v!r}\n" for i, v in enumerate(result.losses)))
        saved.unlink(missing_ok=True)
    dist.barrier()
    result.seconds = time.time() - start
    return result
