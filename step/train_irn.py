"""train_irn: IRNet's boundary and displacement branches on the AMN IR labels (docs/pipeline.md §3.9).

The pair labels (bg_pos / fg_pos / neg over 152 directions) are computed on the device from the
stride-4 label of each crop (PIL-nearest pixels 4i+2), instead of the reference's 22.8 MiB of
per-sample host arrays. Poly SGD: edge branch at --irn_learning_rate, displacement branch at 10x.
"""
from __future__ import annotations

import argparse
from functools import lru_cache

import torch

from misc import dist
from misc.artifacts import append_metrics
from misc.log import log
from misc.losses import downsample_labels, irn_loss
from misc.optim import PolyOptimizer
from misc.path_index import PathIndex
from misc.samples import SegmentationDataset
from misc.train import train
from step import common

TRAIN_RADIUS = 10


@lru_cache(maxsize=4)
def _path_index(height: int, width: int) -> PathIndex:
    return PathIndex(TRAIN_RADIUS, height, width)


def make_loss_fn(n_valid: int):
    """n_valid = C + 1: label values below it are classes, 255 is unknown."""
    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        edge, disp = model(batch["img"])
        path = _path_index(edge.shape[2], edge.shape[3])
        label = downsample_labels(batch["label"], edge.shape[-2:])
        bg_pos, fg_pos, neg = path.pair_labels(label, n_valid)
        affinity = path.affinity(torch.sigmoid(edge[:, 0]))
        targets = path.direction_targets().to(disp)
        return irn_loss(affinity, path.displacement_pairs(disp), targets, bg_pos, fg_pos, neg)["total"]
    return loss_fn


def run(args: argparse.Namespace) -> dict:
    data = common.dataset(args)
    device = common.device(args)
    dataset = SegmentationDataset(common.id_list(args.train_list), data, args.train_list,
                                  args.amn_ir_label_out_dir, args.irn_crop_size,
                                  rescale=(0.5, 1.5), seed=args.seed)
    torch.manual_seed(args.seed)
    model = common.network(args.irn_network, "--irn_network")(args.backbone_weights)
    edge_params, dp_params = model.param_groups()

    def make_optimizer(max_step: int) -> PolyOptimizer:
        lr, wd = args.irn_learning_rate, args.irn_weight_decay
        return PolyOptimizer([{"params": edge_params, "lr": lr, "weight_decay": wd},
                              {"params": dp_params, "lr": 10 * lr, "weight_decay": wd}],
                             lr, wd, max_step, momentum=args.poly_momentum)

    result = train(model, make_loss_fn(data.n_classes + 1), dataset, args.irn_batch_size,
                   args.irn_num_epoches, make_optimizer, device, args.irn_weights_name,
                   **common.train_options(args), desc="train_irn")
    record = {"step": "train_irn", "seconds": round(result.seconds, 1),
              "final_train_loss": result.final_loss}
    if dist.is_main():
        append_metrics(args.metrics_file, record)
        log(f"train_irn: wrote {args.irn_weights_name} in {result.seconds:.0f} s")
    return {**record, "losses": result.losses}
