"""`python tests/ddp_tiny_train.py OUT` (alone or under torchrun, gloo): misc.engine.train.train on a
tiny dropout network, 3 epochs of 4 steps, a resumable state every step, resuming on.

Each rank's random stream is its own: the end-of-epoch hook draws on rank 0 only (as
train_amn's monitor does with inference dropout), so after epoch 1 the ranks' dropout masks
come from different generator states. Environment:
  STOP_AFTER=k   every rank exits (os._exit) once the state of step k is on disk, as a kill
  NAN_AT=k:r     rank r's loss is NaN at its k-th call (0-based); each rank that stops writes
                 OUT/stopped<rank>.txt with the message
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from misc.engine import dist
from misc.engine.train import NonFiniteLoss, train


class Points(Dataset):
    """n fixed points of a noisy linear target; no augmentation."""

    def __init__(self, n: int = 16):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


def network() -> torch.nn.Module:
    torch.manual_seed(0)  # the same init on every rank, as the steps do
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(16, 1))


def make_loss(stop_after: int | None, nan_at: tuple[int, int] | None):
    calls = []

    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        calls.append(1)
        if stop_after is not None and len(calls) == stop_after + 1:
            dist.barrier()  # rank 0 has written the state of step `stop_after`
            os._exit(3)
        loss = ((model(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
        if nan_at is not None and (len(calls) - 1, dist.world()[0]) == nan_at:
            loss = loss * float("nan")
        return loss
    return loss_fn


def end_of_epoch(model: torch.nn.Module, epoch: int) -> None:
    if dist.is_main():
        torch.rand(7)  # a main-rank-only draw, like a monitor pass with dropout on


def run(out: Path, stop_after: int | None = None, nan_at: tuple[int, int] | None = None) -> None:
    model = network()
    train(model, make_loss(stop_after, nan_at), Points(), 4, 3,
          lambda _steps: torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9),
          torch.device("cpu"), out / "net.pth", desc="tiny", end_of_epoch=end_of_epoch,
          checkpoint_every=1, resume=True)


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_distributed("cpu")
    stop = os.environ.get("STOP_AFTER")
    nan = os.environ.get("NAN_AT")
    try:
        run(out, int(stop) if stop else None, tuple(map(int, nan.split(":"))) if nan else None)
    except NonFiniteLoss as err:
        (out / f"stopped{dist.world()[0]}.txt").write_text(str(err))
        sys.exit(2)


if __name__ == "__main__":
    main()
