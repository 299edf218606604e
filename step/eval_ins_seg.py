"""eval_ins_seg: instance pseudo-label mAP on --chainer_eval_set (docs/pipeline.md §3.12).

The ids of the evaluation split that make_ins_seg_labels made (result/ins_seg/<id>.npz) against
the dataset's instance GT (VOC SegmentationObject) and semantic GT (the class of each object):
chainercv's VOC instance evaluation, all-point AP, at IoU 0.5 (the main number, IRN's 37.7 on VOC
train), 0.25 and 0.75. A dataset without instance GT is skipped with a message.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from misc.engine import dist
from misc.engine.log import log
from misc.eval.ins_eval import DEFAULT_THRESHOLDS, eval_ins_seg_files, summary
from misc.io.metrics_file import append_metrics
from step.driver.context import dataset, eval_ids
from step.driver.interface import Files, Step

STEP = Step(
    "eval_ins_seg", "instance mask AP against the ground truth (docs/pipeline.md §3.12)",
    reads=(Files("ins_seg_out_dir", "eval_list", partial=True),))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def run(args: argparse.Namespace) -> dict:
    if not dist.is_main():
        return {}
    data = dataset(args)
    object_dir = getattr(data, "instance_gt_dir", lambda: None)()
    if object_dir is None:
        log(f"eval_ins_seg: the {data.name} dataset has no instance ground truth "
            f"(SegmentationObject); cannot evaluate, skipped")
        return {}
    pred_dir = Path(args.ins_seg_out_dir)
    split = eval_ids(args)
    ids = [i for i in split if (pred_dir / f"{i}.npz").is_file()]
    has_gt = {i: (Path(object_dir) / f"{i}.png").is_file() for i in ids}
    no_gt, ids = [i for i in ids if not has_gt[i]], [i for i in ids if has_gt[i]]
    if no_gt:
        log(f"eval_ins_seg: {len(no_gt)} images without instance GT left out "
            f"(first: {no_gt[:3]})")
    if not ids:
        log(f"eval_ins_seg: no instance labels of {args.chainer_eval_set} in {pred_dir} "
            f"(make_ins_seg_labels runs on --infer_list); nothing to evaluate")
        return {}
    result = eval_ins_seg_files(ids, pred_dir, object_dir, data.gt_dir(), data.n_classes,
                                DEFAULT_THRESHOLDS)
    scores = summary(result, data.class_names)
    record = {"step": "eval_ins_seg", "split": args.chainer_eval_set, "n_images": len(ids),
              "n_split": len(split), "map": scores["map@0.5"], **scores}
    append_metrics(args.metrics_file, record)
    log(f"eval_ins_seg: mAP@0.5 {_percent(record['map'])} (@0.25 "
        f"{_percent(record['map@0.25'])}, @0.75 {_percent(record['map@0.75'])}) on "
        f"{len(ids)} of {len(split)} {args.chainer_eval_set} images")
    return record
