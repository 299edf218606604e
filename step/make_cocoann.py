"""make_cocoann: the instance pseudo-labels of --infer_list as a COCO-format annotation file,
<--cocoann_out_dir>/instances_<list name>_pseudo.json (docs/pipeline.md §3.12), for training an
instance-segmentation network on them.

Default: the segments of make_ins_seg_labels (result/ins_seg/<id>.npz) with their scores; with
--cocoann_from_sem_seg True the semantic pseudo-masks (result/sem_seg/<id>.png) split into
4-connected components of score 1. Segments below --cocoann_min_score are left out.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

from misc.engine import dist
from misc.engine.log import log
from misc.eval.coco_export import CocoImage, export_coco, semantic_segments
from misc.io.metrics_file import append_metrics
from misc.io.png import load_png
from misc.irn.ins_seg import load_instances
from step.driver.context import dataset, id_list
from step.driver.interface import UNIT, Files, Flag, Step, str2bool

STEP = Step(
    "make_cocoann", "the instance pseudo-labels as a COCO annotation file (docs/pipeline.md "
                    "§3.12)",
    flags=(
        Flag("cocoann_from_sem_seg", str2bool, False,
             help="export the semantic pseudo-masks (--sem_seg_out_dir) split into connected "
                  "components instead of the instance labels (--ins_seg_out_dir)"),
        Flag("cocoann_min_score", float, 0.0,
             help="leave out segments scoring below this (instance scores are 0 for segments "
                  "under 1% of the image)", domain=UNIT),
        Flag("cocoann_out_dir", default="result", shapes=False,
             help="make_cocoann writes <dir>/instances_<infer list name>_pseudo.json")),
    uses=("ins_seg_out_dir", "sem_seg_out_dir"),
    reads=(Files("cocoann_source", "infer_list"),), images=("infer_list",))


def output_path(args: argparse.Namespace) -> Path:
    return Path(args.cocoann_out_dir) / f"instances_{Path(args.infer_list).stem}_pseudo.json"


def run(args: argparse.Namespace) -> dict:
    if not dist.is_main():
        return {}
    data = dataset(args)
    ids = id_list(args.infer_list)
    source = args.sem_seg_out_dir if args.cocoann_from_sem_seg else args.ins_seg_out_dir

    def images() -> Iterator[CocoImage]:
        for i in ids:
            if args.cocoann_from_sem_seg:
                labels, score, cls = semantic_segments(load_png(Path(source) / f"{i}.png"))
            else:
                res = load_instances(Path(source) / f"{i}.npz")
                labels, score, cls = res.labels, res.score, res.cls
            yield CocoImage(i, data.image_path(i).name, labels, score, cls)

    path = output_path(args)
    coco = export_coco(path, images(), data.class_names, args.cocoann_min_score)
    record = {"step": "make_cocoann", "file": str(path), "source": str(source),
              "images": len(coco["images"]), "annotations": len(coco["annotations"])}
    append_metrics(args.metrics_file, record)
    log(f"make_cocoann: {record['annotations']} segments of {record['images']} images "
        f"({source}) -> {path}")
    return record
