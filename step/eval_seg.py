"""eval_seg: DeepLab-V2 inference, optional dense CRF, palette PNGs and mIoU (spec/deeplab.md §4).

For every id of --seg_eval_list (default --val_list): the full-size image (no resize, no padding)
through the MSC network (max fusion of 1x, 0.75x, 0.5x, as deeplab-pytorch's `test`); optional
extra input scales (--seg_infer_scales) and a flipped copy (--seg_infer_flip) average the
softmax probabilities; logits are upsampled bilinearly (align_corners=False) to the image size.
With --seg_crf, pydensecrf refines the probabilities with deeplab-pytorch's values (10
iterations, Gaussian 3/1, bilateral 4/67/3) on the REAL uint8 RGB image; the reference feeds the
mean-subtracted BGR image cast to uint8 (negative values wrap around), which we do not reproduce
(spec §4.2; the bilateral kernel is channel-order invariant, so RGB vs BGR does not matter).
Predictions go to --seg_pred_out_dir/<id>.png as VOC palette PNGs; the dataset-level mIoU
against SegmentationClass is appended to --metrics_file (with the no-CRF mIoU of the same run).
With --seg_test_list, the same is done for a test list without ground truth, into
--seg_test_out_dir (default results/VOC2012/Segmentation/comp6_test_cls: tar it for the server).

A finished folder carries .eval_seg.json (checkpoint identity, settings, id list); a rerun with
the same checkpoint and settings re-scores it without inference, anything else redoes it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Sequence

import numpy as np
import pydensecrf.densecrf as dcrf
import torch
import torch.nn.functional as F
from pydensecrf.utils import unary_from_softmax
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from misc.imutils import voc_palette
from misc import dist, imutils, session
from misc.artifacts import append_metrics, atomic_path, load_checkpoint, load_png, save_png
from misc.metrics import confusion_matrix, evaluate_label_pngs, summary
from net.deeplabv2 import DeepLabV2
from voc12.dataloader import VOCRoot

# deeplab-pytorch CRF config: ITER_MAX, POS_W, POS_XY_STD, BI_W, BI_XY_STD, BI_RGB_STD
CRF_DEFAULTS = (10, 3, 1, 4, 67, 3)
MARKER = ".eval_seg.json"


def dense_crf(img: np.ndarray, prob: np.ndarray, params: Sequence[float] = CRF_DEFAULTS) -> np.ndarray:
    """Dense CRF on softmax probabilities; returns (H, W) int64 labels.

    img: uint8 (H, W, 3) RGB; prob: (C, H, W) probabilities (unary = -log p, clipped at 1e-5);
    params: (iterations, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std).
    """
    n_iter, pos_w, pos_xy, bi_w, bi_xy, bi_rgb = params
    c, h, w = prob.shape
    if img.shape != (h, w, 3):
        raise ValueError(f"image {img.shape} does not fit probabilities {prob.shape}")
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob)))
    d.addPairwiseGaussian(sxy=pos_xy, compat=pos_w)
    d.addPairwiseBilateral(sxy=bi_xy, srgb=bi_rgb, rgbim=np.array(img, np.uint8, order="C"),
                           compat=bi_w)
    q = np.asarray(d.inference(int(n_iter)), np.float32).reshape(c, h, w)
    return np.argmax(q, axis=0)


class _Images(Dataset):
    """Label-free image list (test sets have no GT): dict(name, img float32 (3, H, W))."""

    def __init__(self, ids: list[str], root: VOCRoot):
        self.ids, self.root = ids, root

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        img = imutils.normalize(imutils.read_image(self.root.image_path(self.ids[i])))
        return {"name": self.ids[i], "img": torch.from_numpy(imutils.hwc_to_chw(img))}


@torch.inference_mode()
def predict_probs(model: DeepLabV2, img: torch.Tensor, scales: Sequence[float] = (1.0,),
                  flip: bool = False) -> torch.Tensor:
    """(C, H, W) class probabilities of one normalised image (3, H, W): per view (input scale,
    optional mirror) the MSC logits, bilinearly upsampled to (H, W), softmax; mean of views."""
    h, w = img.shape[-2:]
    total = 0
    for s in scales:
        x = img[None] if s == 1 else F.interpolate(img[None], scale_factor=s, mode="bilinear",
                                                   align_corners=False)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        logits = model(x)
        if flip:
            logits = torch.stack([logits[0], logits[1].flip(-1)])
        up = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False)
        total = total + F.softmax(up, dim=1).sum(0)
    return total / (len(scales) * (2 if flip else 1))


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _write(job: tuple) -> None:
    """(labels or None, prob or None, image path, out path, crf params) -> palette PNG."""
    labels, prob, image_path, out_path, params = job
    if prob is not None:
        labels = dense_crf(imutils.read_image(image_path), prob, params)
    save_png(out_path, labels.astype(np.uint8), voc_palette())


def predict_folder(model: DeepLabV2, ids: list[str], root: VOCRoot, out_dir: Path,
                   args: argparse.Namespace, device: torch.device, n_classes: int,
                   gt_dir: Path | None = None) -> np.ndarray | None:
    """Write out_dir/<id>.png for this rank's share of `ids`; CRF on a process pool when
    --num_workers > 1. Returns this rank's no-CRF confusion against gt_dir (None without GT)."""
    mine = dist.shard(ids)
    params = tuple(args.seg_crf_params) if args.seg_crf else None
    conf = np.zeros((n_classes, n_classes), np.int64) if gt_dir is not None else None
    workers = int(args.num_workers)
    loader = DataLoader(_Images(mine, root), batch_size=None, num_workers=workers)
    pool = mp.get_context("spawn").Pool(workers, initializer=_one_thread) \
        if params is not None and workers > 1 and len(mine) > 1 else None
    pending: deque = deque()
    try:
        for sample in tqdm(loader, desc=f"eval_seg -> {out_dir.name}", disable=not dist.is_main()):
            name = sample["name"]
            prob = predict_probs(model, sample["img"].to(device), args.seg_infer_scales,
                                 args.seg_infer_flip).cpu().numpy()
            raw = prob.argmax(0)
            if conf is not None:
                conf += confusion_matrix(raw, load_png(gt_dir / f"{name}.png"), n_classes)
            job = (None if params else raw, prob if params else None, str(root.image_path(name)),
                   str(out_dir / f"{name}.png"), params)
            if pool is None:
                _write(job)
                continue
            pending.append(pool.apply_async(_write, (job,)))
            while len(pending) > 2 * workers:
                pending.popleft().get()
        while pending:
            pending.popleft().get()
    finally:
        if pool is not None:
            pool.terminate()
    return conf


def _settings(args: argparse.Namespace, ids: list[str]) -> dict:
    """What the predictions of a folder depend on (compared with the folder's marker)."""
    weights = Path(args.seg_weights_name).resolve()
    st = weights.stat()
    return {"weights": str(weights), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "backbone": args.seg_backbone, "style": args.seg_backbone_style,
            "scales": list(args.seg_infer_scales), "flip": bool(args.seg_infer_flip),
            "crf": list(args.seg_crf_params) if args.seg_crf else None,
            "ids": hashlib.sha1("\n".join(ids).encode()).hexdigest()}


def _up_to_date(out_dir: Path, settings: dict, overwrite: bool) -> bool:
    marker = out_dir / MARKER
    try:
        return not overwrite and json.loads(marker.read_text()) == settings
    except (OSError, ValueError):
        return False


def _global_sum(conf: np.ndarray) -> np.ndarray:
    """Sum of an int64 array over ranks (identity in one process)."""
    if dist.world()[1] == 1:
        return conf
    t = dist.all_reduce_mean(torch.from_numpy(conf).double()) * dist.world()[1]
    return t.round().long().numpy()


def predict_list(model: DeepLabV2, list_name: str, root: VOCRoot, out_dir: Path,
                 args: argparse.Namespace, device: torch.device, n_classes: int,
                 gt_dir: Path | None) -> np.ndarray | None:
    """Predict every id of a list file unless its folder is up to date; returns the no-CRF
    confusion summed over ranks (None without GT or when nothing was inferred)."""
    ids = session.id_list(list_name)
    root.check_images(ids, list_name)
    settings = _settings(args, ids)
    if _up_to_date(out_dir, settings, args.overwrite):
        session.log(f"eval_seg: {out_dir} is up to date with {args.seg_weights_name}; re-scoring")
        return None
    if dist.is_main():
        (out_dir / MARKER).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = predict_folder(model, ids, root, out_dir, args, device, n_classes, gt_dir)
    conf = None if conf is None else _global_sum(conf)
    dist.barrier()
    if dist.is_main():
        with atomic_path(out_dir / MARKER) as tmp:
            tmp.write_text(json.dumps(settings))
    return conf


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
