"""What each step reads and writes, by flag: one table that the output records (misc.io.records,
docs/outputs.md) and the plan check before the first step (step/plan.py) both read.

A path is named by the flag that holds it (`cam_out_dir`, `amn_weights_name`, ...) and, for a
folder of per-image files, by the list flag whose ids it holds (`("ir_label_out_dir",
"train_list")`: one IR label per id of --train_list).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

# (path flag, list flag or None for a single file)
Path_ = tuple[str, "str | None"]


@dataclass(frozen=True)
class StepIO:
    reads: tuple[Path_, ...] = ()    # inputs another pass (or the user) provides
    writes: tuple[Path_, ...] = ()   # what this step makes
    settings: tuple[str, ...] = ()   # flags that shape the written files (in their record)
    suffix: str = ""                 # extension of the per-image files it writes
    images: tuple[str, ...] = ()     # list flags whose images (and image-level labels) it reads
    gt: tuple[str, ...] = ()         # list flags whose ground-truth PNGs it scores


# pass name (run_sample.STEPS) -> its inputs, outputs and shaping flags
STEP_IO: dict[str, StepIO] = {
    "train_cam": StepIO(reads=(("backbone_weights", None),),
                        writes=(("cam_weights_name", None),),
                        images=("train_list", "val_list")),
    "make_cam": StepIO(reads=(("cam_weights_name", None),),
                       writes=(("cam_out_dir", "train_list"),),
                       settings=("cam_network", "cam_scales", "amp"), suffix=".npz",
                       images=("train_list",)),
    "eval_cam": StepIO(reads=(("cam_out_dir", "eval_list"),), gt=("eval_list",)),
    "cam_to_ir_label": StepIO(reads=(("cam_out_dir", "train_list"),),
                              writes=(("ir_label_out_dir", "train_list"),),
                              settings=("cam_conf_fg_thres", "cam_conf_bg_thres"), suffix=".png",
                              images=("train_list",)),
    "train_amn": StepIO(reads=(("ir_label_out_dir", "train_list"), ("backbone_weights", None)),
                        writes=(("amn_weights_name", None),), images=("train_list",)),
    "make_amn_cam": StepIO(reads=(("amn_weights_name", None), ("ir_label_out_dir", "train_list")),
                           writes=(("amn_cam_out_dir", "train_list"),),
                           settings=("amn_network", "cam_scales", "amn_dropout",
                                     "amn_deterministic", "seed", "amp"), suffix=".npz",
                           images=("train_list",)),
    "eval_amn_cam": StepIO(reads=(("amn_cam_out_dir", "eval_list"),), gt=("eval_list",)),
    "amn_cam_to_ir_label": StepIO(reads=(("amn_cam_out_dir", "train_list"),),
                                  writes=(("amn_ir_label_out_dir", "train_list"),),
                                  settings=("amn_conf_fg_thres", "amn_conf_bg_thres"),
                                  suffix=".png", images=("train_list",)),
    "train_irn": StepIO(reads=(("amn_ir_label_out_dir", "train_list"), ("backbone_weights", None)),
                        writes=(("irn_weights_name", None),),
                        images=("train_list", "infer_list")),
    "make_ins_seg": StepIO(reads=(("irn_weights_name", None), ("cam_out_dir", "infer_list")),
                           writes=(("ins_seg_out_dir", "infer_list"),),
                           settings=("irn_network", "irn_crop_size", "beta", "exp_times",
                                     "ins_seg_bg_thres", "amp"), suffix=".npz",
                           images=("infer_list",)),
    "eval_ins_seg": StepIO(reads=(("ins_seg_out_dir", "eval_list"),)),
    "make_sem_seg": StepIO(reads=(("irn_weights_name", None), ("amn_cam_out_dir", "infer_list")),
                           writes=(("sem_seg_out_dir", "infer_list"),),
                           settings=("irn_network", "irn_crop_size", "beta", "exp_times",
                                     "sem_seg_power", "sem_seg_bg_thres", "amp"), suffix=".png",
                           images=("infer_list",)),
    "eval_sem_seg": StepIO(reads=(("sem_seg_out_dir", "eval_list"),), gt=("eval_list",)),
    "make_cocoann": StepIO(reads=(("cocoann_source", "infer_list"),), images=("infer_list",)),
    "train_seg": StepIO(reads=(("seg_label_dir", "seg_train_list"), ("seg_backbone_weights", None)),
                        writes=(("seg_weights_name", None),), images=("seg_train_list",)),
    "eval_seg": StepIO(reads=(("seg_weights_name", None),),
                       writes=(("seg_pred_out_dir", "seg_eval_list"),
                               ("seg_test_out_dir", "seg_test_list")),
                       settings=("seg_backbone", "seg_backbone_style", "seg_infer_scales",
                                 "seg_infer_flip", "seg_crf", "seg_crf_params", "amp"), suffix=".png",
                       images=("seg_eval_list", "seg_test_list"), gt=("seg_eval_list",)),
    "train_seg_gt": StepIO(reads=(("seg_backbone_weights", None),),
                           writes=(("seg_gt_weights_name", None),), images=("seg_train_list",),
                           gt=("seg_train_list",)),
    "eval_seg_gt": StepIO(reads=(("seg_gt_weights_name", None),),
                          writes=(("seg_gt_pred_out_dir", "seg_eval_list"),),
                          settings=("seg_backbone", "seg_backbone_style", "seg_infer_scales",
                                    "seg_infer_flip", "seg_crf", "seg_crf_params", "amp"),
                          suffix=".png", images=("seg_eval_list",), gt=("seg_eval_list",)),
}


def path_of(args: argparse.Namespace, flag: str) -> str | None:
    """The path a dataflow flag names under the resolved flags. Besides the parser's flags:
    `seg_label_dir` defaults to --sem_seg_out_dir (`gt` means the dataset's ground truth, which
    is not an output), `cocoann_source` is the folder make_cocoann exports, `seg_backbone_weights`
    defaults to --backbone_weights for a ResNet-50 DeepLab."""
    if flag == "seg_label_dir":
        value = args.seg_label_dir or args.sem_seg_out_dir
        return None if value == "gt" else value
    if flag == "cocoann_source":
        return args.sem_seg_out_dir if args.cocoann_from_sem_seg else args.ins_seg_out_dir
    if flag == "seg_test_out_dir" and not args.seg_test_list:
        return None
    if flag == "seg_backbone_weights" and args.seg_backbone_weights is None:
        return args.backbone_weights if args.seg_backbone == "resnet50" else None
    return getattr(args, flag)


def list_of(args: argparse.Namespace, flag: str) -> str | None:
    """The list file a list flag names (`eval_list`: the --chainer_eval_set split's list,
    `seg_eval_list` defaults to --val_list); None for a single-file path."""
    if flag is None:
        return None
    if flag == "eval_list":
        from step.common import dataset
        return str(dataset(args).split_list(args.chainer_eval_set))
    if flag == "seg_eval_list":
        return args.seg_eval_list or args.val_list
    return getattr(args, flag)
