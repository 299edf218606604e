"""train_seg: DeepLab-V2 (MSC) on a folder of label PNGs (docs/deeplab.md §2-§3, §8).

Labels: --seg_label_dir (default: the pseudo-masks of make_sem_seg_labels, result/sem_seg;
`gt` = the dataset's SegmentationClass, for the fully supervised upper bound), values 0..C and
255 = ignored. Recipe (AdvCAM's defaults on deeplab-pytorch): random scale from a discrete set
(bilinear image, PIL-nearest label) -> pad bottom/right to the crop (mean colour / 255) -> random
crop 321 -> flip; SGD momentum 0.9, weight decay 5e-4 (not on the ASPP biases), lr 2.5e-4 on the
backbone, 10x on ASPP weights, 20x on ASPP biases, poly 0.9 recomputed every 10 iterations;
frozen BN; the loss (balanced CE by default, optionally with PMM's PUF: docs/pmm.md §5) summed
over the four MSC outputs, each against the label downsampled with PIL NEAREST's pixels. A killed
run resumes from its last state file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from misc.data.samples import SegTrainDataset
from misc.engine import dist
from misc.engine.log import log
from misc.engine.losses import PUF_MODES, downsample_labels, pixel_ce
from misc.engine.optim import PolyOptimizer
from misc.engine.precision import allow_tf32
from misc.engine.train import train
from misc.errors import MissingInput
from misc.io.metrics_file import append_metrics
from net.deeplabv2 import MSC, deeplab_v2_msc
from step.driver import context
from step.driver.interface import (
    COUNT,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    PROFILE,
    Files,
    Flag,
    Step,
    str2bool,
)

STEP = Step(
    "train_seg", "DeepLab-V2 on the pseudo-masks (docs/deeplab.md)",
    flags=(
        Flag("seg_backbone", default=PROFILE, choices=("resnet101", "resnet50"),
             help="DeepLab backbone"),
        Flag("seg_backbone_style", default="torchvision", choices=("torchvision", "caffe"),
             help="caffe: deeplab-pytorch / Caffe-origin weights converted by `python -m "
                  "net.deeplabv2 convert` (stride in the 1x1, ceil-mode pool, BGR "
                  "mean-subtracted input)"),
        Flag("seg_backbone_weights", shapes=False,
             help="ImageNet (or converted COCO) init of the DeepLab backbone; default for "
                  "resnet50: --backbone_weights"),
        Flag("seg_label_dir", shapes=False,
             help="training labels (PNG 0..C, 255 ignored); default --sem_seg_out_dir; `gt` = "
                  "SegmentationClass (fully supervised upper bound)"),
        Flag("seg_train_list", shapes=False,
             help="default --train_list (VOC: make_sem_seg must have run on it), the toy's "
                  "--infer_list"),
        Flag("seg_crop_size", int, PROFILE, domain=COUNT),
        Flag("seg_scales", float, (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), nargs="+",
             help="training rescale factors, one drawn per sample (AdvCAM's set)", domain=POSITIVE),
        Flag("seg_batch_size", int, PROFILE, help="images per update (in one pass)", domain=COUNT),
        Flag("seg_num_iters", int, PROFILE, domain=COUNT),
        Flag("seg_learning_rate", float, PROFILE,
             help="backbone lr; ASPP weights 10x, biases 20x", domain=POSITIVE),
        Flag("seg_momentum", float, 0.9, domain=FRACTION),
        Flag("seg_weight_decay", float, 5e-4, help="not on the ASPP biases", domain=NON_NEGATIVE),
        Flag("seg_poly_power", float, 0.9, domain=NON_NEGATIVE),
        Flag("seg_lr_decay", int, 10, help="recompute the poly lr every N iterations", domain=COUNT),
        Flag("seg_balanced_ce", str2bool, True,
             help="1/2 (bg mean + fg mean) cross-entropy (AdvCAM); False: plain CE"),
        Flag("seg_puf", default="none", choices=PUF_MODES,
             help="PMM's pretended under-fitting (docs/pmm.md): when the per-pixel CE's mean "
                  "over this process's batch (ignored pixels as 0) is below --seg_puf_beta, "
                  "clamp: min(CE, k), pow: CE^k, ignore: CE where CE <= k; per MSC output; "
                  "none: the CE as is"),
        Flag("seg_puf_beta", float, PROFILE, help="PUF's beta (PMM: 0.5 VOC, 0.8 COCO)",
             domain=POSITIVE),
        Flag("seg_puf_k", float, PROFILE, help="PUF's k (PMM: equal to beta)", domain=POSITIVE),
        Flag("seg_checkpoint_every", int, 1000, shapes=False,
             help="write a resumable training state every N iterations (0: never)", domain=NON_NEGATIVE),
        Flag("seg_resume", str2bool, True, shapes=False,
             help="continue a killed train_seg from its state file (ignored with --overwrite "
                  "True)"),
        Flag("seg_channels_last", str2bool, False,
             help="channels_last for DeepLab (train_seg, eval_seg); off by default: its dilated "
                  "3x3 convolutions are slower in it on CPUs (docs/measurements.md)"),
        Flag("seg_tf32", str2bool, True,
             help="allow TF32 convolutions / matmuls on CUDA (PyTorch's conv default); False: "
                  "strict fp32"),
        Flag("seg_weights_name", default="sess/deeplabv2.pth", shapes=False)),
    uses=("seed", "amp", "backbone_weights", "sem_seg_out_dir"),
    reads=(Files("seg_label_dir", "seg_train_list", noun="training label"), Files("seg_backbone_weights")),
    writes=(Files("seg_weights_name"),), batch="seg_batch_size", trains_on=("seg_train_list",),
    images=("seg_train_list",))


def msc_loss(balanced: bool, puf: str = "none", puf_beta: float = 0.5, puf_k: float = 0.5):
    """Sum over the MSC outputs [l_1, l_0.5, l_0.75, l_max] of `pixel_ce` at each size (PUF,
    when on, decides for each output on its own)."""
    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        label = batch["label"].long()
        return sum(pixel_ce(out, downsample_labels(label, out.shape[-2:]), balanced, puf,
                            puf_beta, puf_k)
                   for out in model(batch["img"]))
    return loss_fn


def param_groups(model: MSC, lr: float, weight_decay: float) -> list[dict]:
    """The Caffe lr_mult / decay_mult groups: backbone 1x, ASPP weights 10x, ASPP biases 20x
    without weight decay. BN parameters are frozen and in no group."""
    backbone, weights, biases = model.base.param_groups()
    return [{"params": backbone, "lr": lr, "weight_decay": weight_decay},
            {"params": weights, "lr": 10 * lr, "weight_decay": weight_decay},
            {"params": biases, "lr": 20 * lr, "weight_decay": 0.0}]


def label_dir(args: argparse.Namespace) -> Path:
    """--seg_label_dir: `gt` -> SegmentationClass; None -> --sem_seg_out_dir."""
    if args.seg_label_dir == "gt":
        return context.dataset(args).gt_dir()
    return Path(args.seg_label_dir or args.sem_seg_out_dir)


def check_labels(ids: list[str], folder: Path, list_name: str) -> None:
    missing = [i for i in ids if not (folder / f"{i}.png").is_file()]
    if missing:
        raise MissingInput(
            f"{len(missing)} of {len(ids)} ids of {list_name} have no label PNG in {folder} "
            f"(first: {missing[:3]}). make_sem_seg_labels writes masks only for --infer_list: "
            f"rerun it with --infer_list set to the DeepLab training list (VOC: "
            f"voc12/train_aug.txt), or pass --seg_train_list / --seg_label_dir")


def backbone_weights(args: argparse.Namespace) -> str | None:
    """--seg_backbone_weights, else --backbone_weights for a ResNet-50 DeepLab."""
    if args.seg_backbone_weights:
        return args.seg_backbone_weights
    return args.backbone_weights if args.seg_backbone == "resnet50" else None


def run(args: argparse.Namespace, step: str = "train_seg") -> dict:
    """Train DeepLab; `step` names its metrics record (train_seg_gt: on the ground truth)."""
    data = context.dataset(args)
    device = context.device(args)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.deterministic  # fixed crop size
        allow_tf32(args.seg_tf32)  # for this pass only (run_sample.run_pass)
    ids = context.id_list(args.seg_train_list)
    folder = label_dir(args)
    check_labels(ids, folder, args.seg_train_list)
    n_classes = data.n_classes + 1
    dataset = SegTrainDataset(ids, data, args.seg_train_list, folder, args.seg_crop_size,
                              tuple(args.seg_scales), n_classes, seed=args.seed)
    torch.manual_seed(args.seed)
    model = deeplab_v2_msc(n_classes, args.seg_backbone, args.seg_backbone_style)
    model.base.load_init(backbone_weights(args))

    def make_optimizer(max_step: int) -> PolyOptimizer:
        return PolyOptimizer(param_groups(model, args.seg_learning_rate, args.seg_weight_decay),
                             args.seg_learning_rate, args.seg_weight_decay, max_step,
                             power=args.seg_poly_power, momentum=args.seg_momentum,
                             update_every=args.seg_lr_decay)

    log(f"train_seg: DeepLab-V2 {args.seg_backbone} ({args.seg_backbone_style}) on "
                f"{len(ids)} images, labels from {folder}, {args.seg_num_iters} iterations at "
                f"batch {args.seg_batch_size}")
    loss = msc_loss(args.seg_balanced_ce, args.seg_puf, args.seg_puf_beta, args.seg_puf_k)
    result = train(model, loss, dataset, args.seg_batch_size, 1,
                   make_optimizer, device, args.seg_weights_name, num_workers=args.num_workers,
                   seed=args.seed, desc="train_seg", max_steps=args.seg_num_iters,
                   checkpoint_every=args.seg_checkpoint_every,
                   resume=args.seg_resume and not args.overwrite, amp=args.amp,
                   channels_last=args.seg_channels_last)
    record = {"step": step, "labels": str(folder), "iterations": len(result.losses),
              "seconds": round(result.seconds, 1),
              "final_train_loss": result.final_loss}
    if dist.is_main():
        append_metrics(args.metrics_file, record)
        log(f"{step}: wrote {args.seg_weights_name} in {result.seconds:.0f} s")
    return {**record, "losses": result.losses}
