"""make_bao_amn: threshold-free pseudo-labels of the BAO-trained AMN (docs/bao.md §5.2).

make_amn_cam's views (--cam_scales and flips, batched), the student or the teacher of
--bao_amn_weights_name (--bao_infer_model), its dropout as make_amn_cam's
(--amn_deterministic); per image the softmax of the mean logits, [background, classes]
multiplied by [1, y], each channel min-max normalised as BAO's inference, argmax ->
result/bao_amn_cam/<id>.npz (maps, background first, and the label); then BAO's label CRF ->
result/bao_amn_label/<id>.png, class ids 0..C: train_seg trains on them with --seg_label_dir,
train_irn with --irn_label_dir. Optional: a whole-chain run adds it with
--make_bao_amn_pass True.
"""
from __future__ import annotations

import argparse

from misc.data.samples import MultiScaleDataset
from misc.engine import dist
from misc.engine.log import log
from misc.io.checkpoints import load_bao_checkpoint
from misc.seeds.multiscale import bao_amn_merge, run_multiscale_inference
from step.driver import context
from step.driver.interface import Files, Flag, Step
from step.make_bao import check_n_labels, write_crf_labels

STEP = Step(
    "make_bao_amn", "threshold-free pseudo-labels of the BAO-trained AMN (docs/bao.md §5.2)",
    flags=(
        Flag("bao_amn_cam_out_dir", default="result/bao_amn_cam", shapes=False),
        Flag("bao_amn_out_dir", default="result/bao_amn_label", shapes=False,
             help="the pseudo-label PNGs; train_seg reads them with --seg_label_dir, train_irn "
                  "with --irn_label_dir")),
    uses=("amn_network", "cam_scales", "amn_dropout", "amn_deterministic", "bao_infer_model",
          "bao_crf_n_labels", "bao_crf_gt_prob", "seed", "amp", "channels_last",
          "infer_batch_size"),
    reads=(Files("bao_amn_weights_name"),),
    writes=(Files("bao_amn_cam_out_dir", "train_list", ".npz", "BAO-AMN map"),
            Files("bao_amn_out_dir", "train_list", ".png", "BAO-AMN pseudo-label")),
    images=("train_list",), optional=True)


def run(args: argparse.Namespace) -> dict:
    data = context.dataset(args)
    check_n_labels(args.bao_crf_n_labels, data.n_classes)
    device = context.device(args)
    model = context.network(args.amn_network, "--amn_network")(data.n_classes,
                                                               dropout=args.amn_dropout)
    load_bao_checkpoint(model, args.bao_amn_weights_name, args.bao_infer_model,
                        "train_bao_amn (--train_bao_amn_pass True)")
    model.to(device).eval()
    model.set_inference_dropout(not args.amn_deterministic)
    ids = context.id_list(args.train_list)
    dataset = MultiScaleDataset(ids, data, args.train_list, tuple(args.cam_scales))
    maps = run_multiscale_inference(
        dataset, context.fast_forward(args, model), bao_amn_merge, args.bao_amn_cam_out_dir,
        device, reduce="mean", batch_size=args.infer_batch_size, num_workers=args.num_workers,
        overwrite=args.overwrite, desc="make_bao_amn")
    dist.barrier()
    labels = write_crf_labels(args, data, ids, args.bao_amn_cam_out_dir, args.bao_amn_out_dir,
                              "bao-amn crf")
    log(f"make_bao_amn: {maps['written']} maps ({maps['seconds']:.0f} s) -> "
        f"{args.bao_amn_cam_out_dir}, {labels['written']} CRF labels ({labels['seconds']:.0f} s)"
        f" -> {args.bao_amn_out_dir}; {labels['skipped']} already done")
    return {"maps": maps, "labels": labels}
