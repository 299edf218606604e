"""The training loop shared by train_cam, train_amn, train_irn and train_seg.

One process or several under torchrun (DistributedDataParallel): each rank takes its slice of
every global batch (misc.engine.dist.GlobalBatchSampler) and DDP averages the gradients, so the update
equals the one-process update on the same global batch. Losses are averaged over ranks before
they are logged.

Optional, for long runs: `max_steps` trains for a number of updates instead of whole epochs (the
last epoch is cut short), and `checkpoint_every` > 0 writes a training state (model, optimiser,
fp16 loss scaler, step, losses, every rank's RNG, and a module trained beside the model such as
train_bao's teacher) to `<out_path stem>.state.pth` every that many steps; with
`resume` a later call continues from that state exactly where the killed run stopped (same
batches, same augmentations, since both are keyed by seed and epoch; same dropout, since each
rank gets its own random streams back). The state file is removed once the final checkpoint is
written. It carries the id of the record the driver wrote for `out_path` before training (the
inputs and flags it is trained from, docs/outputs.md): a state of another record is never
resumed from, but set aside with a message.

Faults (docs/pipeline.md §2.7): a non-finite loss, averaged over ranks so that every rank sees
it, stops training before the update (NonFiniteLoss); a state whose weights are not finite is
never written. The state file on disk is then the last good one, and the message says so.
"""
from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from misc.engine import dist
from misc.engine.log import log
from misc.engine.precision import Amp, grad_scaler, low_precision, prepare_model
from misc.errors import BadInput, UserError
from misc.io.atomic import atomic_path
from misc.io.checkpoints import save_checkpoint
from misc.io.records import read_record

# loss_fn(forward, batch on device) -> scalar float32 loss; `forward` is the model (or, under
# amp / channels_last, a function calling it with float32 outputs): loss_fn only calls it
LossFn = Callable[[Callable, dict], torch.Tensor]


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


class NonFiniteLoss(UserError, RuntimeError):
    """Training met a non-finite loss (or weights) and stopped; the message names the state
    file kept on disk, the last good one."""


def _rng_state(device: torch.device) -> dict:
    """This process's random streams: torch's CPU generator (dropout on the CPU), the device's
    CUDA generator (dropout on the GPU), and numpy's and python's global ones (unused by the
    steps today; kept so that a loss drawing from them resumes exactly too). Augmentation and
    batch order do not draw from these: they are keyed by (seed, epoch, index)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(cached))}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what `_rng_state` took (its CUDA stream only when both runs are on CUDA)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _finite(model: torch.nn.Module) -> bool:
    """Whether every floating-point weight and buffer is finite (one device sync)."""
    checks = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


def _save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                max_step: int, batch_size: int, losses: list[float], rngs: list[dict],
                record: str | None, scaler: torch.amp.GradScaler,
                extra: torch.nn.Module | None = None) -> None:
    """Write a resumable state (atomically); `rngs`: every rank's random streams, by rank;
    `record`: the id of the output record it trains towards; `scaler`: the fp16 loss scale
    and its growth counter (an empty dict when no scaler is active), without which an fp16
    run resumes at the initial scale and skips other steps than the uninterrupted one; `extra`:
    a module trained beside the model (train_bao's teacher), whose state_dict is kept too."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "extra": extra.state_dict() if extra is not None else {},
             "scaler": scaler.state_dict(), "step": step,
             "max_step": max_step, "batch_size": batch_size, "losses": list(losses),
             "world_size": len(rngs), "rng": rngs, "record": record}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


@dataclass
class _StateFile:
    """The resumable state of one `train` call: its file, how often it is written, and the step
    of the state this call last wrote or loaded (None: the file on disk is not this run's)."""
    path: Path
    every: int
    total: int
    batch_size: int
    device: torch.device
    desc: str
    out_path: Path
    record: str | None = None
    step: int | None = None
    extra: torch.nn.Module | None = None

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0 and step < self.total

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler, step: int, losses: list[float]) -> None:
        """Write the state with every rank's RNG, indexed by rank. A collective: every rank
        calls it, the main rank writes. Weights that are not finite are never written."""
        if not dist.agree(_finite(model)):
            raise NonFiniteLoss(self.stopped(
                f"the weights are no longer finite after iteration {step} of {self.total} (the "
                f"loss was still finite: an exploding gradient)"))
        rngs = dist.gather_to_main(_rng_state(self.device))
        if dist.is_main():
            _save_state(self.path, model, optimizer, step, self.total, self.batch_size, losses,
                        rngs, self.record, scaler, self.extra)
        self.step = step

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler) -> list[float] | None:
        """Restore the state on every rank, each rank its own random streams; returns the
        losses so far. The optimiser keeps this call's hyperparameters (lr, momentum, weight
        decay), so that a rerun with a lowered learning rate uses it. A state written towards
        another record (other inputs or flags) is set aside instead: returns None."""
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("record") != self.record:
            dist.barrier()  # every rank has read it before the main rank moves it
            aside = self.path.with_name(self.path.name.removesuffix(".pth") + ".set-aside.pth")
            if dist.is_main():
                self.path.replace(aside)
            log(f"{self.desc}: {self.path} was written by a run with other inputs or flags than "
                f"this one's: set aside as {aside.name}, training starts afresh")
            return None
        if (state["max_step"], state["batch_size"]) != (self.total, self.batch_size):
            raise BadInput(
                f"{self.path} is the state of a run with {state['max_step']} steps at batch "
                f"{state['batch_size']}, not {self.total} at batch {self.batch_size}; delete it "
                f"(or turn resuming off) to start afresh")
        model.load_state_dict(state["model"])
        if self.extra is not None:
            if not state.get("extra"):
                raise BadInput(f"{self.path} holds no state of the module trained beside the "
                               f"model (a teacher); delete it (or turn resuming off) to start "
                               f"afresh")
            self.extra.load_state_dict(state["extra"])
        settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        optimizer.load_state_dict(state["optimizer"])
        for group, own in zip(optimizer.param_groups, settings):
            group.update(own)
        if state.get("scaler") and scaler.is_enabled():  # fp16 then and now
            scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if hasattr(optimizer, "global_step"):  # PolyOptimizer keeps its schedule position outside
            optimizer.global_step = self.step
        _set_rng_state(self._own_rng(state["rng"]), self.device)
        return [float(v) for v in state["losses"]]

    def _own_rng(self, rngs: list[dict]) -> dict:
        """This rank's saved random streams. A state of another process count gives rank r the
        streams of saved rank r mod n: weights, optimiser and batches continue exactly, dropout
        draws do not (docs/pipeline.md §2.7)."""
        rank, world_size = dist.world()
        if len(rngs) != world_size:
            log(f"{self.desc}: {self.path} was written by {len(rngs)} processes and this run has "
                f"{world_size}: training continues from it, but its dropout draws differ from "
                f"those of an uninterrupted run")
        return rngs[rank % len(rngs)]

    def stopped(self, what: str) -> str:
        """The message of NonFiniteLoss: what happened, which state is kept, how to go on."""
        head = f"{self.desc}: {what}; training stopped and {self.out_path} was not written. "
        fix = "lower the learning rate (or check the labels and the input data) and rerun the same command"
        if self.step is not None:
            return (head + f"The last good resumable state, after iteration {self.step}, is kept "
                    f"in {self.path}: {fix}; it continues from that state.")
        if self.path.is_file():
            return (head + f"{self.path} is an earlier run's state, not this one's: delete it to "
                    f"start afresh, then {fix}.")
        every = f" (one is written every {self.every} steps)" if self.every else ""
        return head + f"No resumable state was written before it{every}: {fix}; it starts afresh."


def final_state(model: torch.nn.Module, extra: torch.nn.Module | None,
                prefix: str | None) -> dict[str, torch.Tensor]:
    """The final checkpoint: the model's state_dict, plus `extra`'s under `prefix` if given."""
    state = dict(model.state_dict())
    if extra is not None and prefix:
        state.update({prefix + k: v for k, v in extra.state_dict().items()})
    return state


def _epoch_loader(dataset, sampler: Sampler, num_workers: int, device: torch.device,
                  seed: int, epoch: int) -> DataLoader:
    # the loader seeds its workers from its own per-epoch generator, not the global RNG that
    # dropout draws from: a resumed run continues the global stream exactly, and its workers get
    # the same seeds (samples key their randomness by index, not by the worker's stream)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed * 10007 + epoch))


def _distributed(model: torch.nn.Module, device: torch.device,
                 world_size: int) -> torch.nn.Module:
    """The model under DistributedDataParallel when several processes train (on a GPU its
    device's index as device_ids, on the CPU none), the model itself in one process."""
    if world_size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None)


def _update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
            states: _StateFile, where: str) -> float:
    """One optimiser step on `loss`; returns the loss averaged over ranks. The check comes
    before the update, so the weights never see a non-finite loss; every rank gets the same
    mean, so all ranks stop together (none is left waiting in DDP's gradient all-reduce)."""
    value = dist.all_reduce_mean(loss.detach()).item()
    if not math.isfinite(value):
        raise NonFiniteLoss(states.stopped(f"the loss is {value} at {where}"))
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # the identity unless fp16 (misc/engine/precision.py)
    scaler.step(optimizer)
    scaler.update()
    return value


def train(model: torch.nn.Module, loss_fn: LossFn, dataset, batch_size: int, epochs: int,
          make_optimizer: Callable[[int], torch.optim.Optimizer], device: torch.device,
          out_path: str | Path, num_workers: int = 0, seed: int = 0, desc: str = "train",
          end_of_epoch: Callable[[torch.nn.Module, int], None] | None = None,
          max_steps: int | None = None, checkpoint_every: int = 0,
          resume: bool = False, amp: Amp = False, channels_last: bool = False,
          after_step: Callable[[int, int, int], None] | None = None,
          extra_state: torch.nn.Module | None = None,
          extra_prefix: str | None = None) -> TrainResult:
    """Train for `epochs` over `dataset` (or for `max_steps` updates when given) with global
    batch `batch_size`; save the state_dict to `out_path` on the main rank.
    `make_optimizer(max_step)` builds the optimiser. Raises NonFiniteLoss on every rank when
    the loss (averaged over ranks) or the weights stop being finite. `amp` / `channels_last`:
    the model's forward in mixed precision (True: the device's dtype, or a forced dtype) / that
    layout (misc/engine/precision.py); `loss_fn` gets float32 outputs either way.
    `after_step(epoch, k, per_epoch)`: called after every update, k the 0-based index of that
    update within its epoch of `per_epoch` updates (train_bao's teacher update); `extra_state`:
    a module updated beside the model (that teacher), saved in and restored from the resumable
    state with the model; `extra_prefix`: the final checkpoint also holds extra_state's
    state_dict, its keys under this prefix (train_bao's `teacher.`)."""
    start = time.time()
    prepare_model(model.to(device).train(), channels_last)
    world_size = dist.world()[1]
    sampler = dist.GlobalBatchSampler(len(dataset), batch_size, shuffle=True, seed=seed)
    per_epoch = len(sampler)
    total = max_steps if max_steps is not None else per_epoch * epochs
    epochs = math.ceil(total / per_epoch)
    trained = _distributed(model, device, world_size)
    forward = low_precision(trained, device, amp, channels_last)
    scaler = grad_scaler(device, amp)
    optimizer = make_optimizer(total)
    result = TrainResult()
    states = _StateFile(state_path(out_path), checkpoint_every, total, batch_size, device, desc,
                        Path(out_path), (read_record(out_path) or {}).get("id"), extra=extra_state)
    step = 0
    if resume and states.path.is_file():
        losses = states.load(model, optimizer, scaler)
        if losses is not None:
            result.losses, step = losses, states.step
            log(f"{desc}: resumed from {states.path} at step {step}/{total}")
    for epoch in range(step // per_epoch, epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        done_in_epoch = step - epoch * per_epoch
        batches = _SkipFirst(sampler, done_in_epoch) if done_in_epoch else sampler
        loader = _epoch_loader(dataset, batches, num_workers, device, seed, epoch)
        todo = min(len(batches), total - step)
        bar = tqdm(itertools.islice(loader, todo), total=todo,
                   desc=f"{desc} {epoch + 1}/{epochs}", disable=not dist.is_main())
        for batch in bar:
            value = _update(loss_fn(forward, _to_device(batch, device)), optimizer, scaler, states,
                            f"iteration {step + 1} of {total} (epoch {epoch + 1})")
            result.losses.append(value)
            if after_step is not None:
                after_step(epoch, step - epoch * per_epoch, per_epoch)
            step += 1
            bar.set_postfix(loss=f"{value:.4f}")
            if states.due(step) and step % per_epoch:  # at an epoch's end: after end_of_epoch
                states.save(model, optimizer, scaler, step, result.losses)
        n = len(result.losses) - epoch * per_epoch
        log(f"{desc}: epoch {epoch + 1}/{epochs} mean loss {sum(result.losses[-n:]) / n:.4f}")
        if end_of_epoch is not None:
            end_of_epoch(model, epoch)
            model.train()
        if states.due(step) and step % per_epoch == 0:  # the hook may draw random numbers too
            states.save(model, optimizer, scaler, step, result.losses)
    if dist.is_main():
        save_checkpoint(out_path, final_state(model, extra_state, extra_prefix))
        curve = Path(out_path).with_suffix(".losses.csv")  # the loss curve, for plots and tests
        curve.write_text("step,loss\n" + "".join(f"{i},{v!r}\n" for i, v in enumerate(result.losses)))
        states.path.unlink(missing_ok=True)
    dist.barrier()
    result.seconds = time.time() - start
    return result
