"""train_cam: the ResNet-50 CAM classifier (docs/pipeline.md §3.1).

Multilabel soft-margin loss, poly SGD (lr x1 backbone / x10 head, the reference's momentum quirk
by default), resize_long -> flip -> crop; per-epoch validation loss and mAP on val_list.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from misc.data.samples import ClassificationDataset
from misc.engine import dist
from misc.engine.log import log
from misc.engine.optim import PolyOptimizer
from misc.engine.precision import low_precision
from misc.engine.train import train
from misc.eval.metrics import mean_average_precision
from misc.io.metrics_file import append_metrics
from step.driver import context
from step.driver.interface import COUNT, NON_NEGATIVE, POSITIVE, PROFILE, Domain, Files, Flag, Step

STEP = Step(
    "train_cam", "the ResNet-50 CAM classifier (docs/pipeline.md §3.1)",
    flags=(
        Flag("cam_network", default="net.resnet50_cam",
             help="module of the CAM network (a class Net, as the reference's)"),
        Flag("cam_crop_size", int, PROFILE, domain=COUNT),
        Flag("cam_resize_long", int, PROFILE, nargs=2, domain=Domain(1, ordered=True)),
        Flag("cam_batch_size", int, PROFILE, domain=COUNT),
        Flag("cam_num_epoches", int, PROFILE, domain=COUNT),
        Flag("cam_learning_rate", float, PROFILE, domain=POSITIVE),
        Flag("cam_frozen_stages", int, PROFILE, choices=(0, 1, 2, 3),
             help="backbone stages the CAM classifier keeps fixed (conv1 and bn1 always are); "
                  "the reference: 2"),
        Flag("cam_weight_decay", float, 1e-4, domain=NON_NEGATIVE),
        Flag("poly_momentum", float, PROFILE,
             help="SGD momentum of the poly optimiser (train_cam, train_irn); -1 = the "
                  "reference quirk (momentum = weight decay, docs/quirks.md)",
             domain=Domain(0, 1, high_open=True, also=(-1,))),
        Flag("cam_weights_name", default="sess/res50_cam.pth", shapes=False)),
    uses=("seed", "amp", "channels_last"),
    reads=(Files("backbone_weights"),), writes=(Files("cam_weights_name"),),
    batch="cam_batch_size", trains_on=("train_list",), images=("train_list", "val_list"))


def classification_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return F.multilabel_soft_margin_loss(model(batch["img"]), batch["label"])


@torch.inference_mode()
def validate(model: torch.nn.Module, dataset: ClassificationDataset, device: torch.device,
             batch_size: int, amp: bool = False, channels_last: bool = False,
             logits: Callable[[Any], torch.Tensor] = lambda out: out) -> dict:
    """Mean loss and mAP over the validation list (top-left crop, no resize, no flip), the
    forward under --amp / --channels_last as in training; `logits`: the (B, C) class scores of
    the network's output (train_transcam's sum of two heads)."""
    model.eval()
    forward = low_precision(model, device, amp, channels_last)
    scores, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        scores.append(logits(forward(batch["img"].to(device))).cpu())
        labels.append(batch["label"])
    scores, labels = torch.cat(scores), torch.cat(labels)
    return {"loss": F.multilabel_soft_margin_loss(scores, labels).item(),
            "mAP": mean_average_precision(scores.numpy(), labels.numpy())}


def run(args: argparse.Namespace) -> dict:
    data = context.dataset(args)
    device = context.device(args)
    train_set = ClassificationDataset(
        context.id_list(args.train_list), data, args.train_list, args.cam_crop_size,
        resize_long=tuple(args.cam_resize_long), seed=args.seed)
    val_set = ClassificationDataset(
        context.id_list(args.val_list), data, args.val_list, args.cam_crop_size,
        resize_long=None, hor_flip=False, crop_method="top_left")
    torch.manual_seed(args.seed)
    model = context.network(args.cam_network, "--cam_network")(data.n_classes,
                                                               args.backbone_weights)
    model.freeze_stages(args.cam_frozen_stages)  # the reference: 2 (docs/pipeline.md §3.1)
    backbone, head = model.param_groups()

    def make_optimizer(max_step: int) -> PolyOptimizer:
        groups = [{"params": backbone, "lr": args.cam_learning_rate, "weight_decay": args.cam_weight_decay},
                  {"params": head, "lr": 10 * args.cam_learning_rate, "weight_decay": args.cam_weight_decay}]
        return PolyOptimizer(groups, args.cam_learning_rate, args.cam_weight_decay, max_step,
                             momentum=args.poly_momentum)

    history = []

    def end_of_epoch(net: torch.nn.Module, epoch: int) -> None:
        if dist.is_main():
            history.append(validate(net, val_set, device, args.cam_batch_size,
                                    args.amp, args.channels_last))
            log(f"train_cam: epoch {epoch + 1} val loss {history[-1]['loss']:.4f} "
                        f"mAP {100 * history[-1]['mAP']:.1f}")

    result = train(model, classification_loss, train_set, args.cam_batch_size, args.cam_num_epoches,
                   make_optimizer, device, args.cam_weights_name, desc="train_cam",
                   end_of_epoch=end_of_epoch, **context.train_options(args))
    summary = {"step": "train_cam", "split": "val", "seconds": round(result.seconds, 1),
               "final_train_loss": result.final_loss}
    if history:
        summary.update(val_loss=history[-1]["loss"], mAP=100 * history[-1]["mAP"])
    if dist.is_main():
        append_metrics(args.metrics_file, summary)
        log(f"train_cam: wrote {args.cam_weights_name} in {result.seconds:.0f} s")
    return {**summary, "losses": result.losses}
