"""train_bao: BAO's self-training of a TransCAM network (docs/bao.md §4.1).

A student and a teacher Conformer-S with BAO's layers, both from the TransCAM weights. Per batch
the teacher's TransCAM gives the pseudo-label p_t (per-class max normalisation, background =
1 - max, argmax: misc/seeds/bao.py); the student is trained on TransCAM's classification loss
plus --l_pcl x the balanced smoothed per-pixel CE of its activation map against p_t. After
every update of epoch 0 the teacher is a copy of the student; from epoch 1 on an EMA of its
parameters with the cosine momentum --bao_ema_momentum -> 1, restarting every epoch as the
reference (docs/quirks.md Q28). The mechanism (`self_train`, `BaoNetwork`) serves BAO on
our AMN too (step/train_bao_amn.py). Optional: a whole-chain run adds it with
--train_bao_pass True.
"""
from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from misc.engine import dist
from misc.engine.ema import copy_into, cosine_momentum, ema_update
from misc.engine.log import log
from misc.engine.losses import balanced_smoothed_ce
from misc.engine.precision import low_precision, prepare_model
from misc.engine.train import train
from misc.io.checkpoints import TEACHER_PREFIX
from misc.io.metrics_file import append_metrics
from misc.seeds.bao import teacher_pseudo_labels
from net import conformer
from step.driver import context
from step.driver.interface import (
    COUNT,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    PROFILE,
    Domain,
    Files,
    Flag,
    Step,
    str2bool,
)
from step.train_transcam import check_patch_multiple, jittered_train_set, transcam_logits

STEP = Step(
    "train_bao", "BAO: self-training of the TransCAM network with a learned background "
                 "(docs/bao.md §4.1)",
    flags=(
        Flag("bao_crop_size", int, PROFILE, domain=COUNT,
             help="training crop side (a multiple of 16; the reference: 512)"),
        Flag("bao_resize_long", int, PROFILE, nargs=2, domain=Domain(1, ordered=True)),
        Flag("bao_batch_size", int, PROFILE, domain=COUNT,
             help="global batch (the reference hard-codes 8, docs/quirks.md Q29)"),
        Flag("bao_num_epoches", int, PROFILE, domain=COUNT,
             help="epochs (the reference's --max_epoches: 10)"),
        Flag("bao_learning_rate", float, PROFILE, domain=POSITIVE,
             help="AdamW learning rate, constant (the reference: 5e-5)"),
        Flag("bao_weight_decay", float, 5e-4, domain=NON_NEGATIVE,
             help="AdamW (decoupled) weight decay on every student parameter"),
        Flag("bao_eps", float, 0.4, domain=FRACTION,
             help="label smoothing of the per-pixel loss (as AMN's --eps)"),
        Flag("l_pcl", float, 1.0, domain=NON_NEGATIVE,
             help="weight lambda of the per-pixel loss (BAO's --l_pcl)"),
        Flag("w_pcl", float, 0.5, domain=NON_NEGATIVE,
             help="BAO's weight of the foreground pixels in epoch 0; it cancels in the "
                  "reference (docs/quirks.md Q26) unless --bao_w_pcl_counts True"),
        Flag("bao_w_pcl_counts", str2bool, False,
             help="False (the reference): --w_pcl has no effect; True: the foreground mean "
                  "of the per-pixel loss is multiplied by --w_pcl in epoch 0"),
        Flag("bao_ema_momentum", float, 0.9995, domain=FRACTION,
             help="the EMA momentum at the start of each cosine cycle (rising to 1)"),
        Flag("bao_ema_restart", str2bool, True,
             help="True (the reference, docs/quirks.md Q28): the cosine cycle restarts every "
                  "epoch; False: one cycle over all the EMA epochs"),
        Flag("bao_teacher_train_mode", str2bool, True,
             help="True (the reference, docs/quirks.md Q25): the teacher runs in train mode "
                  "(batch-statistics BatchNorm, active drop-path); False: eval mode"),
        Flag("bao_weights_name", default="sess/bao.pth", shapes=False,
             help="the trained student (722 keys, BAO's format) and its teacher (the same keys "
                  "under teacher.*)")),
    uses=("transcam_depth", "transcam_drop_path", "transcam_color_jitter", "seed", "amp",
          "channels_last"),
    reads=(Files("transcam_weights_name"),), writes=(Files("bao_weights_name"),),
    batch="bao_batch_size", trains_on=("train_list",), images=("train_list",),
    optional=True)


def teacher_momentum(epoch: int, k: int, per_epoch: int, epochs: int, base: float,
                     restart: bool) -> float | None:
    """The EMA momentum after update k (0-based) of `epoch`, None in epoch 0 (the teacher copies
    the student). restart: the cosine runs over each epoch's `per_epoch` updates (the
    reference); else once over the (epochs - 1) x per_epoch updates from epoch 1 on."""
    if epoch == 0:
        return None
    if restart:
        return cosine_momentum(k, per_epoch, base)
    return cosine_momentum((epoch - 1) * per_epoch + k, (epochs - 1) * per_epoch, base)


@dataclass(frozen=True)
class BaoNetwork:
    """How BAO's self-training calls one network (docs/bao.md §4.1, §5.2); each function gets
    the (teacher's or student's) forward, the images (B, 3, H, W) and their labels (B, C).

    teacher_foreground -> (B, C, h, w) real-valued foreground maps of the teacher, from which
        `teacher_pseudo_labels` makes the target;
    student_outputs -> (the student's activation map (B, C+1, h, w) logits, background first,
        its classification loss, a scalar)."""
    teacher_foreground: Callable[[Callable, torch.Tensor, torch.Tensor], torch.Tensor]
    student_outputs: Callable[[Callable, torch.Tensor, torch.Tensor],
                              tuple[torch.Tensor, torch.Tensor]]


def _conformer_student(forward, img: torch.Tensor, labels: torch.Tensor) -> tuple:
    out = forward(img, labels)
    return out.am, F.multilabel_soft_margin_loss(transcam_logits(out), labels)


# BAO's own network: the teacher's TransCAM M*_1..C as the foreground; the student's AM, and
# TransCAM's loss on z_cnn + z_trans
CONFORMER = BaoNetwork(lambda forward, img, labels: forward(img).cam[:, 1:], _conformer_student)


def bao_loss(network: BaoNetwork, teacher_forward, eps: float, l_pcl: float, fg_weight_of_epoch):
    """loss_fn of misc.engine.train: the student's classification loss plus l_pcl x the
    balanced smoothed CE of its activation map (B, C+1, h, w) against the teacher's
    pseudo-label at the same resolution."""
    def loss_fn(forward, batch: dict) -> torch.Tensor:
        img, labels = batch["img"], batch["label"]
        with torch.no_grad():
            fg = network.teacher_foreground(teacher_forward, img, labels)
            target = teacher_pseudo_labels(fg, labels)
        am, cls = network.student_outputs(forward, img, labels)
        return cls + l_pcl * balanced_smoothed_ce(am, target, eps, fg_weight_of_epoch())
    return loss_fn


def self_train(args: argparse.Namespace, student: torch.nn.Module, network: BaoNetwork,
               train_set, make_optimizer: Callable[[int], torch.optim.Optimizer],
               batch_size: int, epochs: int, out_path: str, step: str) -> dict:
    """BAO's student / teacher training of `student` (train_bao, train_bao_amn): the teacher a
    copy of the student after every update of epoch 0, an EMA of its parameters after that
    (`teacher_momentum` from --bao_ema_momentum, --bao_ema_restart), in train mode or not
    (--bao_teacher_train_mode); --bao_eps, --l_pcl, --w_pcl / --bao_w_pcl_counts as train_bao.
    The teacher is part of the resumable state, and of the final checkpoint under
    TEACHER_PREFIX. Appends the step's metrics line; returns it with the loss curve."""
    device = context.device(args)
    teacher = copy.deepcopy(student).to(device)
    teacher.requires_grad_(False)
    teacher.train(args.bao_teacher_train_mode)
    prepare_model(teacher, args.channels_last)

    def after_step(epoch: int, k: int, per_epoch: int) -> None:
        m = teacher_momentum(epoch, k, per_epoch, epochs, args.bao_ema_momentum,
                             args.bao_ema_restart)
        if m is None:
            copy_into(teacher, student)
        else:
            ema_update(teacher, student, m)
        teacher.train(args.bao_teacher_train_mode)

    def fg_weight() -> float:
        # the epoch train() set on the dataset: the one of the batch being trained on
        return args.w_pcl if args.bao_w_pcl_counts and train_set.epoch == 0 else 1.0

    teacher_forward = low_precision(teacher, device, args.amp, args.channels_last)
    loss = bao_loss(network, teacher_forward, args.bao_eps, args.l_pcl, fg_weight)
    result = train(student, loss, train_set, batch_size, epochs, make_optimizer, device,
                   out_path, desc=step, after_step=after_step, extra_state=teacher,
                   extra_prefix=TEACHER_PREFIX, **context.train_options(args))
    summary = {"step": step, "seconds": round(result.seconds, 1),
               "final_train_loss": result.final_loss}
    if dist.is_main():
        append_metrics(args.metrics_file, summary)
        log(f"{step}: wrote {out_path} (student, and the teacher under {TEACHER_PREFIX}*) in "
            f"{result.seconds:.0f} s")
    return {**summary, "losses": result.losses}


def build_student(args: argparse.Namespace, n_classes: int) -> conformer.Net:
    """The BAO network from the TransCAM weights (BAO's layers at their init, named)."""
    model = conformer.Net(n_classes, with_bao_layers=True, depth=args.transcam_depth,
                          drop_path_rate=args.transcam_drop_path)
    loaded = conformer.load_conformer_weights(model, args.transcam_weights_name,
                                              flag="--transcam_weights_name")
    log(f"train_bao: student and teacher from {args.transcam_weights_name} ({loaded.kind}; "
        f"kept at init: {', '.join(loaded.kept_init) or 'none'})")
    return model


def run(args: argparse.Namespace) -> dict:
    check_patch_multiple("bao_crop_size", [args.bao_crop_size])
    data = context.dataset(args)
    train_set = jittered_train_set(args, data, args.bao_crop_size, args.bao_resize_long)
    torch.manual_seed(args.seed)
    student = build_student(args, data.n_classes)

    def make_optimizer(_max_step: int) -> torch.optim.AdamW:
        return torch.optim.AdamW(student.parameters(), lr=args.bao_learning_rate,
                                 weight_decay=args.bao_weight_decay, eps=1e-8)

    return self_train(args, student, CONFORMER, train_set, make_optimizer, args.bao_batch_size,
                      args.bao_num_epoches, args.bao_weights_name, "train_bao")
