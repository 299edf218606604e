"""eval_seg: DeepLab-V2 inference, optional dense CRF, palette PNGs and mIoU (docs/deeplab.md §4).

For every id of --seg_eval_list (default --val_list): the full-size image through the MSC network
(max fusion of 1x, 0.75x, 0.5x, as deeplab-pytorch's `test`), optional extra input scales
(--seg_infer_scales) and a flipped copy (--seg_infer_flip). With --seg_crf, pydensecrf refines
the probabilities with deeplab-pytorch's values (10 iterations, Gaussian 3/1, bilateral 4/67/3)
on the REAL uint8 RGB image; the reference feeds the mean-subtracted BGR image cast to uint8
(negative values wrap around), which we do not reproduce (docs/deeplab.md §4.2; the bilateral kernel is
channel-order invariant, so RGB vs BGR does not matter). Predictions go to
--seg_pred_out_dir/<id>.png as VOC palette PNGs; the dataset-level mIoU against
SegmentationClass is appended to --metrics_file (with the no-CRF mIoU of the same run). With
--seg_test_list, the same is done for a test list without ground truth, into --seg_test_out_dir
(default results/VOC2012/Segmentation/comp6_test_cls: tar it for the server).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import torch

from misc.engine import dist
from misc.engine.log import log
from misc.engine.precision import allow_tf32
from misc.eval.metrics import evaluate_label_pngs, summary
from misc.eval.seg_inference import SegInferSettings, predict_ids
from misc.io.checkpoints import load_checkpoint
from misc.io.metrics_file import append_metrics
from net.deeplabv2 import deeplab_v2_msc
from step.driver import context
from step.driver.interface import POSITIVE, Files, Flag, Step, str2bool

STEP = Step(
    "eval_seg", "DeepLab-V2 predictions, dense CRF, mIoU (docs/deeplab.md §4)",
    flags=(
        Flag("seg_eval_list", shapes=False, help="default --val_list"),
        Flag("seg_infer_scales", float, (1.0,), nargs="+",
             help="input scales at inference, each through the MSC network (reference: 1.0 "
                  "only)", domain=POSITIVE),
        Flag("seg_infer_flip", str2bool, False,
             help="also infer on the mirrored image (reference: no)"),
        Flag("seg_crf", str2bool, True, help="dense CRF on the predictions"),
        Flag("seg_crf_params", float, (10, 3, 1, 4, 67, 3), nargs=6,
             metavar=("ITER", "POS_W", "POS_XY", "BI_W", "BI_XY", "BI_RGB"),
             help="deeplab-pytorch's CRF values", domain=POSITIVE),
        Flag("seg_test_list", shapes=False,
             help="also export predictions for this list (no GT), e.g. voc12/test.txt"),
        Flag("seg_pred_out_dir", default="result/seg_pred", shapes=False),
        Flag("seg_test_out_dir", default="results/VOC2012/Segmentation/comp6_test_cls",
             shapes=False)),
    uses=("seg_backbone", "seg_backbone_style", "seg_channels_last", "seg_tf32", "amp"),
    reads=(Files("seg_weights_name"),),
    writes=(Files("seg_pred_out_dir", "seg_eval_list", ".png", "prediction"),
            Files("seg_test_out_dir", "seg_test_list", ".png", "test prediction")),
    images=("seg_eval_list", "seg_test_list"), unlabelled=("seg_eval_list", "seg_test_list"),
    gt=("seg_eval_list",))


def round_step(name: str, title: str, pred_flag: str, pred_default: str, weights_flag: str,
               also_reads: tuple[str, ...]) -> Step:
    """eval_seg's declaration for another DeepLab (eval_seg_gt, eval_seg_cp): its flags and
    settings, the checkpoint `weights_flag`, the predictions of --seg_eval_list in `pred_flag`;
    `also_reads`: the flags its derived call (step.driver.context) reads. Optional."""
    return Step(name, title, flags=(Flag(pred_flag, default=pred_default, shapes=False),),
                uses=tuple(f.name for f in STEP.flags) + STEP.uses, also_reads=also_reads,
                reads=(Files(weights_flag),),
                writes=(Files(pred_flag, "seg_eval_list", ".png", "prediction"),),
                images=("seg_eval_list",), unlabelled=("seg_eval_list",), gt=("seg_eval_list",),
                optional=True)


def infer_settings(args: argparse.Namespace, scales: tuple[float, ...], flip: bool,
                   crf_params: tuple[float, ...] | None) -> SegInferSettings:
    """How a pass predicts (eval_seg, make_seg_cp): its views and CRF, and the workers."""
    return SegInferSettings(scales=tuple(scales), flip=bool(flip),
                            crf_params=tuple(crf_params) if crf_params is not None else None,
                            num_workers=int(args.num_workers),
                            # the pool runs beside this process's network: one core left to
                            # it (docs/measurements.md)
                            crf_workers=context.cpu_workers(args) - 1)


def settings(args: argparse.Namespace) -> SegInferSettings:
    """eval_seg's views and CRF (--seg_infer_scales, --seg_infer_flip, --seg_crf*)."""
    return infer_settings(args, args.seg_infer_scales, args.seg_infer_flip,
                          args.seg_crf_params if args.seg_crf else None)


def predict_list(model: Callable, list_name: str, args: argparse.Namespace, out_dir: Path,
                 device: torch.device, with_gt: bool, how: SegInferSettings | None = None):
    """Predictions for every id of a list file (`how`, default eval_seg's `settings`); the
    no-CRF confusion when `with_gt`."""
    data = context.dataset(args)
    ids = context.id_list(list_name)
    data.check_images(ids, list_name)
    return predict_ids(model, ids, data.image_path, out_dir, how or settings(args), device,
                       data.n_classes + 1, data.gt_dir() if with_gt else None)


def load_model(args: argparse.Namespace, weights: str, trainer: str
               ) -> tuple[Callable, torch.device]:
    """The DeepLab checkpoint `weights` (made by pass `trainer`) in eval mode on this process's
    device, its forward under --amp / --seg_channels_last, and the device."""
    device = context.device(args)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # every image has its own size (docs/deeplab.md §6.3)
        allow_tf32(args.seg_tf32)  # for this pass only (run_sample.run_pass)
    model = deeplab_v2_msc(context.dataset(args).n_classes + 1, args.seg_backbone,
                           args.seg_backbone_style)
    load_checkpoint(model, weights, made_by=f"{trainer} (--{trainer}_pass True)")
    model.to(device).eval()
    return context.fast_forward(args, model, channels_last=args.seg_channels_last), device


def run(args: argparse.Namespace, step: str = "eval_seg") -> dict:
    """Predict and score --seg_eval_list; `step` names its metrics record (eval_seg_gt: the
    DeepLab trained on the ground truth)."""
    data = context.dataset(args)
    n = data.n_classes + 1
    forward, device = load_model(args, args.seg_weights_name, step.replace("eval_", "train_", 1))
    start = time.time()
    eval_list = args.seg_eval_list or args.val_list
    ids = context.id_list(eval_list)
    out_dir = Path(args.seg_pred_out_dir)
    raw_conf = predict_list(forward, eval_list, args, out_dir, device, with_gt=True)
    record: dict = {}
    if dist.is_main():
        conf, _ = evaluate_label_pngs(ids, out_dir, data.gt_dir(), n)
        names = ("background",) + data.class_names
        record = {"step": step, "split": Path(eval_list).stem, "crf": bool(args.seg_crf),
                  "scales": list(args.seg_infer_scales), "flip": bool(args.seg_infer_flip),
                  **summary(conf, names)}
        if args.seg_crf and raw_conf is not None:
            record["miou_no_crf"] = summary(raw_conf, names)["miou"]
        record["seconds"] = round(time.time() - start, 1)
        append_metrics(args.metrics_file, record)
        extra = f" (no CRF {100 * record['miou_no_crf']:.2f})" if "miou_no_crf" in record else ""
        log(f"{step}: mIoU {100 * record['miou']:.2f}{extra} on {record['split']}, "
            f"{len(ids)} predictions in {out_dir}, {record['seconds']} s")
    if args.seg_test_list:
        test_dir = Path(args.seg_test_out_dir)
        predict_list(forward, args.seg_test_list, args, test_dir, device, with_gt=False)
        log(f"eval_seg: test predictions of {args.seg_test_list} in {test_dir} (palette PNGs; "
            f"`tar -czf results.tgz results` for the evaluation server)")
        record["test_predictions"] = str(test_dir)
    return record
