"""make_bao: BAO's threshold-free pseudo-labels (docs/bao.md §4.2).

The trained BAO network (its student or teacher, --bao_infer_model) on the square views of
make_transcam (--transcam_sizes, each with its flip, batched without padding): [AM background,
TransCAM foreground] summed over the views, per-channel min-max with the reference's 1e-5
terms, argmax -> result/bao_cam/<id>.npz (the maps, background first, and the argmax label);
then the label CRF (--bao_crf_gt_prob, --bao_crf_n_labels) on the CPU pool ->
result/bao_label/<id>.png, class ids 0..C, which train_seg trains on with --seg_label_dir
result/bao_label. Optional: a whole-chain run adds it with --make_bao_pass True.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from misc.data.samples import SquareViewsDataset
from misc.engine import dist
from misc.engine.log import log
from misc.errors import BadInput
from misc.io.checkpoints import load_bao_checkpoint
from misc.seeds.bao import crf_label_one
from misc.seeds.ir_label import write_label_pngs
from misc.seeds.multiscale import bao_merge, run_multiscale_inference
from net import conformer
from step.driver import context
from step.driver.interface import COUNT, FRACTION, Files, Flag, Step
from step.train_transcam import check_patch_multiple

INFER_MODELS = ("student", "teacher")

STEP = Step(
    "make_bao", "BAO's threshold-free pseudo-labels: learned background, label CRF "
                "(docs/bao.md §4.2)",
    flags=(
        Flag("bao_crf_n_labels", int, 91, domain=COUNT,
             help="labels of the CRF's unary (91: the reference's COCO value, used for VOC too, "
                  "docs/quirks.md Q27; at least the classes + 1)"),
        Flag("bao_crf_gt_prob", float, 0.7, domain=FRACTION,
             help="the CRF unary's confidence in the argmax label"),
        Flag("bao_infer_model", default="student", choices=INFER_MODELS,
             help="the network of the BAO checkpoint that makes the maps: the student or its "
                  "EMA teacher (the reference saves both and infers with whichever file "
                  "--weights names, docs/quirks.md Q40; student: the one trained on the "
                  "loss)"),
        Flag("bao_cam_out_dir", default="result/bao_cam", shapes=False),
        Flag("bao_out_dir", default="result/bao_label", shapes=False,
             help="the pseudo-label PNGs; train_seg reads them with --seg_label_dir")),
    uses=("transcam_depth", "transcam_sizes", "transcam_square", "amp", "channels_last",
          "infer_batch_size"),
    reads=(Files("bao_weights_name"),),
    writes=(Files("bao_cam_out_dir", "train_list", ".npz", "BAO map"),
            Files("bao_out_dir", "train_list", ".png", "BAO pseudo-label")),
    images=("train_list",),
    optional=True)


def check_n_labels(n_labels: int, n_classes: int) -> None:
    """The CRF's labels are class ids 0..C: --bao_crf_n_labels must cover them."""
    if n_labels < n_classes + 1:
        raise BadInput(f"--bao_crf_n_labels {n_labels}: the CRF labels are the class ids 0..."
                       f"{n_classes} of this dataset; pass at least {n_classes + 1} (the "
                       f"reference's 91, or {n_classes + 1})")


def write_crf_labels(args: argparse.Namespace, data, ids: list[str], map_dir: str,
                     out_dir: str, desc: str) -> dict:
    """The label CRF (--bao_crf_n_labels, --bao_crf_gt_prob) of the argmax labels stored in
    `map_dir/<id>.npz`, this rank's share on the CPU pool -> `out_dir/<id>.png`."""
    def job_of(i: str, out: Path) -> tuple:
        return (str(Path(map_dir) / f"{i}.npz"), str(data.image_path(i)), str(out),
                int(args.bao_crf_n_labels), float(args.bao_crf_gt_prob))
    return write_label_pngs(crf_label_one, dist.shard(ids), out_dir, job_of,
                            context.cpu_workers(args), args.overwrite, desc)


def run(args: argparse.Namespace) -> dict:
    check_patch_multiple("transcam_sizes", args.transcam_sizes)
    data = context.dataset(args)
    check_n_labels(args.bao_crf_n_labels, data.n_classes)
    device = context.device(args)
    model = conformer.Net(data.n_classes, with_bao_layers=True, depth=args.transcam_depth)
    load_bao_checkpoint(model, args.bao_weights_name, args.bao_infer_model,
                        "train_bao (--train_bao_pass True)")
    model.to(device).eval()
    ids = context.id_list(args.train_list)
    dataset = SquareViewsDataset(ids, data, args.train_list, tuple(args.transcam_sizes),
                                 square=args.transcam_square)
    forward = context.fast_forward(args, model, lambda x, labels: model(x, labels).bao_scores())
    maps = run_multiscale_inference(
        dataset, forward, bao_merge, args.bao_cam_out_dir, device, reduce="sum",
        batch_size=args.infer_batch_size, num_workers=args.num_workers,
        overwrite=args.overwrite, desc="make_bao", exact=True)
    dist.barrier()
    labels = write_crf_labels(args, data, ids, args.bao_cam_out_dir, args.bao_out_dir, "bao crf")
    log(f"make_bao: {maps['written']} maps ({maps['seconds']:.0f} s) -> {args.bao_cam_out_dir}, "
        f"{labels['written']} CRF labels ({labels['seconds']:.0f} s) -> {args.bao_out_dir}; "
        f"{labels['skipped']} already done")
    return {"maps": maps, "labels": labels}
