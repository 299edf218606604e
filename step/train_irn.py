"""train_irn: IRNet's boundary and displacement branches on the AMN IR labels (docs/pipeline.md §3.9).

The pair labels (bg_pos / fg_pos / neg over 152 directions) are computed on the device from the
stride-4 label of each crop (PIL-nearest pixels 4i+2), instead of the reference's 22.8 MiB of
per-sample host arrays. Poly SGD: edge branch at --irn_learning_rate, displacement branch at 10x.

After the last epoch, the reference's displacement-mean pass (§3.9, used by §3.12 only): the
mean raw displacement over top-left --irn_crop_size crops of --infer_list becomes
mean_shift.running_mean, so the checkpoint is written once, with it. Training never changes
that buffer (MeanShift is no running average, docs/pipeline.md §2.9), so this pass is its only
writer. The boundary branch, and so make_sem_seg_labels, does not depend on it.
"""
from __future__ import annotations

import argparse
from functools import lru_cache

import torch
from torch.utils.data import DataLoader

from misc.data.samples import ClassificationDataset, SegmentationDataset
from misc.engine import dist
from misc.engine.log import log
from misc.engine.losses import downsample_labels, irn_loss
from misc.engine.optim import PolyOptimizer
from misc.engine.train import train
from misc.io.metrics_file import append_metrics
from misc.irn.ins_seg import fit_mean_shift
from misc.irn.path_index import PathIndex
from step.driver import context
from step.driver.interface import COUNT, NON_NEGATIVE, POSITIVE, PROFILE, Domain, Files, Flag, Step

STEP = Step(
    "train_irn", "IRN: class boundaries and displacement fields from the AMN IR labels "
                 "(docs/pipeline.md §3.9)",
    flags=(
        Flag("irn_network", default="net.resnet50_irn", help="module of the IRN network"),
        Flag("irn_crop_size", int, PROFILE, help="also the padding size of IRN inference", domain=COUNT),
        Flag("irn_batch_size", int, PROFILE, domain=COUNT),
        Flag("irn_num_epoches", int, PROFILE, domain=COUNT),
        Flag("irn_learning_rate", float, PROFILE, domain=POSITIVE),
        Flag("irn_weight_decay", float, 1e-4, domain=NON_NEGATIVE),
        Flag("irn_train_radius", int, PROFILE, domain=Domain(2),
             help="affinity pairs within this many stride-4 cells; the reference: 10"),
        Flag("irn_frozen_stages", int, PROFILE, choices=(0, 1, 2, 3, 4, 5),
             help="backbone stages 1..N kept fixed; the reference: 5, all (docs/toy.md §7)"),
        Flag("irn_weights_name", default="sess/res50_irn.pth", shapes=False),
        Flag("irn_label_dir", shapes=False,
             help="IR labels IRN trains on (PNG 0..C, 255 unknown); default "
                  "--amn_ir_label_out_dir; e.g. result/bao_amn_label for BAO's threshold-free "
                  "labels (docs/bao.md §5.3)")),
    uses=("poly_momentum", "seed", "amp", "channels_last"),
    reads=(Files("irn_label_dir", "train_list", noun="IR label"), Files("backbone_weights")),
    writes=(Files("irn_weights_name"),), batch="irn_batch_size",
    trains_on=("train_list", "infer_list"),
    images=("train_list", "infer_list"))


@lru_cache(maxsize=4)
def _path_index(radius: int, height: int, width: int) -> PathIndex:
    return PathIndex(radius, height, width)


def make_loss_fn(n_valid: int, radius: int = 10):
    """n_valid = C + 1: label values below it are classes, 255 is unknown; pairs within
    `radius` stride-4 cells (--irn_train_radius, the reference's 10)."""
    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        edge, disp = model(batch["img"])
        path = _path_index(radius, edge.shape[2], edge.shape[3])
        label = downsample_labels(batch["label"], edge.shape[-2:])
        bg_pos, fg_pos, neg = path.pair_labels(label, n_valid)
        affinity = path.affinity(torch.sigmoid(edge[:, 0]))
        targets = path.direction_targets().to(disp)
        return irn_loss(affinity, path.displacement_pairs(disp), targets, bg_pos, fg_pos, neg)["total"]
    return loss_fn


def mean_shift_pass(args: argparse.Namespace, model: torch.nn.Module,
                    device: torch.device) -> torch.Tensor:
    """Set model.mean_shift.running_mean to the mean displacement of the reference's pass
    (§3.9): top-left crops of --infer_list (no rescale, no flip, zero padding) in batches of
    --irn_batch_size, drop_last (one batch of the whole list when it is shorter), the model in
    eval mode with the stored mean at 0, the mean over batches of each batch's mean. Under
    torchrun the batches are split over the ranks and their means averaged over all batches:
    the same mean as one process. Returns it (2,)."""
    ids = context.id_list(args.infer_list)
    crops = ClassificationDataset(ids, context.dataset(args), args.infer_list, args.irn_crop_size,
                                  resize_long=None, hor_flip=False, crop_method="top_left")
    size = min(args.irn_batch_size, len(ids))
    mine = dist.shard([list(range(s, s + size)) for s in range(0, len(ids) - size + 1, size)])
    local = torch.zeros(3, dtype=torch.float64, device=device)  # (sum of batch means, batches)
    if mine:
        loader = DataLoader(crops, batch_sampler=mine, num_workers=args.num_workers,
                            pin_memory=device.type == "cuda")
        mean = fit_mean_shift(model, model.mean_shift,
                              (b["img"].to(device, non_blocking=True) for b in loader))
        local[:2], local[2] = mean.double().to(device) * len(mine), len(mine)
    total = dist.all_reduce_mean(local)
    mean = (total[:2] / total[2]).float()
    model.mean_shift.running_mean.copy_(mean.to(model.mean_shift.running_mean))
    return mean.cpu()


def run(args: argparse.Namespace) -> dict:
    data = context.dataset(args)
    device = context.device(args)
    dataset = SegmentationDataset(context.id_list(args.train_list), data, args.train_list,
                                  args.irn_label_dir or args.amn_ir_label_out_dir,
                                  args.irn_crop_size,
                                  rescale=(0.5, 1.5), seed=args.seed)
    torch.manual_seed(args.seed)
    model = context.network(args.irn_network, "--irn_network")(args.backbone_weights)
    model.freeze_stages(args.irn_frozen_stages)
    edge_params, dp_params = model.param_groups()

    def make_optimizer(max_step: int) -> PolyOptimizer:
        lr, wd = args.irn_learning_rate, args.irn_weight_decay
        return PolyOptimizer([{"params": edge_params, "lr": lr, "weight_decay": wd},
                              {"params": dp_params, "lr": 10 * lr, "weight_decay": wd}],
                             lr, wd, max_step, momentum=args.poly_momentum)

    fitted = []

    def after_last_epoch(trained: torch.nn.Module, epoch: int) -> None:
        if epoch == args.irn_num_epoches - 1:  # before train() writes the checkpoint
            fitted.append(mean_shift_pass(args, trained, device))

    loss_fn = make_loss_fn(data.n_classes + 1, args.irn_train_radius)
    result = train(model, loss_fn, dataset, args.irn_batch_size, args.irn_num_epoches,
                   make_optimizer, device, args.irn_weights_name,
                   **context.train_options(args), desc="train_irn", end_of_epoch=after_last_epoch)
    record = {"step": "train_irn", "seconds": round(result.seconds, 1),
              "final_train_loss": result.final_loss,
              "displacement_mean": [round(float(v), 6) for v in fitted[-1]]}
    if dist.is_main():
        append_metrics(args.metrics_file, record)
        log(f"train_irn: displacement mean (dy, dx) {record['displacement_mean']} over "
            f"top-left crops of {args.infer_list}")
        log(f"train_irn: wrote {args.irn_weights_name} in {result.seconds:.0f} s")
    return {**record, "losses": result.losses}
