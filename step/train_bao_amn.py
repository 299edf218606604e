"""train_bao_amn: BAO's self-training on our ResNet-50 AMN (docs/bao.md §5.2).

The student and its teacher start from the trained AMN (--amn_weights_name). Per batch the
teacher's AMN map (the softmax of its logits, foreground channels: AMN's maps are designed to be
threshold-robust, where a ResNet-50 CAM peaks far below the 0.5 that BAO's label rule cuts at)
gives the pseudo-label p_t as in train_bao (max normalisation, background = 1 - max, argmax);
the student's own 21-channel logits are trained on the balanced smoothed CE against it, plus
--bao_amn_l_cls x a multilabel soft margin on their spatial mean (0 by default: the network is
given the labels the term asks for, so it constrains it little; its effect is not measured).
The teacher schedule, its resumable state and the flags --bao_eps, --l_pcl, --w_pcl,
--bao_ema_* and --bao_teacher_train_mode are train_bao's (`step.train_bao.self_train`); sizes,
augmentation (rescale, flip, crop) and the two Adam learning rates are train_amn's. Optional: a
whole-chain run adds it with --train_bao_amn_pass True.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from misc.data.samples import ClassificationDataset
from misc.engine.log import log
from misc.io.checkpoints import load_checkpoint
from step.driver import context
from step.driver.interface import NON_NEGATIVE, Files, Flag, Step
from step.train_amn import amn_adam
from step.train_bao import BaoNetwork, self_train

STEP = Step(
    "train_bao_amn", "BAO's self-training on the AMN network (docs/bao.md §5.2)",
    flags=(
        Flag("bao_amn_l_cls", float, 0.0, domain=NON_NEGATIVE,
             help="weight of a multilabel soft margin on the spatial mean of the student's "
                  "foreground logits (the spec's guard against drifting foreground; 0: off)"),
        Flag("bao_amn_weights_name", default="sess/res50_bao_amn.pth", shapes=False,
             help="the trained student (AMN's keys) and its teacher (under teacher.*)")),
    uses=("amn_network", "amn_crop_size", "amn_batch_size", "amn_num_epoches", "amn_rescale",
          "amn_learning_rate", "amn_head_learning_rate", "amn_weight_decay", "amn_dropout",
          "bao_eps", "l_pcl", "w_pcl", "bao_w_pcl_counts", "bao_ema_momentum", "bao_ema_restart",
          "bao_teacher_train_mode", "seed", "amp", "channels_last"),
    reads=(Files("amn_weights_name"),), writes=(Files("bao_amn_weights_name"),),
    batch="amn_batch_size", trains_on=("train_list",), images=("train_list",), optional=True)


def amn_network(l_cls: float) -> BaoNetwork:
    """BAO's calls on the AMN network: the teacher's softmax foreground channels; the
    student's logits, and l_cls x the soft margin of their foreground means."""
    def teacher_foreground(forward, img: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.softmax(forward(img, labels), dim=1)[:, 1:]

    def student_outputs(forward, img: torch.Tensor, labels: torch.Tensor) -> tuple:
        logits = forward(img, labels)
        if l_cls == 0:
            return logits, logits.new_zeros(())
        cls = F.multilabel_soft_margin_loss(logits[:, 1:].mean(dim=(2, 3)), labels)
        return logits, l_cls * cls
    return BaoNetwork(teacher_foreground, student_outputs)


def build_amn_student(args: argparse.Namespace, n_classes: int) -> torch.nn.Module:
    """The AMN network with the weights train_amn wrote (strict)."""
    model = context.network(args.amn_network, "--amn_network")(n_classes,
                                                               dropout=args.amn_dropout)
    load_checkpoint(model, args.amn_weights_name, made_by="train_amn (--train_amn_pass True)")
    log(f"train_bao_amn: student and teacher from {args.amn_weights_name}")
    return model


def run(args: argparse.Namespace) -> dict:
    data = context.dataset(args)
    train_set = ClassificationDataset(
        context.id_list(args.train_list), data, args.train_list, args.amn_crop_size,
        resize_long=None, rescale=tuple(args.amn_rescale), seed=args.seed)
    torch.manual_seed(args.seed)
    student = build_amn_student(args, data.n_classes)
    backbone, new = student.param_groups()

    def make_optimizer(_max_step: int) -> torch.optim.Adam:
        return amn_adam(backbone, new, args.amn_learning_rate, args.amn_head_learning_rate,
                        args.amn_weight_decay)

    return self_train(args, student, amn_network(args.bao_amn_l_cls), train_set, make_optimizer,
                      args.amn_batch_size, args.amn_num_epoches, args.bao_amn_weights_name,
                      "train_bao_amn")
