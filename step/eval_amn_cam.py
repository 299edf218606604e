"""eval_amn_cam: AMN seed mIoU on the foreground channels (docs/pipeline.md §3.7), with the sweep;
with --ppmg_eval True, PMM's PPMG rows (docs/pmm.md §4); with --amn_bao_eval True, the
threshold-free rows of AMN's own background channel (docs/bao.md §5.1)."""
from __future__ import annotations

import argparse

from misc.eval.seed_eval import evaluate_threshold_free
from step.driver.context import cpu_workers, dataset, eval_ids
from step.driver.interface import Files, Flag, Step, str2bool
from step.driver.runners import run_seed_eval
from step.make_bao import check_n_labels

STEP = Step(
    "eval_amn_cam", "AMN seeds against the ground truth, at one threshold and a sweep",
    flags=(Flag("amn_bao_eval", str2bool, False,
                help="also score AMN's threshold-free labels (docs/bao.md §5.1): the softmax "
                     "argmax over [background, present classes], and BAO's per-channel min-max "
                     "+ argmax before and after the label CRF (--bao_crf_n_labels, "
                     "--bao_crf_gt_prob)"),),
    uses=("cam_eval_thres", "sweep_thres", "ppmg_eval", "ppmg_alphas", "ppmg_cv_scales",
          "bao_crf_n_labels", "bao_crf_gt_prob"),
    reads=(Files("amn_cam_out_dir", "eval_list"),), gt=("eval_list",), images=("eval_list",),
    unlabelled=("eval_list",))


def threshold_free_rows(args: argparse.Namespace) -> dict:
    """The --amn_bao_eval rows of --amn_cam_out_dir."""
    data = dataset(args)
    check_n_labels(args.bao_crf_n_labels, data.n_classes)
    return evaluate_threshold_free(eval_ids(args), args.amn_cam_out_dir, data.image_path,
                                   data.gt_dir(), data.class_names, args.bao_crf_n_labels,
                                   args.bao_crf_gt_prob, cpu_workers(args))


def run(args: argparse.Namespace) -> dict:
    rows = (lambda: threshold_free_rows(args)) if args.amn_bao_eval else None
    return run_seed_eval(args, args.amn_cam_out_dir, drop_background_channel=True,
                         step="eval_amn_cam", extra_rows=rows)
