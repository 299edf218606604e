"""train_transcam: TransCAM, the Conformer-S classifier BAO starts from (docs/bao.md §3.1).

Multilabel soft-margin loss on the sum of the CNN and transformer heads' logits (classes 1..C;
channel 0 of the heads is never trained), AdamW with no schedule, resize_long -> colour jitter
-> flip -> crop; per-epoch validation loss and mAP on val_list as train_cam. Optional: a
whole-chain run adds it with --train_transcam_pass True.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from misc.data.samples import ClassificationDataset
from misc.engine import dist
from misc.engine.log import log
from misc.engine.train import train
from misc.errors import BadInput
from misc.io.metrics_file import append_metrics
from net import conformer
from step.driver import context
from step.driver.interface import (
    COUNT,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    PROFILE,
    UNIT,
    Domain,
    Files,
    Flag,
    Step,
)
from step.train_cam import validate

STEP = Step(
    "train_transcam", "TransCAM: the Conformer-S classifier of BAO (docs/bao.md §3.1)",
    flags=(
        Flag("transcam_depth", int, 12, choices=(3, 6, 9, 12),
             help="transformer blocks of the Conformer (12: Conformer-S, what the released "
                  "checkpoints hold; fewer: a small network of the same structure, for tests)"),
        Flag("transcam_crop_size", int, PROFILE, domain=COUNT,
             help="training crop side (a multiple of 16: one token per 16x16 patch)"),
        Flag("transcam_resize_long", int, PROFILE, nargs=2, domain=Domain(1, ordered=True)),
        Flag("transcam_batch_size", int, PROFILE, domain=COUNT,
             help="global batch (the reference hard-codes 8)"),
        Flag("transcam_num_epoches", int, PROFILE, domain=COUNT),
        Flag("transcam_learning_rate", float, PROFILE, domain=POSITIVE,
             help="AdamW learning rate, constant (the reference: 5e-5)"),
        Flag("transcam_weight_decay", float, 5e-4, domain=NON_NEGATIVE,
             help="AdamW (decoupled) weight decay on every parameter"),
        Flag("transcam_color_jitter", float, (0.3, 0.3, 0.3, 0.1), nargs=4, domain=UNIT,
             metavar=("BRIGHTNESS", "CONTRAST", "SATURATION", "HUE"),
             help="colour jitter strengths, as torchvision's ColorJitter (0 turns one off)"),
        Flag("transcam_drop_path", float, 0.1, domain=FRACTION,
             help="stochastic depth of the last transformer block (rising linearly from 0)"),
        Flag("conformer_weights", shapes=False,
             help="starting weights: the ImageNet Conformer_small_patch16.pth of "
                  "pengzhiliang/Conformer (downloaded by hand), or a TransCAM-trained file; "
                  "`none`: random initialisation (tests only); default for the toy dataset: "
                  "the Conformer-S pretrained on synthetic data, built and cached when this "
                  "pass first runs (docs/bao.md §3.1)"),
        Flag("transcam_weights_name", default="sess/transcam.pth", shapes=False)),
    uses=("seed", "amp", "channels_last"),
    reads=(Files("conformer_weights"),), writes=(Files("transcam_weights_name"),),
    batch="transcam_batch_size", trains_on=("train_list",), images=("train_list", "val_list"),
    optional=True)


def check_patch_multiple(flag: str, values) -> None:
    """Conformer inputs have sides that are multiples of 16; a clear error naming the flag."""
    bad = [v for v in values if v % conformer.PATCH]
    if bad:
        raise BadInput(f"--{flag} {' '.join(map(str, values))}: every side must be a multiple of "
                       f"{conformer.PATCH} (one transformer token per {conformer.PATCH}x"
                       f"{conformer.PATCH} patch), not {bad}")


def transcam_logits(out: conformer.ConformerOutput) -> torch.Tensor:
    """The classification scores TransCAM trains: z_cnn + z_trans on the C foreground classes."""
    return (out.conv_logits + out.trans_logits)[:, 1:]


def transcam_loss(forward, batch: dict) -> torch.Tensor:
    return F.multilabel_soft_margin_loss(transcam_logits(forward(batch["img"])), batch["label"])


def jittered_train_set(args: argparse.Namespace, data, crop_size: int,
                       resize_long: tuple[int, int]) -> ClassificationDataset:
    """--train_list as the Conformer passes train on it: random resize-long, flip, crop,
    --transcam_color_jitter (train_transcam and train_bao)."""
    return ClassificationDataset(
        context.id_list(args.train_list), data, args.train_list, crop_size,
        resize_long=tuple(resize_long), seed=args.seed,
        color_jitter=tuple(args.transcam_color_jitter))


def run(args: argparse.Namespace) -> dict:
    check_patch_multiple("transcam_crop_size", [args.transcam_crop_size])
    data = context.dataset(args)
    device = context.device(args)
    train_set = jittered_train_set(args, data, args.transcam_crop_size, args.transcam_resize_long)
    val_set = ClassificationDataset(
        context.id_list(args.val_list), data, args.val_list, args.transcam_crop_size,
        resize_long=None, hor_flip=False, crop_method="top_left")
    torch.manual_seed(args.seed)
    model = conformer.Net(data.n_classes, depth=args.transcam_depth,
                          drop_path_rate=args.transcam_drop_path)
    loaded = conformer.load_starting_weights(model, args.conformer_weights)
    log("train_transcam: " + (f"starting from {args.conformer_weights} ({loaded.kind}; kept at "
                              f"init: {', '.join(loaded.kept_init) or 'none'})" if loaded else
                              "starting from random initialisation (--conformer_weights none)"))

    def make_optimizer(_max_step: int) -> torch.optim.AdamW:
        return torch.optim.AdamW(model.parameters(), lr=args.transcam_learning_rate,
                                 weight_decay=args.transcam_weight_decay, eps=1e-8)

    history = []

    def end_of_epoch(net: torch.nn.Module, epoch: int) -> None:
        if dist.is_main():
            history.append(validate(net, val_set, device, args.transcam_batch_size, args.amp,
                                    args.channels_last, logits=transcam_logits))
            log(f"train_transcam: epoch {epoch + 1} val loss {history[-1]['loss']:.4f} "
                f"mAP {100 * history[-1]['mAP']:.1f}")

    result = train(model, transcam_loss, train_set, args.transcam_batch_size,
                   args.transcam_num_epoches, make_optimizer, device, args.transcam_weights_name,
                   desc="train_transcam", end_of_epoch=end_of_epoch, **context.train_options(args))
    summary = {"step": "train_transcam", "split": "val", "seconds": round(result.seconds, 1),
               "final_train_loss": result.final_loss}
    if history:
        summary.update(val_loss=history[-1]["loss"], mAP=100 * history[-1]["mAP"])
    if dist.is_main():
        append_metrics(args.metrics_file, summary)
        log(f"train_transcam: wrote {args.transcam_weights_name} in {result.seconds:.0f} s")
    return {**summary, "losses": result.losses}
