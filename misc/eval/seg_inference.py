"""DeepLab-V2 inference over an image list (eval_seg's mechanism, docs/deeplab.md §4).

Full-size images (no resize, no padding) through the MSC network; optional extra input scales
and a mirrored copy average the softmax probabilities; logits are upsampled bilinearly
(align_corners=False) to the image size; an optional dense CRF (on a CPU process pool) refines
the probabilities; predictions are VOC palette PNGs. Existing predictions are kept: the output
record around eval_seg (docs/outputs.md) deletes them when the checkpoint or settings changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from misc import imutils
from misc.engine import dist
from misc.engine.log import log
from misc.engine.workers import map_streamed
from misc.eval.metrics import confusion_matrix
from misc.imutils import voc_palette
from misc.io.png import load_png, save_png
from misc.io.records import is_done
from misc.seeds.crf import crf_inference_prob

# A segmentation network: normalised images (B, 3, H, W) -> logits (B, n_classes, h, w).
SegNet = torch.nn.Module


@dataclass(frozen=True)
class SegInferSettings:
    """How predictions are made: extra input scales, a mirrored view, the dense CRF
    (ITER, POS_W, POS_XY, BI_W, BI_XY, BI_RGB, or None for no CRF), the image loader's worker
    processes and the CRF's process pool (<= 1: in this process)."""
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crf_params: tuple[float, ...] | None = None
    num_workers: int = 1
    crf_workers: int = 1


class _Images(Dataset):
    """Label-free image list (test sets have no GT): dict(name, img float32 (3, H, W))."""

    def __init__(self, ids: list[str], image_path: Callable[[str], Path]):
        self.ids, self.image_path = ids, image_path

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        img = imutils.normalize(imutils.read_image(self.image_path(self.ids[i])))
        return {"name": self.ids[i], "img": torch.from_numpy(imutils.hwc_to_chw(img))}


@torch.inference_mode()
def predict_probs(model: SegNet, img: torch.Tensor, scales: Sequence[float] = (1.0,),
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


def _write(job: tuple) -> None:
    """(labels or None, prob or None, image path, out path, crf params) -> palette PNG."""
    labels, prob, image_path, out_path, params = job
    if prob is not None:
        labels = crf_inference_prob(imutils.read_image(image_path), prob, params)
    save_png(out_path, labels.astype(np.uint8), voc_palette())


def predict_folder(model: SegNet, ids: list[str], image_path: Callable[[str], Path],
                   out_dir: Path, settings: SegInferSettings, device: torch.device,
                   n_classes: int, gt_dir: Path | None = None) -> np.ndarray | None:
    """Write out_dir/<id>.png for this rank's share of `ids`; CRF on a process pool when
    settings.crf_workers > 1. Returns this rank's no-CRF confusion against gt_dir (None
    without GT)."""
    mine = dist.shard(ids)
    params = tuple(settings.crf_params) if settings.crf_params is not None else None
    conf = np.zeros((n_classes, n_classes), np.int64) if gt_dir is not None else None
    loader = DataLoader(_Images(mine, image_path), batch_size=None,
                        num_workers=int(settings.num_workers))
    workers = int(settings.crf_workers) if params is not None and len(mine) > 1 else 0

    def jobs() -> Iterator[tuple]:
        for sample in tqdm(loader, desc=f"eval_seg -> {out_dir.name}", disable=not dist.is_main()):
            name = sample["name"]
            prob = predict_probs(model, sample["img"].to(device), settings.scales,
                                 settings.flip).cpu().numpy()
            raw = prob.argmax(0)
            if conf is not None:
                np.add(conf, confusion_matrix(raw, load_png(gt_dir / f"{name}.png"), n_classes),
                       out=conf)
            yield (None if params else raw, prob if params else None, str(image_path(name)),
                   str(out_dir / f"{name}.png"), params)

    for _ in map_streamed(_write, jobs(), workers):
        pass
    return conf


def _global_sum(conf: np.ndarray) -> np.ndarray:
    """Sum of an int64 array over ranks (identity in one process): the exact int64 sum, on the
    collective's device (a GPU under NCCL)."""
    return dist.all_reduce_sum(torch.from_numpy(conf)).numpy()


def predict_ids(model: SegNet, ids: list[str], image_path: Callable[[str], Path],
                out_dir: Path, settings: SegInferSettings, device: torch.device,
                n_classes: int, gt_dir: Path | None) -> np.ndarray | None:
    """Predict every id without a current prediction in `out_dir` (`misc.io.records.is_done`: the
    caller's output record decides whether existing ones are current, docs/outputs.md).
    Returns the no-CRF confusion summed over ranks when every id was predicted in this call
    and GT is given, else None."""
    todo = [i for i in ids if not is_done(out_dir / f"{i}.png")]
    if not todo:
        log(f"eval_seg: {out_dir} holds every prediction; re-scoring")
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = predict_folder(model, todo, image_path, out_dir, settings, device, n_classes, gt_dir)
    conf = None if conf is None else _global_sum(conf)
    dist.barrier()
    return conf if len(todo) == len(ids) else None
