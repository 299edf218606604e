"""eval_seg: DeepLab-V2 inference, optional dense CRF, palette PNGs and mIoU (spec/deeplab.md §4).

For every id of --seg_eval_list (default --val_list): the full-size image through the MSC network
(max fusion of 1x, 0.75x, 0.5x, as deeplab-pytorch's `test`), optional extra input scales
(--seg_infer_scales) and a flipped copy (--seg_infer_flip). With --seg_crf, pydensecrf refines
the probabilities with deeplab-pytorch's values (10 iterations, Gaussian 3/1, bilateral 4/67/3)
on the REAL uint8 RGB image; the reference feeds the mean-subtracted BGR image cast to uint8
(negative values wrap around), which we do not reproduce (spec §4.2; the bilateral kernel is
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

import torch

from misc import dist, session
from misc.artifacts import append_metrics, load_checkpoint
from misc.metrics import evaluate_label_pngs, summary
from misc.seg_inference import predict_list
from net.deeplabv2 import DeepLabV2


def run(args: argparse.Namespace) -> dict:
    root, labels = session.dataset(args)
    device = session.device(args)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # every image has its own size (spec §6.3)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.seg_tf32
    n = labels.n_classes + 1
    model = DeepLabV2(n, args.seg_backbone, args.seg_backbone_style)
    load_checkpoint(model, args.seg_weights_name, made_by="train_seg (--train_seg_pass True)")
    model.to(device).eval()
    start = time.time()
    eval_list = args.seg_eval_list or args.val_list
    ids = session.id_list(eval_list)
    out_dir = Path(args.seg_pred_out_dir)
    raw_conf = predict_list(model, eval_list, root, out_dir, args, device, n, root.gt_dir())
    record: dict = {}
    if dist.is_main():
        conf, _ = evaluate_label_pngs(ids, out_dir, root.gt_dir(), n)
        record = {"step": "eval_seg", "split": Path(eval_list).stem, "crf": bool(args.seg_crf),
                  "scales": list(args.seg_infer_scales), "flip": bool(args.seg_infer_flip),
                  **summary(conf, ("background",) + labels.names)}
        if args.seg_crf and raw_conf is not None:
            record["miou_no_crf"] = summary(raw_conf, ("background",) + labels.names)["miou"]
        record["seconds"] = round(time.time() - start, 1)
        append_metrics(args.metrics_file, record)
        extra = f" (no CRF {100 * record['miou_no_crf']:.2f})" if "miou_no_crf" in record else ""
        session.log(f"eval_seg: mIoU {100 * record['miou']:.2f}{extra} on {record['split']}, "
                    f"{len(ids)} predictions in {out_dir}, {record['seconds']} s")
    if args.seg_test_list:
        test_dir = Path(args.seg_test_out_dir)
        predict_list(model, args.seg_test_list, root, test_dir, args, device, n, None)
        session.log(f"eval_seg: test predictions of {args.seg_test_list} in {test_dir} (palette PNGs; "
                    f"`tar -czf results.tgz results` for the evaluation server)")
        record["test_predictions"] = str(test_dir)
    return record
