"""train_amn: the Activation Manipulation Network on the CAM IR labels (docs/pipeline.md §3.5).

Per-pixel classification with label smoothing (--eps) and fg/bg balanced means, Adam with the
backbone at 5e-6 and the new layers at 1e-4 (weight decay 1e-4, no schedule), random rescale ->
flip -> crop. Labels are downsampled to the logit size on the device with PIL NEAREST's pixels.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from misc.data.samples import MultiScaleDataset, SegmentationDataset
from misc.engine import dist
from misc.engine.log import log
from misc.engine.losses import balanced_smoothed_ce, downsample_labels
from misc.engine.train import train
from misc.eval.metrics import confusion_matrix, summary
from misc.io.metrics_file import append_metrics
from misc.io.png import load_png
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

STEP = Step(
    "train_amn", "the Activation Manipulation Network on the CAM IR labels (docs/pipeline.md "
                 "§3.5)",
    flags=(
        Flag("amn_network", default="net.resnet50_amn", help="module of the AMN network"),
        Flag("amn_crop_size", int, PROFILE, domain=COUNT),
        Flag("amn_batch_size", int, PROFILE, domain=COUNT),
        Flag("amn_num_epoches", int, PROFILE, domain=COUNT),
        Flag("amn_rescale", float, (0.5, 1.5), nargs=2, domain=Domain(0, low_open=True, ordered=True)),
        Flag("amn_learning_rate", float, PROFILE, help="Adam lr of the backbone", domain=POSITIVE),
        Flag("amn_head_learning_rate", float, PROFILE,
             help="Adam lr of the label encoder and the ASPP classifier", domain=POSITIVE),
        Flag("amn_weight_decay", float, 1e-4, domain=NON_NEGATIVE),
        Flag("eps", float, 0.4, help="label smoothing of the per-pixel loss", domain=FRACTION),
        Flag("amn_dropout", float, 0.1, help="dropout before the ASPP classifier", domain=FRACTION),
        Flag("amn_monitor", str2bool, False, shapes=False,
             help="after each epoch, single-scale mIoU on --chainer_eval_set (the reference "
                  "always does)"),
        Flag("amn_weights_name", default="sess/res50_amn.pth", shapes=False)),
    uses=("seed", "amp", "channels_last"), also_reads=("amn_deterministic",),
    reads=(Files("ir_label_out_dir", "train_list"), Files("backbone_weights")),
    writes=(Files("amn_weights_name"),), batch="amn_batch_size", trains_on=("train_list",),
    images=("train_list",))


def amn_loss(eps: float):
    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        logits = model(batch["img"], batch["label_cls"])
        label = downsample_labels(batch["label"], logits.shape[-2:])
        return balanced_smoothed_ce(logits, label, eps)
    return loss_fn


@torch.inference_mode()
def monitor_miou(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> float:
    """The reference's per-epoch check: single scale, no flip, full size, argmax over
    background + present classes, mIoU against the GT of the evaluation split."""
    data = context.dataset(args)
    ids = context.eval_ids(args)
    dataset = MultiScaleDataset(ids, data, args.chainer_eval_set, (1.0,))
    model.eval()
    model.set_inference_dropout(not args.amn_deterministic)
    n = data.n_classes + 1
    conf = np.zeros((n, n), np.int64)
    for i in range(len(dataset)):
        sample = dataset[i]
        h, w = sample["size"]
        label = sample["label"].to(device)
        logits = model(sample["imgs"][0][None].to(device), label[None])
        up = F.interpolate(logits, (16 * logits.shape[2], 16 * logits.shape[3]), mode="bilinear",
                           align_corners=False)[0, :, :h, :w]
        keys = torch.cat([label.new_zeros(1, dtype=torch.long), torch.nonzero(label)[:, 0] + 1])
        pred = keys[F.softmax(up, dim=0)[keys].argmax(0)].cpu().numpy()
        conf += confusion_matrix(pred, load_png(data.gt_dir() / f"{ids[i]}.png"), n)
    return summary(conf, ("background",) + data.class_names)["miou"]


def amn_adam(backbone: list, new: list, lr: float, head_lr: float,
             weight_decay: float) -> torch.optim.Adam:
    """Adam with the backbone at `lr` and the new layers at `head_lr`, as one fused kernel
    (faster than the per-tensor loop; the same update up to rounding)."""
    return torch.optim.Adam([{"params": backbone, "lr": lr}, {"params": new, "lr": head_lr}],
                            lr=lr, weight_decay=weight_decay, fused=True)


def run(args: argparse.Namespace) -> dict:
    data = context.dataset(args)
    device = context.device(args)
    dataset = SegmentationDataset(context.id_list(args.train_list), data, args.train_list,
                                  args.ir_label_out_dir, args.amn_crop_size,
                                  rescale=tuple(args.amn_rescale), seed=args.seed)
    torch.manual_seed(args.seed)
    model = context.network(args.amn_network, "--amn_network")(
        data.n_classes, args.backbone_weights, dropout=args.amn_dropout)
    backbone, new = model.param_groups()

    def make_optimizer(_max_step: int) -> torch.optim.Adam:
        return amn_adam(backbone, new, args.amn_learning_rate, args.amn_head_learning_rate,
                        args.amn_weight_decay)

    history = []

    def end_of_epoch(net: torch.nn.Module, epoch: int) -> None:
        if args.amn_monitor and dist.is_main():
            history.append(monitor_miou(net, args, device))
            log(f"train_amn: epoch {epoch + 1} {args.chainer_eval_set} mIoU "
                        f"{100 * history[-1]:.2f}")

    result = train(model, amn_loss(args.eps), dataset, args.amn_batch_size, args.amn_num_epoches,
                   make_optimizer, device, args.amn_weights_name, desc="train_amn",
                   end_of_epoch=end_of_epoch, **context.train_options(args))
    record = {"step": "train_amn", "seconds": round(result.seconds, 1),
              "final_train_loss": result.final_loss,
              "monitor_miou": history}
    if dist.is_main():
        append_metrics(args.metrics_file, record)
        log(f"train_amn: wrote {args.amn_weights_name} in {result.seconds:.0f} s")
    return {**record, "losses": result.losses}
