"""make_sem_seg_labels: IRN boundaries + random walk from the AMN seeds -> pseudo-masks
(docs/pipeline.md §3.10) in result/sem_seg/<id>.png (uint8, 0 background, c+1 class c).

IRN runs on [image, mirror] pairs zero-padded on the right/bottom to --irn_crop_size when the
image fits (the reference pads VOC to 512; larger images, as on COCO, are not padded). The
random walk is the sparse exact form (misc.irn.random_walk). The walked scores are labelled by
the reference's constant background score (--sem_seg_bg_thres) or, with --sem_seg_ppmg True, by
PMM's PPMG (plug point (iii), docs/pmm.md §8); then, on the ids of the evaluation split made in
this call, the constant rule's whole threshold sweep is scored beside PPMG's masks.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from misc.engine import dist
from misc.engine.log import log
from misc.engine.workers import map_streamed
from misc.eval.metrics import ThresholdSweep, confusion_matrix, summary
from misc.io.maps import load_maps
from misc.io.metrics_file import append_metrics
from misc.io.png import load_png, save_png
from misc.irn.sem_seg import boundary_map, label_walk, walked_scores
from step.driver import context
from step.driver.interface import (
    NON_NEGATIVE,
    POSITIVE,
    PROFILE,
    UNIT,
    Files,
    Flag,
    Step,
    str2bool,
)

STEP = Step(
    "make_sem_seg", "pseudo-masks: IRN boundaries + random walk of the AMN seeds "
                    "(docs/pipeline.md §3.10)",
    flags=(
        Flag("sem_seg_power", float, 1.3, help="power on the AMN seeds before the walk", domain=POSITIVE),
        Flag("sem_seg_bg_thres", float, PROFILE, domain=UNIT),
        Flag("sem_seg_ppmg", str2bool, False,
             help="PMM's plug point (iii), docs/pmm.md §8: label the walked scores with PPMG "
                  "instead of the constant --sem_seg_bg_thres"),
        Flag("sem_seg_ppmg_alpha", float, 11.0, help="PPMG's alpha for the final masks (PMM: 11)",
             domain=POSITIVE),
        Flag("sem_seg_ppmg_cv_scale", float, 0.3, help="CVS's s for these PPMG masks (0: off)",
             domain=NON_NEGATIVE),
        Flag("sem_seg_out_dir", default="result/sem_seg", shapes=False)),
    uses=("irn_network", "irn_crop_size", "beta", "exp_times", "walk_radius", "amp", "channels_last"),
    also_reads=("sweep_thres",),  # the comparison's sweep: a score, not a setting of the masks
    reads=(Files("irn_weights_name"), Files("amn_cam_out_dir", "infer_list")),
    writes=(Files("sem_seg_out_dir", "infer_list", ".png", "pseudo-mask"),), images=("infer_list",))


class RuleComparison:
    """PPMG's masks against the constant rule's threshold sweep on the same walked scores, over
    the evaluation-split images one call makes (plug point (iii)'s claim, docs/pmm.md §8)."""

    def __init__(self, n_classes: int, thresholds: list[float]):
        self.sweep = ThresholdSweep(n_classes, thresholds)
        self.ppmg = np.zeros((n_classes, n_classes), np.int64)
        self.images = 0

    def add(self, keys: np.ndarray, scores: np.ndarray, mask: np.ndarray,
            gt: np.ndarray) -> None:
        """keys (K,), scores (K, H, W) in [0, 1], the PPMG mask (H, W) and the GT (H, W)."""
        self.sweep.add(np.asarray(scores, np.float32), np.asarray(keys), gt)
        self.ppmg += confusion_matrix(mask, gt, self.ppmg.shape[0])
        self.images += 1

    def record(self, class_names: tuple[str, ...]) -> dict:
        """Summed over ranks: {images} and, when any image was added, {ppmg (mIoU),
        best_threshold, best_miou, sweep {"0.25": mIoU, ...}}."""
        counts = torch.from_numpy(np.concatenate([self.sweep.hist.ravel(), self.ppmg.ravel(),
                                                  [self.images]]))
        counts = dist.all_reduce_sum(counts).numpy()
        if counts[-1] == 0:
            return {"images": 0}
        self.sweep.hist = counts[:self.sweep.hist.size].reshape(self.sweep.hist.shape)
        ppmg = counts[self.sweep.hist.size:-1].reshape(self.ppmg.shape)
        best_t, best_miou = self.sweep.best()
        return {"images": int(counts[-1]), "ppmg": summary(ppmg, class_names)["miou"],
                "best_threshold": best_t, "best_miou": best_miou,
                "sweep": {f"{th:.2f}": round(float(m), 5)
                          for th, m in zip(self.sweep.thresholds, self.sweep.mious())}}


def rule_of(args: argparse.Namespace) -> tuple:
    """Rule (b) of the flags, as `label_walk` takes it."""
    if args.sem_seg_ppmg:
        return "ppmg", float(args.sem_seg_ppmg_alpha), float(args.sem_seg_ppmg_cv_scale)
    return "constant", float(args.sem_seg_bg_thres)


def label(args: argparse.Namespace, keys: torch.Tensor, scores: torch.Tensor, size: tuple,
          image_path: Path | None) -> np.ndarray:
    """Rule (b) of the flags on one image's walked scores, in this process: (H, W) uint8,
    0 background, c + 1 class c."""
    if args.sem_seg_ppmg:
        keys, scores = keys.cpu().numpy(), scores.float().cpu().numpy()
    return label_walk((None, keys, scores.reshape(len(keys), *size), image_path, rule_of(args)))


def run(args: argparse.Namespace) -> dict:
    out_dir = Path(args.sem_seg_out_dir)
    model, dataset, device = context.irn_inference(args, out_dir, ".png")
    data = context.dataset(args)
    ids = dataset.ids
    eval_ids = set(context.eval_ids(args)) if args.sem_seg_ppmg else set()
    all_eval = eval_ids & set(context.id_list(args.infer_list))
    thresholds = sorted(set(map(float, args.sweep_thres)) | {float(args.sem_seg_bg_thres)})
    compare = RuleComparison(data.n_classes + 1, thresholds)
    rule = rule_of(args)

    def walks() -> Iterator[tuple]:
        """label_walk's jobs, one per image, as the network and the walk produce them."""
        for k in tqdm(range(len(dataset)), desc="make_sem_seg", disable=not dist.is_main()):
            sample = dataset[k]
            maps = load_maps(Path(args.amn_cam_out_dir) / f"{ids[k]}.npz")
            boundary = boundary_map(model, sample["imgs"][0].to(device), args.irn_crop_size)
            keys, scores = walked_scores(maps, boundary, sample["size"], power=args.sem_seg_power,
                                         beta=args.beta, exp_times=args.exp_times,
                                         radius=args.walk_radius)
            if args.sem_seg_ppmg:  # pickled to the CPU pool; the constant rule stays on device
                keys, scores = keys.cpu().numpy(), scores.float().cpu().numpy()
            yield ids[k], keys, scores, str(data.image_path(ids[k])), rule

    # PPMG's CRFs over the CPU pool beside the network (as eval_seg's); the constant rule here
    workers = context.cpu_workers(args) - 1 if args.sem_seg_ppmg else 0
    start = time.time()
    with torch.inference_mode():
        for (name, keys, scores, _, _), mask in map_streamed(label_walk, walks(), workers):
            save_png(out_dir / f"{name}.png", mask)
            if name in eval_ids:
                compare.add(keys, scores, mask, load_png(data.gt_dir() / f"{name}.png"))
    stats = {"written": len(ids), "seconds": round(time.time() - start, 1)}
    shown = (f"PPMG alpha {args.sem_seg_ppmg_alpha:g}, cv_scale {args.sem_seg_ppmg_cv_scale:g}"
             if args.sem_seg_ppmg else f"bg score {args.sem_seg_bg_thres:g}")
    log(f"make_sem_seg_labels: {stats['written']} masks ({shown}) in {stats['seconds']} s "
        f"-> {out_dir}")
    if args.sem_seg_ppmg:
        stats.update(report_comparison(args, compare, len(all_eval), data.class_names))
    dist.barrier()
    return stats


def report_comparison(args: argparse.Namespace, compare: RuleComparison, expected: int,
                      class_names: tuple[str, ...]) -> dict:
    """The rules' record (step "make_sem_seg") when this call made every evaluation-split id
    of --infer_list; a resumed call that made only some says so and records nothing."""
    record = compare.record(("background",) + tuple(class_names))
    if not dist.is_main():
        return {}
    if record["images"] != expected or expected == 0:
        log(f"make_sem_seg_labels: PPMG vs the constant rule not scored: this call made "
            f"{record['images']} of the {expected} evaluation-split masks (--overwrite True "
            f"remakes them all)")
        return {}
    record = {"step": "make_sem_seg", "split": args.chainer_eval_set, **record}
    append_metrics(args.metrics_file, record)
    log(f"make_sem_seg_labels: on {record['images']} {args.chainer_eval_set} images PPMG "
        f"{100 * record['ppmg']:.2f} vs the constant rule's best {100 * record['best_miou']:.2f} "
        f"at {record['best_threshold']:.2f}")
    return {"comparison": record}
