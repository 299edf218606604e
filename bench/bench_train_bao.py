"""Benchmark: train_bao's step time without and with the reference's anomaly detection.

Run from the repository root:
    python -m bench.bench_train_bao [--steps N] [--batch_size B] [--crop S] [--depth D]
                                    [--device cpu|cuda]

BAO's training script wraps its loop in `torch.autograd.set_detect_anomaly(True)`, which records
a traceback for every autograd node and checks every backward output for NaN. train_bao does
not (docs/bao.md §6). This times the same step both ways: a Conformer-S with BAO's layers
(random weights; --depth 12 is Conformer-S, fewer blocks for a quick run) as student, its copy
as teacher, step.train_bao's loss (the teacher's pseudo-labels, TransCAM's classification loss
plus the balanced smoothed CE), backward, AdamW and the EMA update: the work of one train_bao
update. One warm-up step per mode is excluded; the same batch every step. Prints the seconds per
step of each mode and their ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import time

import torch

from bench.bench_make_cam import N_CLASSES, sync
from misc.engine.ema import ema_update
from net.conformer import Net
from step.train_bao import CONFORMER, bao_loss


def step_seconds(student: torch.nn.Module, teacher: torch.nn.Module, batch: dict, steps: int,
                 anomaly: bool, device: torch.device) -> float:
    """Mean wall seconds of one BAO update over `steps` (after one warm-up update)."""
    loss_fn = bao_loss(CONFORMER, teacher, eps=0.4, l_pcl=1.0, fg_weight_of_epoch=lambda: 1.0)
    opt = torch.optim.AdamW(student.parameters(), lr=5e-5, weight_decay=5e-4)
    mode = torch.autograd.set_detect_anomaly(True) if anomaly else contextlib.nullcontext()
    with mode:
        for k in range(steps + 1):
            if k == 1:
                sync(device)
                t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_fn(student, batch).backward()
            opt.step()
            ema_update(teacher, student, 0.9995)
        sync(device)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--crop", type=int, default=256, help="square crop side (a multiple of 16)")
    p.add_argument("--depth", type=int, default=12, help="transformer blocks (12: Conformer-S)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    student = Net(N_CLASSES, with_bao_layers=True, depth=args.depth).to(device).train()
    teacher = copy.deepcopy(student).requires_grad_(False)
    labels = torch.zeros(args.batch_size, N_CLASSES, device=device)
    labels[:, 0] = labels[torch.arange(args.batch_size), torch.arange(args.batch_size) + 1] = 1
    batch = {"img": torch.randn(args.batch_size, 3, args.crop, args.crop, device=device),
             "label": labels}
    plain = step_seconds(student, teacher, batch, args.steps, False, device)
    anomaly = step_seconds(student, teacher, batch, args.steps, True, device)
    print(f"train_bao bench: batch {args.batch_size} x {args.crop}^2, Conformer depth "
          f"{args.depth}, {args.steps} steps, device {device}, threads {torch.get_num_threads()}")
    print(f"{'s/step, ours (no anomaly detection)':40}{plain:>10.3f}")
    print(f"{'s/step, with set_detect_anomaly(True)':40}{anomaly:>10.3f}")
    print(f"speed ratio (anomaly detection / ours): {anomaly / plain:.2f}x")


if __name__ == "__main__":
    main()
