"""Flag glue shared by the steps: the dataset, lists, device, networks and training options read
from the argparse namespace, and the two runners that two steps each configure (seed
evaluation: eval_cam / eval_amn_cam; IR labels: cam_to_ir_label / amn_cam_to_ir_label).

Everything below step/ takes explicit arguments; this module is where flags become them.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import torch

from coco14.dataloader import COCODataset
from misc.data.dataset import SegDataset, load_img_name_list
from misc.data.samples import MultiScaleDataset
from misc.engine import dist
from misc.engine.log import log
from misc.engine.precision import low_precision, prepare_model
from misc.eval.metrics import evaluate_label_pngs, summary
from misc.eval.seed_eval import evaluate_seeds
from misc.io.checkpoints import load_checkpoint
from misc.io.metrics_file import append_metrics
from misc.io.records import begin_output, end_output, file_input, folder_input, is_done, make_record, mismatch
from misc.seeds.ir_label import make_ir_labels
from net.resnet50_irn import REFERENCE_LOSS_BUFFERS
from step.dataflow import STEP_IO, list_of, path_of
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
        raise ValueError(f"--dataset {args.dataset!r} is not one of {sorted(DATASETS)}")
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
    return dist.init_distributed(getattr(args, "device", "auto"))


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
        raise ImportError(f"{flag} {module_name}: cannot import it ({err}); pass a module path "
                          f"such as net.resnet50_cam") from err
    if not isinstance(getattr(module, "Net", None), type):
        raise ValueError(f"{flag} {module_name}: the module has no class Net; a network module "
                         f"defines `Net` with the constructor of the default one")
    return module.Net


def irn_inference(args: argparse.Namespace, out_dir: Path, suffix: str
                  ) -> tuple[Callable, MultiScaleDataset, torch.device]:
    """make_sem_seg_labels / make_ins_seg_labels: the trained IRN in eval mode on this process's
    device (its forward under --amp / --channels_last), and this rank's share of --infer_list
    still missing `out_dir/<id><suffix>` (all of it with --overwrite) as full-size single-scale
    samples."""
    model = network(args.irn_network, "--irn_network")()
    load_checkpoint(model, args.irn_weights_name, made_by="train_irn (--train_irn_pass True)",
                    ignore_prefixes=REFERENCE_LOSS_BUFFERS)
    model.to(device(args)).eval()
    ids = [i for i in dist.shard(id_list(args.infer_list))
           if args.overwrite or not is_done(out_dir / f"{i}{suffix}")]
    samples = MultiScaleDataset(ids, dataset(args), args.infer_list, (1.0,))
    return fast_forward(args, model), samples, device(args)


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


def run_seed_eval(args: argparse.Namespace, map_dir: str | Path, drop_background_channel: bool,
                  step: str) -> dict:
    """eval_cam / eval_amn_cam: `map_dir` at --cam_eval_thres and every --sweep_thres, appended
    to --metrics_file."""
    if not dist.is_main():
        return {}
    data = dataset(args)
    scores = evaluate_seeds(eval_ids(args), map_dir, data.gt_dir(), data.class_names,
                            args.cam_eval_thres, args.sweep_thres, drop_background_channel,
                            cpu_workers(args))
    record = {"step": step, "split": args.chainer_eval_set, **scores}
    append_metrics(args.metrics_file, record)
    log(f"{step}: mIoU {100 * record['miou']:.2f} at threshold {args.cam_eval_thres}; "
        f"best {100 * record['best_miou']:.2f} at {record['best_threshold']:.2f}")
    log("  per class: " + ", ".join(f"{n} {100 * v:.1f}" if v is not None else f"{n} -"
                                    for n, v in record["iou"].items()))
    return record


def run_ir_label_step(args: argparse.Namespace, map_dir: str | Path, out_dir: str | Path,
                      fg_thres: float, bg_thres: float, drop_background_channel: bool,
                      step: str) -> dict:
    """cam_to_ir_label / amn_cam_to_ir_label: this rank's share of --train_list, then the
    labels' score on the evaluation split."""
    ids = dist.shard(id_list(args.train_list))
    stats = make_ir_labels(ids, map_dir, dataset(args).image_path, out_dir, fg_thres, bg_thres,
                           drop_background_channel, num_workers=cpu_workers(args),
                           overwrite=args.overwrite)
    log(f"{step}: {stats['written']} labels written, {stats['skipped']} already done, "
        f"{stats['seconds']:.0f} s (fg {fg_thres}, bg {bg_thres}) -> {out_dir}")
    dist.barrier()
    if dist.is_main():
        stats.update(score_ir_labels(args, out_dir, step))
    return stats


def score_ir_labels(args: argparse.Namespace, out_dir: str | Path, step: str) -> dict:
    """mIoU of the IR labels on the evaluation split (255 ignored) and their coverage."""
    data = dataset(args)
    done = set(id_list(args.train_list))
    ids = [i for i in eval_ids(args) if i in done]
    if not ids:
        return {}
    conf, coverage = evaluate_label_pngs(ids, out_dir, data.gt_dir(), data.n_classes + 1, 255)
    record = {"step": step, "split": args.chainer_eval_set, "ignore_pred": 255,
              **summary(conf, ("background",) + data.class_names), "coverage": coverage}
    append_metrics(args.metrics_file, record)
    log(f"{step}: IR labels mIoU {100 * record['miou']:.2f} (255 ignored), "
        f"coverage {100 * coverage:.1f}%")
    return {"miou": record["miou"], "coverage": coverage}


def expected_record(args: argparse.Namespace, name: str) -> dict:
    """The record pass `name` would give its outputs under the current flags: its input files
    by content hash, its input folders by record id, its shaping flags (step/dataflow.py)."""
    io = STEP_IO[name]
    inputs = {}
    for flag, list_flag in io.reads:
        path = path_of(args, flag)
        if path is not None:
            inputs[flag] = file_input(path) if list_flag is None else folder_input(path)
    return make_record(name, inputs, {flag: getattr(args, flag) for flag in io.settings})


def producer(args: argparse.Namespace, path: str | Path) -> str | None:
    """The pass that writes `path` under the current flags (None: not a pipeline output)."""
    for name, io in STEP_IO.items():
        for flag, _ in io.writes:
            made = path_of(args, flag)
            if made is not None and Path(made).resolve() == Path(path).resolve():
                return name
    return None


def stale_inputs(args: argparse.Namespace, name: str) -> list[str]:
    """Input folders of pass `name` whose record says they were made from other inputs or
    flags than the current ones would give (not checked: folders its producer remakes in this
    call, folders without a record)."""
    problems = []
    for flag, list_flag in STEP_IO[name].reads:
        path = path_of(args, flag)
        made_by = producer(args, path) if path is not None and list_flag is not None else None
        if made_by is None or getattr(args, f"{made_by}_pass", False):
            continue
        reason = mismatch(path, expected_record(args, made_by))
        if reason:
            problems.append(f"{name}: {reason}; rerun --{made_by}_pass True to remake it "
                            f"(or point --{flag} at an up-to-date folder)")
    return problems


@contextlib.contextmanager
def recorded_outputs(args: argparse.Namespace, name: str) -> Iterator[None]:
    """Around pass `name`: refuse stale input folders; before it, keep the files of its output
    folders when their record matches (a resumed run) or mark them stale (remade, each replaced
    in place); after it, mark each output (folder or checkpoint) complete with its record
    (docs/outputs.md)."""
    problems = stale_inputs(args, name)  # on every rank: all stop together
    if problems:
        raise ValueError("\n".join(problems))
    io = STEP_IO[name]
    outputs = [(path_of(args, flag), list_flag) for flag, list_flag in io.writes]
    outputs = [(Path(p), list_flag) for p, list_flag in outputs if p is not None]
    record = expected_record(args, name) if outputs and dist.is_main() else None
    if record is not None:
        for path, list_flag in outputs:
            if list_flag is not None:
                kept = len(list(path.glob(f"*{io.suffix}"))) if path.is_dir() else 0
                reason = begin_output(path, record, io.suffix, args.overwrite)
                ids = len(id_list(list_of(args, list_flag)))
                if reason:
                    log(f"{name}: {reason}: remaking {ids} {io.suffix} files")
                elif kept:
                    log(f"{name}: {path} was made with the same inputs and flags: keeping its "
                        f"{kept} files, making the rest of {ids}")
    dist.barrier()
    yield
    dist.barrier()
    if record is not None:
        for path, _ in outputs:
            end_output(path, record)


def trained_from_other_inputs(args: argparse.Namespace, name: str) -> str | None:
    """Why the checkpoint of training pass `name` no longer matches its inputs (None when it
    does or has no record)."""
    checkpoint = path_of(args, STEP_IO[name].writes[0][0])
    return mismatch(checkpoint, expected_record(args, name))


def on_ground_truth(args: argparse.Namespace) -> argparse.Namespace:
    """The flags of the DeepLab upper bound (train_seg_gt, eval_seg_gt): the same recipe and
    images, trained on the ground truth of --seg_train_list, into its own checkpoint and
    prediction folder."""
    return argparse.Namespace(**{**vars(args), "seg_label_dir": "gt", "seg_test_list": None,
                                 "seg_weights_name": args.seg_gt_weights_name,
                                 "seg_pred_out_dir": args.seg_gt_pred_out_dir})
