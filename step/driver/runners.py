"""The runners that several steps each configure: seed evaluation (eval_cam / eval_amn_cam /
eval_transcam) and IR labels (cam_to_ir_label / amn_cam_to_ir_label)."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable

from misc.engine import dist
from misc.engine.log import log
from misc.errors import BadInput
from misc.eval.metrics import evaluate_label_pngs, summary
from misc.eval.seed_eval import evaluate_ppmg, evaluate_seeds, setting_name
from misc.io.metrics_file import append_metrics
from misc.seeds.ir_label import make_ir_labels
from step.driver.context import cpu_workers, dataset, eval_ids, id_list
from step.driver.interface import NON_NEGATIVE, Domain, Flag, str2bool


def run_seed_eval(args: argparse.Namespace, map_dir: str | Path, drop_background_channel: bool,
                  step: str, threshold: float | None = None,
                  extra_rows: Callable[[], dict] | None = None) -> dict:
    """eval_cam / eval_amn_cam / eval_transcam: `map_dir` at `threshold` (default
    --cam_eval_thres) and every --sweep_thres (and, with --ppmg_eval True, PPMG at every
    --ppmg_alphas x --ppmg_cv_scales; and the entries `extra_rows()` returns), appended to
    --metrics_file."""
    if not dist.is_main():
        return {}
    data = dataset(args)
    threshold = args.cam_eval_thres if threshold is None else threshold
    scores = evaluate_seeds(eval_ids(args), map_dir, data.gt_dir(), data.class_names,
                            threshold, args.sweep_thres, drop_background_channel,
                            cpu_workers(args))
    record = {"step": step, "split": args.chainer_eval_set, **scores}
    if args.ppmg_eval:
        settings = [(a, c) for a in args.ppmg_alphas for c in args.ppmg_cv_scales]
        record.update(evaluate_ppmg(eval_ids(args), map_dir, data.image_path, data.gt_dir(),
                                    data.class_names, settings, drop_background_channel,
                                    cpu_workers(args)))
    if extra_rows is not None:
        record.update(extra_rows())
    append_metrics(args.metrics_file, record)
    log(f"{step}: mIoU {100 * record['miou']:.2f} at threshold {threshold}; "
        f"best {100 * record['best_miou']:.2f} at {record['best_threshold']:.2f}")
    log("  per class: " + ", ".join(f"{n} {100 * v:.1f}" if v is not None else f"{n} -"
                                    for n, v in record["iou"].items()))
    if "ppmg" in record:
        best = record["ppmg_best"]
        rows = ", ".join(f"{name} {100 * miou:.2f}" for name, miou in record["ppmg"].items())
        log(f"  PPMG ({record['ppmg_seconds']:.1f} s): {rows}; best {100 * best['miou']:.2f} "
            f"at {setting_name(best['alpha'], best['cv_scale'])}")
    for row, score in record.get("threshold_free", {}).items():
        log(f"  threshold-free {row}: mIoU {100 * score['miou']:.2f} (FP "
            f"{100 * score['mean_fp']:.2f}, FN {100 * score['mean_fn']:.2f})")
    return record


def ir_ppmg_flags(prefix: str, alphas: tuple[float, float]) -> tuple[Flag, ...]:
    """--<prefix>_ir_ppmg, --<prefix>_ir_ppmg_alphas (default `alphas`, FG < BG) and
    --<prefix>_ir_ppmg_cv_scale of an IR-label step (PMM's plug point (ii), docs/pmm.md §7)."""
    return (
        Flag(f"{prefix}_ir_ppmg", str2bool, False,
             help=f"PMM's plug point (ii), docs/pmm.md §7: confident fg / bg from PPMG at the two "
                  f"--{prefix}_ir_ppmg_alphas instead of the thresholds"),
        Flag(f"{prefix}_ir_ppmg_alphas", float, alphas, nargs=2, metavar=("FG", "BG"),
             help="PPMG's alpha for confident foreground (low) and background (high); default: "
                  "the alphas whose crossing is at the default thresholds",
             domain=Domain(0, low_open=True, ordered=True)),
        Flag(f"{prefix}_ir_ppmg_cv_scale", float, 0.3, help="CVS's s for these PPMG masks (0: off)",
             domain=NON_NEGATIVE))


def ir_label_levels(args: argparse.Namespace, prefix: str, fg_thres: float, bg_thres: float
                    ) -> tuple[float, float, float | None]:
    """(fg, bg, cv_scale) of an IR-label step from its flags `--<prefix>_ir_ppmg*`: the
    thresholds given and None by default (the reference), PPMG's two α's and CVS's s with
    `--<prefix>_ir_ppmg True` (docs/pmm.md §7)."""
    if not getattr(args, f"{prefix}_ir_ppmg"):
        return fg_thres, bg_thres, None
    fg_alpha, bg_alpha = getattr(args, f"{prefix}_ir_ppmg_alphas")
    if fg_alpha >= bg_alpha:
        raise BadInput(f"--{prefix}_ir_ppmg_alphas {fg_alpha:g} {bg_alpha:g}: the first (confident "
                       f"foreground) must be below the second (confident background), a lower "
                       f"alpha giving less foreground; e.g. 1.34 11.67")
    return fg_alpha, bg_alpha, getattr(args, f"{prefix}_ir_ppmg_cv_scale")


def run_ir_label_step(args: argparse.Namespace, prefix: str, map_dir: str | Path,
                      out_dir: str | Path, thresholds: tuple[float, float],
                      drop_background_channel: bool, step: str) -> dict:
    """cam_to_ir_label / amn_cam_to_ir_label: this rank's share of --train_list at the levels of
    `ir_label_levels` (the reference's `thresholds` (fg, bg), or PPMG's α's with
    --<prefix>_ir_ppmg True), then the labels' score on the evaluation split; with PPMG, also
    the score of the thresholds' labels of the same maps (plug point (ii)'s claim, docs/pmm.md
    §7), made in a temporary folder."""
    fg, bg, cv_scale = ir_label_levels(args, prefix, *thresholds)
    ids = dist.shard(id_list(args.train_list))
    stats = make_ir_labels(ids, map_dir, dataset(args).image_path, out_dir, fg, bg,
                           drop_background_channel, num_workers=cpu_workers(args),
                           overwrite=args.overwrite, ppmg_cv_scale=cv_scale)
    how = f"fg {fg}, bg {bg}" if cv_scale is None else \
        f"PPMG alphas fg {fg}, bg {bg}, cv_scale {cv_scale}"
    log(f"{step}: {stats['written']} labels written, {stats['skipped']} already done, "
        f"{stats['seconds']:.0f} s ({how}) -> {out_dir}")
    dist.barrier()
    if dist.is_main():
        reference = None
        if cv_scale is not None:
            with tempfile.TemporaryDirectory(prefix="ir_reference_") as tmp:
                make_ir_labels(scored_ids(args), map_dir, dataset(args).image_path, tmp,
                               *thresholds, drop_background_channel,
                               num_workers=cpu_workers(args))
                reference = score_ir_labels(args, tmp, step, record=False)
        stats.update(score_ir_labels(args, out_dir, step, reference))
    return stats


def scored_ids(args: argparse.Namespace) -> list[str]:
    """The ids of the evaluation split that --train_list has IR labels for."""
    done = set(id_list(args.train_list))
    return [i for i in eval_ids(args) if i in done]


def score_ir_labels(args: argparse.Namespace, out_dir: str | Path, step: str,
                    reference: dict | None = None, record: bool = True) -> dict:
    """mIoU of the IR labels on the evaluation split (255 ignored) and their coverage; the
    metrics record (when `record`) gains `reference` (the thresholds' {miou, coverage} beside
    PPMG's labels)."""
    data = dataset(args)
    ids = scored_ids(args)
    if not ids:
        return {}
    conf, coverage = evaluate_label_pngs(ids, out_dir, data.gt_dir(), data.n_classes + 1, 255)
    scores = summary(conf, ("background",) + data.class_names)
    if not record:
        return {"miou": scores["miou"], "coverage": coverage}
    row = {"step": step, "split": args.chainer_eval_set, "ignore_pred": 255, **scores,
           "coverage": coverage, **({"reference": reference} if reference else {})}
    append_metrics(args.metrics_file, row)
    extra = (f"; the thresholds' labels {100 * reference['miou']:.2f}, coverage "
             f"{100 * reference['coverage']:.1f}%" if reference else "")
    log(f"{step}: IR labels mIoU {100 * row['miou']:.2f} (255 ignored), "
        f"coverage {100 * coverage:.1f}%{extra}")
    return {"miou": row["miou"], "coverage": coverage}
