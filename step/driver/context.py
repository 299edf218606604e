"""The run's context from the flags: the dataset, lists, device, networks and training
options. Everything below step/ takes explicit arguments; this module is where flags become
them."""
from __future__ import annotations

import argparse
import importlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from coco14.dataloader import COCODataset
from misc.data.dataset import SegDataset, load_img_name_list
from misc.data.samples import MultiScaleDataset
from misc.engine import dist
from misc.engine.precision import low_precision, prepare_model
from misc.errors import BadInput
from misc.io.checkpoints import load_checkpoint
from misc.io.records import is_done
from net.resnet50_irn import REFERENCE_LOSS_BUFFERS
from voc12.dataloader import VOCDataset

# --dataset name -> builder from the flags
DATASETS: dict[str, Callable[[argparse.Namespace], SegDataset]] = {
    "voc12": lambda args: VOCDataset(args.voc12_root, args.cls_labels),
    "coco14": lambda args: COCODataset(args.coco14_root, args.cls_labels, args.coco14_gt_dir),
}


@lru_cache(maxsize=None)
def _cached(name: str, key: tuple) -> SegDataset:
    return DATASETS[name](argparse.Namespace(**dict(key)))


def dataset(args: argparse.Namespace) -> SegDataset:
    """The dataset chosen by --dataset (its root checked), built once per configuration."""
    if args.dataset not in DATASETS:
        raise BadInput(f"--dataset {args.dataset!r} is not one of {sorted(DATASETS)}")
    key = tuple(sorted((k, v) for k, v in vars(args).items()
                       if k.endswith(("_root", "_gt_dir")) or k == "cls_labels"))
    return _cached(args.dataset, key)


def id_list(path: str | Path) -> list[str]:
    return load_img_name_list(path)


def eval_ids(args: argparse.Namespace) -> list[str]:
    """Ids of the evaluation split (--chainer_eval_set, read from the dataset)."""
    return id_list(dataset(args).split_list(args.chainer_eval_set))


def device(args: argparse.Namespace) -> torch.device:
    """The process group (under torchrun) and this process's device (--device); with
    --deterministic, torch limited to deterministic kernels (docs/toy.md, "Determinism")."""
    if getattr(args, "deterministic", False):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return dist.init_distributed(getattr(args, "device", "auto"),
                                 getattr(args, "dist_timeout", dist.DEFAULT_TIMEOUT_MINUTES))


def fast_forward(args: argparse.Namespace, model: torch.nn.Module,
                 fn: Callable | None = None, channels_last: bool | None = None) -> Callable:
    """`fn` (default: the model itself) under --amp and --channels_last (or `channels_last`
    when given), float32 outputs."""
    layout = args.channels_last if channels_last is None else channels_last
    prepare_model(model, layout)
    return low_precision(fn or model, device(args), args.amp, layout)


def network(module_name: str, flag: str) -> type:
    """The `Net` class of a network module named by --cam_network / --amn_network /
    --irn_network (the reference's convention)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BadInput(f"{flag} {module_name}: cannot import it ({err}); pass a module path "
                          f"such as net.resnet50_cam") from err
    if not isinstance(getattr(module, "Net", None), type):
        raise BadInput(f"{flag} {module_name}: the module has no class Net; a network module "
                         f"defines `Net` with the constructor of the default one")
    return module.Net


def irn_inference(args: argparse.Namespace, out_dir: Path, suffix: str
                  ) -> tuple[Callable, MultiScaleDataset, torch.device]:
    """make_sem_seg_labels / make_ins_seg_labels: the trained IRN in eval mode on this process's
    device (its forward under --amp / --channels_last), and this rank's share of --infer_list
    still missing `out_dir/<id><suffix>` (all of it with --overwrite) as full-size single-scale
    samples."""
    ids = [i for i in dist.shard(id_list(args.infer_list))
           if args.overwrite or not is_done(out_dir / f"{i}{suffix}")]
    return irn_forward(args), irn_samples(args, ids), device(args)


def irn_forward(args: argparse.Namespace) -> Callable:
    """The trained IRN (--irn_weights_name) in eval mode on this process's device, its forward
    under --amp / --channels_last."""
    model = network(args.irn_network, "--irn_network")()
    load_checkpoint(model, args.irn_weights_name, made_by="train_irn (--train_irn_pass True)",
                    ignore_prefixes=REFERENCE_LOSS_BUFFERS)
    model.to(device(args)).eval()
    return fast_forward(args, model)


def irn_samples(args: argparse.Namespace, ids: list[str]) -> MultiScaleDataset:
    """Full-size single-scale samples of `ids` (images of --infer_list), as IRN infers them."""
    return MultiScaleDataset(ids, dataset(args), args.infer_list, (1.0,))


def cpu_workers(args: argparse.Namespace) -> int:
    """--cpu_workers, else this process's share of the cores."""
    if args.cpu_workers is not None:
        return args.cpu_workers
    return max(1, (os.cpu_count() or 1) // dist.world()[1])


def train_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of misc.engine.train.train shared by train_cam, train_amn and train_irn:
    loader workers, seed, --amp / --channels_last, and the resumable state (every
    --checkpoint_every steps; a rerun continues from it unless --resume False or --overwrite
    True)."""
    return dict(num_workers=args.num_workers, seed=args.seed,
                checkpoint_every=args.checkpoint_every or 0,
                resume=args.resume and not args.overwrite, amp=args.amp,
                channels_last=args.channels_last)


def on_ground_truth(args: argparse.Namespace) -> argparse.Namespace:
    """The flags of the DeepLab upper bound (train_seg_gt, eval_seg_gt): the same recipe and
    images, trained on the ground truth of --seg_train_list, into its own checkpoint and
    prediction folder."""
    return type(args)(**{**vars(args), "seg_label_dir": "gt", "seg_test_list": None,
                        "seg_weights_name": args.seg_gt_weights_name,
                        "seg_pred_out_dir": args.seg_gt_pred_out_dir})


def cyclic_round(args: argparse.Namespace) -> argparse.Namespace:
    """The flags of PMM's second segmentation round (train_seg_cp, eval_seg_cp; docs/pmm.md
    §9): the same recipe and initial weights, trained without PUF on the masks make_seg_cp
    predicted (--seg_cp_out_dir), into its own checkpoint and prediction folder."""
    return type(args)(**{**vars(args), "seg_label_dir": args.seg_cp_out_dir, "seg_puf": "none",
                        "seg_test_list": None, "seg_weights_name": args.seg_cp_weights_name,
                        "seg_pred_out_dir": args.seg_cp_pred_out_dir})
