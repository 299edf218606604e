"""`python tests/ddp_bao_train.py OUT` (alone or under torchrun, gloo): BAO's self-training
mechanism (step.train_bao.self_train, with train_bao_amn's calls) on a tiny label-conditioned
network without BatchNorm or dropout, 3 epochs of 2 steps (8 samples, global batch 4): the
teacher a copy in epoch 0, an EMA (momentum 0.9 -> 1) after; a resumable state every step,
resuming on. Each rank writes OUT/teacher<rank>.pth, its own teacher at the end; rank 0 the
checkpoint OUT/bao.pth (student, teacher under teacher.*). Environment:
  HOLD_AFTER=k   once the state of step k is on disk every rank waits (to be SIGKILLed there)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from misc.engine import dist
from step.train_amn import amn_adam
from step.train_bao import BaoNetwork, self_train
from step.train_bao_amn import amn_network

N_CLASSES = 2


class TinyAMN(torch.nn.Module):
    """conv -> ReLU -> x label embedding -> 1x1 conv to C + 1 logits (B, C+1, H, W)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.label_enc = torch.nn.Linear(N_CLASSES, 8)
        self.head = torch.nn.Conv2d(8, N_CLASSES + 1, 1)

    def forward(self, img: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(img)) * self.label_enc(labels)[:, :, None, None]
        return self.head(x)


class Images(Dataset):
    """8 fixed 8x8 images, each with one or both classes."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.img = torch.randn(8, 3, 8, 8, generator=g)
        self.label = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]] * 2)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.img)

    def __getitem__(self, i: int) -> dict:
        return {"img": self.img[i], "label": self.label[i]}


def holding(network: BaoNetwork, out: Path, hold_after: int | None) -> BaoNetwork:
    """`network` whose student call waits forever once the state of step `hold_after` exists."""
    calls = []

    def student_outputs(forward, img, labels):
        calls.append(1)
        if hold_after is not None and len(calls) == hold_after + 1:
            dist.barrier()  # rank 0 has written the state of step `hold_after`
            (out / f"holding{dist.world()[0]}").touch()
            time.sleep(600)
        return network.student_outputs(forward, img, labels)
    return BaoNetwork(network.teacher_foreground, student_outputs)


def flags(out: Path) -> argparse.Namespace:
    return argparse.Namespace(
        device="cpu", num_workers=0, seed=0, checkpoint_every=1, resume=True, overwrite=False,
        amp=False, channels_last=False, metrics_file=str(out / "metrics.jsonl"),
        bao_eps=0.4, l_pcl=1.0, w_pcl=0.5, bao_w_pcl_counts=False, bao_ema_momentum=0.9,
        bao_ema_restart=True, bao_teacher_train_mode=True)


def run(out: Path, hold_after: int | None = None) -> torch.nn.Module:
    torch.manual_seed(0)  # the same init on every rank, as the steps do
    student = TinyAMN()
    params = list(student.parameters())
    seen = []

    def teacher_of(train):  # the engine's train, keeping the teacher it is given
        def wrapped(*args, **kwargs):
            seen.append(kwargs["extra_state"])
            return train(*args, **kwargs)
        return wrapped

    import step.train_bao as module
    module.train, original = teacher_of(module.train), module.train
    try:
        self_train(flags(out), student, holding(amn_network(0.5), out, hold_after), Images(),
                   lambda _steps: amn_adam(params[:2], params[2:], 1e-2, 1e-2, 0.0), 4, 3,
                   str(out / "bao.pth"), "tiny_bao")
    finally:
        module.train = original
    teacher = seen[0]
    torch.save(teacher.state_dict(), out / f"teacher{dist.world()[0]}.pth")
    return teacher


def main() -> None:
    out = Path(sys.argv[1])
    hold = os.environ.get("HOLD_AFTER")
    run(out, int(hold) if hold else None)


if __name__ == "__main__":
    main()
