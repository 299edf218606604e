"""Benchmark: every step of the chain at VOC scale, extrapolated to VOC 2012 and COCO 2014.

Run from the repository root:
    python -m bench.bench_voc_scale [--device cpu|cuda] [--n_images N] [--train_iters N] [--amp]
        [--steps make_cam,train_cam,...] [--train_batch B] [--num_workers W] [--json OUT.json]

Writes a temporary VOC-layout dataset of synthetic VOC-sized images (375x500; one in four
500x375; 2-3 classes each: class-coloured, class-striped ellipses and rectangles on a smooth
noisy background) and runs each step at the reference settings (the voc12 profile of
voc12/profile.toml, docs/flags.md) with RANDOM weights: it measures speed, not
accuracy. "Ours" calls the project's mechanisms configured as the step modules configure them
(misc.seeds.multiscale.run_multiscale_inference, misc.seeds.ir_label.make_ir_labels, misc.eval.seed_eval,
misc.irn.sem_seg.boundary_map / pseudo_mask, misc.engine.train.train with the step's loss and optimiser,
misc.eval.seg_inference.predict_ids). Steps read synthetic inputs derived from the ground truth (CAM
and AMN maps, IR labels; the GT doubles as DeepLab's pseudo-masks), so any subset of steps runs
on its own and the CRF steps see realistic label layouts.

Each step runs in its own subprocess: peak host memory is that process's
getrusage(RUSAGE_SELF).ru_maxrss (loader / CRF workers apart: the largest finished child), peak
device memory torch.cuda.max_memory_allocated. Timings synchronise CUDA.
- inference steps: seconds per image over --n_images, after one untimed forward (lazy
  initialisation); fixed costs such as worker start-up are included, amortised over N only;
- training steps: seconds per iteration between optimiser steps, after 1 warm-up iteration,
  over --train_iters iterations. --train_batch B runs B images per iteration and scales the time
  linearly to the reference batch. That is the CPU default (B = 1): there compute is linear in
  the batch, and the reference batches take minutes per iteration and would not fit in memory
  (DeepLab's 10 crops need ~25 GB); the memory columns are then those of batch B. Loader
  prefetching hides the loading time of so few iterations.

--amp runs every step as the driver's --amp --channels_last do (misc/engine/precision.py: the
networks' forward under bf16 autocast where the device supports it, else fp16 with a gradient
scaler in training; channels_last; float32 outputs), the reference-style runs likewise.

Reference-style implementations in the same run (ratio = ours / reference-style; outputs checked):
- make_cam: bench.bench_make_cam.reference_make_cam (batch 1, one image at a time);
- make_sem_seg: the reference's dense transition matrix of the stride-4 map ((h4*w4)^2 float32,
  ~550 MB at 94x125) raised to 2^exp_times by repeated squaring. On CUDA the whole T^256 runs for
  every image and the pseudo-masks are compared with ours. On CPU one full T^256 takes ~9 min,
  so ONE squaring of the first image is timed and multiplied by exp_times (8), plus the IRN pass,
  the matrix build and the final product; agreement is checked on a 40x52 crop of that map with
  the full dense T^256 (labels and largest difference);
- eval_seg: one image at a time, DeepLab forward, CRF in the main process, no worker pool.

Extrapolation (docs/pipeline.md §5, §8): VOC train_aug 10,582 images for the train_cam /
train_amn / train_irn epochs, make_cam, the IR-label steps and make_amn_cam; train 1,464 for
make_sem_seg and the seed evaluations (eval = the eval_cam + eval_amn_cam sweeps of an image);
val 1,449 for eval_seg; CAM 5 epochs batch 16, AMN 5 epochs batch 16, IRN 3 epochs batch 32,
DeepLab 30,000 iterations batch 10. COCO (coco14/profile.toml): train 82,783 for every map,
label and evaluation step, val 40,504 for eval_seg, the same epochs, DeepLab 100,000
iterations; COCO's per-image rows (time and bytes) are scaled by the pixel area of a typical
640x480 COCO image over 500x375 (x1.64), a linear model.

Default CPU run (2 images, 1 warm-up + 2 iterations at batch 1, every step, both orientations):
4.1 and 6.8 min in two runs on the 2 cores of the development machine, contended (other jobs
ran, load 0.3 to 6); per-step figures varied 3-6x between the two runs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.bench_make_cam import reference_make_cam
from bench.bench_random_walk import labels as walk_labels
from misc.data.samples import ClassificationDataset, MultiScaleDataset, SegmentationDataset, SegTrainDataset
from misc.engine.optim import PolyOptimizer
from misc.engine.precision import Amp, amp_on, low_precision, prepare_model, strict_float32
from misc.engine.train import train
from misc.eval.metrics import evaluate_label_pngs
from misc.eval.seed_eval import evaluate_seeds
from misc.eval.seg_inference import SegInferSettings, predict_ids, predict_probs
from misc.imutils import hwc_to_chw, normalize, read_image, voc_palette
from misc.io.maps import load_maps, save_maps
from misc.io.png import load_png, save_png
from misc.irn.random_walk import dense_transition, random_walk
from misc.irn.sem_seg import INFER_RADIUS, boundary_map, pseudo_mask
from misc.seeds.crf import crf_inference_prob
from misc.seeds.ir_label import make_ir_labels
from misc.seeds.multiscale import amn_merge, cam_merge, run_multiscale_inference, strided_size
from net.deeplabv2 import deeplab_v2_msc
from net.resnet50_amn import Net as AmnNet
from net.resnet50_cam import Net as CamNet
from net.resnet50_irn import Net as IrnNet
from run_sample import PIPELINE
from step.driver.flags import defaults
from step.train_amn import amn_adam, amn_loss
from step.train_cam import classification_loss
from step.train_irn import make_loss_fn
from step.train_seg import msc_loss, param_groups
from voc12.dataloader import VOCDataset

REPO = Path(__file__).resolve().parents[1]
N_CLASSES = 20
# The driver's values under the voc12 profile (voc12/profile.toml and the steps' declared
# defaults, docs/flags.md), read from the same declarations the driver uses.
_VOC = defaults(PIPELINE.steps.values(), "voc12")
SETTINGS = {key: _VOC[key] for key in (
    "cam_crop_size", "cam_resize_long", "cam_batch_size", "cam_num_epoches", "cam_learning_rate",
    "cam_weight_decay", "cam_scales", "infer_batch_size", "cam_conf_fg_thres",
    "cam_conf_bg_thres", "cam_eval_thres", "sweep_thres", "amn_crop_size", "amn_batch_size",
    "amn_num_epoches", "amn_rescale", "amn_learning_rate", "amn_head_learning_rate",
    "amn_weight_decay", "eps", "amn_dropout", "amn_conf_fg_thres", "amn_conf_bg_thres",
    "irn_crop_size", "irn_batch_size", "irn_num_epoches", "irn_learning_rate",
    "irn_weight_decay", "beta", "exp_times", "sem_seg_power", "sem_seg_bg_thres",
    "seg_backbone", "seg_crop_size", "seg_batch_size", "seg_num_iters", "seg_scales",
    "seg_learning_rate", "seg_momentum", "seg_weight_decay", "seg_poly_power", "seg_lr_decay",
    "seg_crf_params", "seg_infer_scales")}
COCO_SEG_ITERS = defaults(PIPELINE.steps.values(), "coco14")["seg_num_iters"]
S = SETTINGS
VOC_SIZES = ((375, 500), (500, 375))  # (H, W): VOC's usual landscape and portrait sizes
VOC_IMAGES = {"train_aug": 10582, "train": 1464, "val": 1449}
COCO_IMAGES = {"train": 82783, "val": 40504}
COCO_AREA = 640 * 480 / (500 * 375)  # per-image cost and bytes of a typical COCO image
WARMUP_ITERS = 1
CHECK_CROP = (40, 52)  # stride-4 crop of the CPU dense-walk agreement check


# --------------------------------------- steps ----------------------------------------------

@dataclass(frozen=True)
class StepSpec:
    """One row of the table: its unit, how many units the VOC and COCO chains take, whether it
    writes a per-image artifact, and whether a reference-style implementation runs next to it."""
    name: str
    unit: str
    voc_units: int
    coco_units: int
    artifact: str | None = None
    reference: bool = False
    inference: bool = True
    to_pseudo_masks: bool = True


def _iterations(n_images: int, batch: int, epochs: int) -> int:
    """Updates of `epochs` epochs with drop_last (docs/pipeline.md §2.7)."""
    return epochs * (n_images // batch)


def _train_spec(name: str, batch: int, epochs: int) -> StepSpec:
    return StepSpec(name, "iteration", _iterations(VOC_IMAGES["train_aug"], batch, epochs),
                    _iterations(COCO_IMAGES["train"], batch, epochs), inference=False)


TRAIN_AUG, TRAIN, COCO_TRAIN = VOC_IMAGES["train_aug"], VOC_IMAGES["train"], COCO_IMAGES["train"]
STEPS = (
    _train_spec("train_cam", S["cam_batch_size"], S["cam_num_epoches"]),
    StepSpec("make_cam", "image", TRAIN_AUG, COCO_TRAIN, "CAM map .npz", reference=True),
    StepSpec("cam_to_ir_label", "image", TRAIN_AUG, COCO_TRAIN, "IR label .png"),
    StepSpec("eval", "image", TRAIN, COCO_TRAIN),
    _train_spec("train_amn", S["amn_batch_size"], S["amn_num_epoches"]),
    StepSpec("make_amn_cam", "image", TRAIN_AUG, COCO_TRAIN, "AMN map .npz"),
    StepSpec("amn_cam_to_ir_label", "image", TRAIN_AUG, COCO_TRAIN, "IR label .png"),
    _train_spec("train_irn", S["irn_batch_size"], S["irn_num_epoches"]),
    StepSpec("make_sem_seg", "image", TRAIN, COCO_TRAIN, "pseudo-mask .png", reference=True),
    StepSpec("train_seg", "iteration", S["seg_num_iters"], COCO_SEG_ITERS, inference=False,
             to_pseudo_masks=False),
    StepSpec("eval_seg", "image", VOC_IMAGES["val"], COCO_IMAGES["val"], "prediction .png",
             reference=True, to_pseudo_masks=False),
)
SPECS = {s.name: s for s in STEPS}
ALIASES = {"make_sem_seg_labels": "make_sem_seg", "eval_cam": "eval", "eval_amn_cam": "eval"}
TRAIN_BATCH = {"train_cam": S["cam_batch_size"], "train_amn": S["amn_batch_size"],
               "train_irn": S["irn_batch_size"], "train_seg": S["seg_batch_size"]}


# ------------------------------------ the dataset -------------------------------------------

def image_sizes(n: int, size: tuple[int, int]) -> list[tuple[int, int]]:
    """One image in four portrait (size transposed), the rest landscape, as in VOC; the
    second image is the first portrait one, so that two images cover both."""
    h, w = size
    return [(w, h) if i % 4 == 1 else (h, w) for i in range(n)]


def class_style(c: int) -> tuple[np.ndarray, float, float]:
    """Class c's colour (3,), stripe period (px) and stripe angle: fixed per class."""
    rng = np.random.default_rng(1000 + c)
    return rng.integers(30, 226, 3).astype(np.float32), 4.0 + 2 * (c % 6), rng.uniform(0, np.pi)


def draw_image(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB (h, w, 3) and GT (h, w) uint8: 2-3 classes as striped ellipses / rectangles."""
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32)
    gt = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for c in rng.choice(N_CLASSES, int(rng.integers(2, 4)), replace=False):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.12, 0.3) * h, rng.uniform(0.12, 0.3) * w
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        else:
            inside = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
        colour, period, angle = class_style(int(c))
        stripes = 0.75 + 0.25 * np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
        img[inside] = (colour * stripes[..., None])[inside]
        gt[inside] = c + 1
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), gt


def write_voc(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[str]:
    """A VOC-layout root: JPEGImages, SegmentationClass (palette PNGs), the three lists and
    cls_labels.csv (the classes visible in each GT). Returns the ids."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids, rows = [], []
    for i, (h, w) in enumerate(sizes):
        img_id = f"2007_{i:06d}"
        img, gt = draw_image(h, w, rng)
        Image.fromarray(img).save(root / "JPEGImages" / f"{img_id}.jpg", quality=90)
        save_png(root / "SegmentationClass" / f"{img_id}.png", gt, voc_palette())
        label = np.zeros(N_CLASSES, int)
        label[np.unique(gt[gt > 0]) - 1] = 1
        ids.append(img_id)
        rows.append(img_id + "," + ",".join(map(str, label)))
    header = "image_id," + ",".join(f"class{c}" for c in range(N_CLASSES))
    (root / "cls_labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    for split in ("train_aug", "train", "val"):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return ids


def cam_like(masks: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """CAM-shaped maps of (K, H, W) float masks: stride-16 means, bilinear to stride 4 and to
    full size via the 16-multiple size (as cam_merge), each channel divided by max + 1e-5."""
    h16, w16 = strided_size(size, 16)
    m16 = F.adaptive_avg_pool2d(masks[None], (h16, w16))
    cam = F.interpolate(m16, strided_size(size, 4), mode="bilinear", align_corners=False)[0]
    high = F.interpolate(m16, (16 * h16, 16 * w16), mode="bilinear",
                         align_corners=False)[0, :, :size[0], :size[1]]
    norm = lambda m: m / (m.amax(dim=(1, 2), keepdim=True) + 1e-5)
    return norm(cam), norm(high)


def write_synthetic_inputs(work: Path, ids: list[str]) -> None:
    """syn/cam, syn/amn_cam (map files) and syn/ir_label (IR labels) derived from the GT, so
    that each step can run without the steps before it."""
    voc = work / "voc"
    for sub in ("cam", "amn_cam", "ir_label"):
        (work / "syn" / sub).mkdir(parents=True, exist_ok=True)
    for i in ids:
        gt = torch.from_numpy(load_png(voc / "SegmentationClass" / f"{i}.png").astype(np.int64))
        keys = torch.unique(gt[gt > 0]) - 1
        masks = (gt[None] == keys.view(-1, 1, 1) + 1).float()
        cam, high = cam_like(masks, tuple(gt.shape))
        save_maps(work / "syn" / "cam" / f"{i}.npz", keys.numpy(), cam.numpy(), high.numpy())
        bg = lambda m: torch.cat([(1 - m.amax(0, keepdim=True)).clamp(0, 1), m])
        save_maps(work / "syn" / "amn_cam" / f"{i}.npz", keys.numpy(), bg(cam).numpy(),
                  bg(high).numpy())
        fg, cls = high.max(0)
        ir = torch.where(fg > 0.5, keys[cls] + 1, torch.where(fg < 0.15, 0, 255))
        save_png(work / "syn" / "ir_label" / f"{i}.png", ir.numpy().astype(np.uint8))


def prepare(work: Path, n_images: int, size: tuple[int, int]) -> list[str]:
    ids = write_voc(work / "voc", image_sizes(n_images, size))
    write_synthetic_inputs(work, ids)
    return ids


# --------------------------------- child-side helpers ---------------------------------------

@dataclass
class Ctx:
    """What a step's subprocess knows: the work folder, device and run options. `amp`: as the
    driver's --amp (or a forced dtype, bench/gpu_check.py); `channels_last`: None follows
    `amp` (this bench's --amp is the driver's --amp --channels_last)."""
    work: Path
    device: torch.device
    amp: Amp
    num_workers: int
    train_batch: int | None
    train_iters: int
    channels_last: bool | None = None
    infer_batch: int | None = None
    inference_dropout: bool = True  # make_amn_cam's quirk (docs/quirks.md Q1)

    @property
    def layout(self) -> bool:
        return amp_on(self.amp) if self.channels_last is None else self.channels_last

    @property
    def infer_batch_size(self) -> int:
        return self.infer_batch or S["infer_batch_size"]

    @cached_property
    def voc(self) -> VOCDataset:
        return VOCDataset(self.work / "voc")

    @cached_property
    def ids(self) -> list[str]:
        text = (self.work / "voc" / "ImageSets" / "Segmentation" / "train.txt").read_text()
        return text.split()

    def syn(self, name: str) -> Path:
        return self.work / "syn" / name

    def out(self, step: str, part: str = "ours") -> Path:
        """A fresh output folder of one step and part."""
        path = self.work / part / step
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of fn(), CUDA synchronised on both ends."""
    t0 = now(device)
    fn()
    return now(device) - t0


def fast(model: torch.nn.Module, ctx: Ctx, fn: Callable | None = None) -> Callable:
    """The forward the steps use (step/context.fast_forward): `fn` (default: the model, moved to
    the device) under --amp's autocast (bf16 where supported, else fp16) and ctx.layout,
    float32 outputs (misc/engine/precision.py)."""
    prepare_model(model.to(ctx.device), ctx.layout)
    return low_precision(fn or model, ctx.device, ctx.amp, ctx.layout)


def seeded(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The same random weights in the ours and reference-style processes."""
    torch.manual_seed(0)
    return build()


def mean_bytes(folder: Path, suffix: str) -> float:
    sizes = [p.stat().st_size for p in folder.glob(f"*{suffix}")]
    return float(np.mean(sizes)) if sizes else float("nan")


def check_tolerance(ctx: Ctx) -> float:
    """Map agreement tolerance: float32 (strict on CUDA too: every step runs in
    misc.engine.precision.strict_float32, as the driver's passes) in the reference's layout;
    channels_last, whose kernels sum in another order (the AMN maps, divided by their max,
    moved by 1.4e-4 on a CPU); --amp (bf16/fp16)."""
    return 3e-2 if amp_on(ctx.amp) else 1e-3 if ctx.layout else 1e-4


# ----------------------------------- inference steps ----------------------------------------

def multiscale_set(ctx: Ctx) -> MultiScaleDataset:
    return MultiScaleDataset(ctx.ids, ctx.voc, "bench", tuple(S["cam_scales"]))


def warm_up_pair(forward: Callable, dataset: MultiScaleDataset, ctx: Ctx) -> None:
    """One untimed forward of the first image and its mirror (lazy initialisation)."""
    sample = dataset[0]
    x = sample["imgs"][0][None].to(ctx.device)
    labels = sample["label"][None].to(ctx.device).repeat(2, 1)
    with torch.inference_mode():
        forward(torch.cat([x, x.flip(-1)]), labels)
    sync(ctx.device)


def cam_model(ctx: Ctx) -> torch.nn.Module:
    return seeded(lambda: CamNet(N_CLASSES)).to(ctx.device).eval()


def run_make_cam(ctx: Ctx) -> dict:
    """make_cam as step/make_cam.py configures it (docs/pipeline.md §3.2)."""
    model, dataset, out = cam_model(ctx), multiscale_set(ctx), ctx.out("make_cam")
    forward = fast(model, ctx, lambda x, _labels: model.cam(x))
    warm_up_pair(forward, dataset, ctx)
    secs = timed(lambda: run_multiscale_inference(
        dataset, forward, cam_merge, out, ctx.device, reduce="sum",
        batch_size=ctx.infer_batch_size, num_workers=ctx.num_workers, overwrite=True,
        desc="make_cam"), ctx.device)
    return {"seconds_per_unit": secs / len(dataset), "artifact_bytes": mean_bytes(out, ".npz")}


def compare_maps(ours: Path, ref: Path, ids: list[str], tol: float) -> str:
    """How many images' maps agree (keys, shapes, values within the tests' form of tolerance:
    |a - b| <= tol + tol * |b|, as tests/test_multiscale.py's rtol = atol), and the largest
    gap."""
    n_equal, gap = 0, 0.0
    for i in ids:
        if not (ours / f"{i}.npz").is_file():
            return "not checked (ours' maps missing)"
        a, b = load_maps(ours / f"{i}.npz"), load_maps(ref / f"{i}.npz")
        same = np.array_equal(a["keys"], b["keys"]) and all(
            a[k].shape == b[k].shape for k in ("cam", "high_res"))
        if same:
            d = max(float(np.abs(a[k] - b[k]).max(initial=0)) for k in ("cam", "high_res"))
            gap = max(gap, d)
            same = all(np.allclose(a[k], b[k], rtol=tol, atol=tol) for k in ("cam", "high_res"))
        n_equal += same
    return (f"{n_equal}/{len(ids)} images' maps equal within rtol = atol = {tol:g} "
            f"(max |diff| {gap:.1e})")


def run_make_cam_ref(ctx: Ctx) -> dict:
    """bench_make_cam's reference loop: batch 1, one forward per scale."""
    model, dataset, out = cam_model(ctx), multiscale_set(ctx), ctx.out("make_cam", "ref")
    forward = fast(model, ctx, model.cam)
    warm_up_pair(lambda x, _labels: forward(x), dataset, ctx)
    secs = timed(lambda: reference_make_cam(dataset, forward, out, ctx.device, ctx.num_workers),
                 ctx.device)
    check = compare_maps(ctx.work / "ours" / "make_cam", out, ctx.ids, check_tolerance(ctx))
    return {"seconds_per_unit": secs / len(dataset), "artifact_bytes": mean_bytes(out, ".npz"),
            "check": check}


def ir_label_run(ctx: Ctx, step: str, maps: str, fg: float, bg: float, drop_bg: bool) -> dict:
    """cam_to_ir_label / amn_cam_to_ir_label as step/driver/runners.run_ir_label_step configures them."""
    out = ctx.out(step)
    secs = timed(lambda: make_ir_labels(ctx.ids, ctx.syn(maps), ctx.voc.image_path, out, fg, bg,
                                        drop_bg, num_workers=ctx.num_workers, overwrite=True),
                 ctx.device)
    return {"seconds_per_unit": secs / len(ctx.ids), "artifact_bytes": mean_bytes(out, ".png")}


def run_cam_to_ir_label(ctx: Ctx) -> dict:
    return ir_label_run(ctx, "cam_to_ir_label", "cam", S["cam_conf_fg_thres"],
                        S["cam_conf_bg_thres"], False)


def run_amn_cam_to_ir_label(ctx: Ctx) -> dict:
    return ir_label_run(ctx, "amn_cam_to_ir_label", "amn_cam", S["amn_conf_fg_thres"],
                        S["amn_conf_bg_thres"], True)


def run_eval(ctx: Ctx) -> dict:
    """eval_cam + eval_amn_cam (docs/pipeline.md §3.3, §3.7): each a one-pass sweep of 19
    thresholds plus 0.25; seconds per image of both."""
    voc = ctx.voc

    def sweep(maps: str, drop_bg: bool) -> None:
        evaluate_seeds(ctx.ids, ctx.syn(maps), voc.gt_dir(), voc.class_names,
                       S["cam_eval_thres"], S["sweep_thres"], drop_bg, ctx.num_workers)
    secs = timed(lambda: (sweep("cam", False), sweep("amn_cam", True)), ctx.device)
    return {"seconds_per_unit": secs / len(ctx.ids)}


def run_make_amn_cam(ctx: Ctx) -> dict:
    """make_amn_cam as step/make_amn_cam.py configures it (dropout on, docs/quirks.md Q1)."""
    model = seeded(lambda: AmnNet(N_CLASSES, dropout=S["amn_dropout"])).eval()
    model.set_inference_dropout(ctx.inference_dropout)
    dataset, out = multiscale_set(ctx), ctx.out("make_amn_cam")
    forward = fast(model, ctx)
    warm_up_pair(forward, dataset, ctx)
    secs = timed(lambda: run_multiscale_inference(
        dataset, forward, amn_merge(ctx.syn("ir_label")), out, ctx.device, reduce="mean",
        batch_size=ctx.infer_batch_size, num_workers=ctx.num_workers, overwrite=True,
        desc="make_amn_cam"), ctx.device)
    return {"seconds_per_unit": secs / len(dataset), "artifact_bytes": mean_bytes(out, ".npz")}


# ----------------------------------- make_sem_seg -------------------------------------------

def irn_setup(ctx: Ctx) -> tuple[Callable, MultiScaleDataset]:
    return fast(seeded(IrnNet).eval(), ctx), MultiScaleDataset(ctx.ids, ctx.voc, "bench", (1.0,))


def sem_seg_one(net: Callable, sample: dict, maps: dict, ctx: Ctx) -> torch.Tensor:
    """One pseudo-mask, as step/make_sem_seg_labels.py makes it."""
    boundary = boundary_map(net, sample["imgs"][0].to(ctx.device), S["irn_crop_size"])
    return pseudo_mask(maps, boundary, sample["size"], power=S["sem_seg_power"], beta=S["beta"],
                       exp_times=S["exp_times"], bg_thres=S["sem_seg_bg_thres"])


def run_make_sem_seg(ctx: Ctx) -> dict:
    net, dataset = irn_setup(ctx)
    out, ids = ctx.out("make_sem_seg"), dataset.ids

    def one(k: int) -> None:
        maps = load_maps(ctx.syn("amn_cam") / f"{ids[k]}.npz")
        save_png(out / f"{ids[k]}.png", sem_seg_one(net, dataset[k], maps, ctx).numpy())
    with torch.inference_mode():
        one(0)  # warm-up: lazy initialisation, the path index of the first size
        secs = timed(lambda: [one(k) for k in range(len(ids))], ctx.device)
    return {"seconds_per_unit": secs / len(ids), "artifact_bytes": mean_bytes(out, ".png")}


def dense_walk(seeds: torch.Tensor, boundary: torch.Tensor, exp_times: int) -> torch.Tensor:
    """(K, h, w) = (seeds * (1 - boundary)) . T ** 2**exp_times by repeated squaring."""
    k, h, w = seeds.shape
    t = dense_transition(boundary, S["beta"], INFER_RADIUS)
    for _ in range(exp_times):
        t = t @ t
    return ((seeds * (1 - boundary)).reshape(k, h * w) @ t).reshape(k, h, w)


def mask_from_walk(rw: torch.Tensor, keys: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference's post-processing: x4 bilinear, crop, global max, background score, argmax."""
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    up = up[:, :size[0], :size[1]]
    up = up / up.max()
    scores = torch.cat([torch.full_like(up[:1], S["sem_seg_bg_thres"]), up])
    keys_pad = np.concatenate([[0], np.asarray(keys) + 1])
    return keys_pad[scores.argmax(0).cpu().numpy()].astype(np.uint8)


def seeds_of(maps: dict, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(maps["cam"], device=device).pow(S["sem_seg_power"])[1:]


def run_make_sem_seg_ref(ctx: Ctx) -> dict:
    """CUDA: the whole dense T^256 per image, masks compared with ours. CPU: one squaring."""
    net, dataset = irn_setup(ctx)
    with torch.inference_mode():
        net(torch.zeros(2, 3, 64, 64, device=ctx.device))  # warm-up
        if ctx.device.type == "cuda":
            return dense_sem_seg_all(net, dataset, ctx)
        return dense_sem_seg_estimate(net, dataset, ctx)


def dense_sem_seg_all(net: Callable, dataset: MultiScaleDataset, ctx: Ctx) -> dict:
    out, ids = ctx.out("make_sem_seg", "ref"), dataset.ids
    ours, same, total = ctx.work / "ours" / "make_sem_seg", 0, 0

    def one(k: int) -> None:
        sample, maps = dataset[k], load_maps(ctx.syn("amn_cam") / f"{ids[k]}.npz")
        boundary = boundary_map(net, sample["imgs"][0].to(ctx.device), S["irn_crop_size"])
        rw = dense_walk(seeds_of(maps, ctx.device), boundary, S["exp_times"])
        save_png(out / f"{ids[k]}.png", mask_from_walk(rw, maps["keys"], sample["size"]))
    secs = timed(lambda: [one(k) for k in range(len(ids))], ctx.device)
    for i in ids:
        if (ours / f"{i}.png").is_file():
            a, b = load_png(ours / f"{i}.png"), load_png(out / f"{i}.png")
            same, total = same + int((a == b).sum()), total + a.size
    check = (f"pseudo-masks: {100 * same / total:.3f}% of pixels equal (full dense T^"
             f"{2 ** S['exp_times']} on every image)" if total else "not checked (ours missing)")
    return {"seconds_per_unit": secs / len(ids), "artifact_bytes": mean_bytes(out, ".png"),
            "check": check, "method": "full dense walk per image"}


def dense_sem_seg_estimate(net: Callable, dataset: MultiScaleDataset, ctx: Ctx) -> dict:
    """First image: IRN pass, dense T build, ONE squaring (x exp_times), the final product."""
    sample, dev = dataset[0], ctx.device
    maps = load_maps(ctx.syn("amn_cam") / f"{dataset.ids[0]}.npz")
    t0 = now(dev)
    boundary = boundary_map(net, sample["imgs"][0].to(dev), S["irn_crop_size"])
    t1 = now(dev)
    n = boundary.numel()
    t = dense_transition(boundary, S["beta"], INFER_RADIUS)
    t2 = now(dev)
    t_sq = t @ t
    t3 = now(dev)
    del t_sq
    rw = (seeds_of(maps, dev) * (1 - boundary)).reshape(len(maps["keys"]), n) @ t
    mask_from_walk(rw.reshape(-1, *boundary.shape), maps["keys"], sample["size"])
    t4 = now(dev)
    del t
    parts = {"irn": t1 - t0, "build": t2 - t1, "one_squaring": t3 - t2, "product": t4 - t3}
    estimate = parts["irn"] + parts["build"] + S["exp_times"] * parts["one_squaring"] \
        + parts["product"]
    return {"seconds_per_unit": estimate, "parts": parts, "check": crop_check(boundary, maps, dev),
            "method": (f"estimated: IRN + T build + {S['exp_times']} x one timed squaring of "
                       f"the {n}x{n} T ({parts['one_squaring']:.1f} s) + product, image 1")}


def crop_check(boundary: torch.Tensor, maps: dict, device: torch.device) -> str:
    """Ours (sparse) vs the full dense walk on the top-left CHECK_CROP of the stride-4 map."""
    crop_b = boundary[:CHECK_CROP[0], :CHECK_CROP[1]]
    (h, w), seeds = crop_b.shape, seeds_of(maps, device)[:, :CHECK_CROP[0], :CHECK_CROP[1]]
    dense = dense_walk(seeds, crop_b, S["exp_times"])
    sparse = random_walk(seeds, crop_b, S["beta"], S["exp_times"], INFER_RADIUS)
    same = (walk_labels(dense) == walk_labels(sparse)).float().mean().item()
    gap = ((dense - sparse).abs().max() / dense.abs().max()).item()
    return (f"{h}x{w} crop, full dense T^{2 ** S['exp_times']} vs ours: {100 * same:.2f}% of "
            f"labels equal, max |diff| / max {gap:.1e}")


# -------------------------------------- training --------------------------------------------

def repeated_ids(ctx: Ctx, batch: int) -> list[str]:
    """Enough ids (repeated; augmentations differ by index) for every timed iteration."""
    ids, need = ctx.ids, batch * (WARMUP_ITERS + ctx.train_iters)
    return [ids[k % len(ids)] for k in range(need)]


def train_timed(ctx: Ctx, name: str, model: torch.nn.Module, loss_fn: Callable,
                make_dataset: Callable[[list[str]], object],
                make_optimizer: Callable[[int], torch.optim.Optimizer]) -> dict:
    """misc.engine.train.train for warm-up + --train_iters iterations; seconds per iteration between
    optimiser steps, scaled linearly to the reference batch when --train_batch differs."""
    ref_batch = TRAIN_BATCH[name]
    batch = ctx.train_batch or ref_batch
    stamps: list[float] = []

    def stamped(max_step: int) -> torch.optim.Optimizer:
        opt = make_optimizer(max_step)
        opt.register_step_post_hook(lambda *_: stamps.append(now(ctx.device)))
        return opt
    train(model, loss_fn, make_dataset(repeated_ids(ctx, batch)), batch, 1, stamped, ctx.device,
          ctx.work / "sess" / f"{name}.pth", num_workers=ctx.num_workers, seed=0, desc=name,
          max_steps=WARMUP_ITERS + ctx.train_iters, amp=ctx.amp, channels_last=ctx.layout)
    per_iter = (stamps[-1] - stamps[WARMUP_ITERS - 1]) / ctx.train_iters
    return {"seconds_per_unit": per_iter * ref_batch / batch, "measured_batch": batch,
            "reference_batch": ref_batch, "measured_seconds_per_iteration": per_iter}


def run_train_cam(ctx: Ctx) -> dict:
    """step/train_cam.py: stages 1-2 frozen, poly SGD (head 10x, momentum quirk)."""
    model = seeded(lambda: CamNet(N_CLASSES))
    for p in list(model.stage1.parameters()) + list(model.stage2.parameters()):
        p.requires_grad_(False)
    backbone, head = model.param_groups()
    lr, wd = S["cam_learning_rate"], S["cam_weight_decay"]

    def optimizer(max_step: int) -> PolyOptimizer:
        return PolyOptimizer([{"params": backbone, "lr": lr, "weight_decay": wd},
                              {"params": head, "lr": 10 * lr, "weight_decay": wd}],
                             lr, wd, max_step, momentum=None)
    data = lambda ids: ClassificationDataset(ids, ctx.voc, "bench", S["cam_crop_size"],
                                             resize_long=tuple(S["cam_resize_long"]))
    return train_timed(ctx, "train_cam", model, classification_loss, data, optimizer)


def run_train_amn(ctx: Ctx) -> dict:
    """step/train_amn.py: Adam, backbone 5e-6 / head 1e-4, on the CAM IR labels."""
    model = seeded(lambda: AmnNet(N_CLASSES, dropout=S["amn_dropout"]))
    backbone, new = model.param_groups()

    def optimizer(_max_step: int) -> torch.optim.Adam:
        return amn_adam(backbone, new, S["amn_learning_rate"], S["amn_head_learning_rate"],
                        S["amn_weight_decay"])
    data = lambda ids: SegmentationDataset(ids, ctx.voc, "bench", ctx.syn("ir_label"),
                                           S["amn_crop_size"], rescale=tuple(S["amn_rescale"]))
    return train_timed(ctx, "train_amn", model, amn_loss(S["eps"]), data, optimizer)


def run_train_irn(ctx: Ctx) -> dict:
    """step/train_irn.py: frozen backbone, poly SGD (displacement 10x), on the AMN IR labels
    (the displacement-mean pass after the last epoch is not timed: one forward pass of train)."""
    model = seeded(IrnNet)
    edge, dp = model.param_groups()
    lr, wd = S["irn_learning_rate"], S["irn_weight_decay"]

    def optimizer(max_step: int) -> PolyOptimizer:
        return PolyOptimizer([{"params": edge, "lr": lr, "weight_decay": wd},
                              {"params": dp, "lr": 10 * lr, "weight_decay": wd}],
                             lr, wd, max_step, momentum=None)
    data = lambda ids: SegmentationDataset(ids, ctx.voc, "bench", ctx.syn("ir_label"),
                                           S["irn_crop_size"], rescale=(0.5, 1.5))
    return train_timed(ctx, "train_irn", model, make_loss_fn(N_CLASSES + 1), data, optimizer)


def seg_backends(ctx: Ctx, benchmark: bool) -> None:
    """cuDNN settings of step/train_seg.py (benchmark) and step/eval_seg.py (no benchmark),
    TF32 as --seg_tf32 True."""
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True


def run_train_seg(ctx: Ctx) -> dict:
    """step/train_seg.py: DeepLab-V2 ResNet-101 MSC, crop 321, 7 scales, poly SGD 0.9."""
    seg_backends(ctx, benchmark=True)
    model = seeded(lambda: deeplab_v2_msc(N_CLASSES + 1, S["seg_backbone"]))
    lr, wd = S["seg_learning_rate"], S["seg_weight_decay"]

    def optimizer(max_step: int) -> PolyOptimizer:
        return PolyOptimizer(param_groups(model, lr, wd), lr, wd, max_step,
                             power=S["seg_poly_power"], momentum=S["seg_momentum"],
                             update_every=S["seg_lr_decay"])
    data = lambda ids: SegTrainDataset(ids, ctx.voc, "bench", ctx.voc.gt_dir(),
                                       S["seg_crop_size"], tuple(S["seg_scales"]), N_CLASSES + 1)
    return train_timed(ctx, "train_seg", model, msc_loss(True), data, optimizer)


# -------------------------------------- eval_seg --------------------------------------------

def seg_model(ctx: Ctx) -> Callable:
    seg_backends(ctx, benchmark=False)
    net = fast(seeded(lambda: deeplab_v2_msc(N_CLASSES + 1, S["seg_backbone"])).eval(), ctx)
    img = read_image(ctx.voc.image_path(ctx.ids[0]))
    predict_probs(net, torch.from_numpy(hwc_to_chw(normalize(img))).to(ctx.device))  # warm-up
    sync(ctx.device)
    return net


def score(ctx: Ctx, folder: Path) -> None:
    """eval_seg's mIoU pass over the written predictions."""
    evaluate_label_pngs(ctx.ids, folder, ctx.voc.gt_dir(), N_CLASSES + 1)


def run_eval_seg(ctx: Ctx, crf: bool = True) -> dict:
    """step/eval_seg.py: MSC inference at scale 1, CRF (unless not `crf`) on a pool of
    --num_workers processes."""
    net, out, voc = seg_model(ctx), ctx.out("eval_seg"), ctx.voc
    settings = SegInferSettings(scales=tuple(S["seg_infer_scales"]), flip=False,
                                crf_params=tuple(S["seg_crf_params"]) if crf else None,
                                num_workers=ctx.num_workers, crf_workers=ctx.num_workers)
    secs = timed(lambda: (predict_ids(net, ctx.ids, voc.image_path, out, settings, ctx.device,
                                      N_CLASSES + 1, voc.gt_dir()), score(ctx, out)), ctx.device)
    return {"seconds_per_unit": secs / len(ctx.ids), "artifact_bytes": mean_bytes(out, ".png")}


def run_eval_seg_ref(ctx: Ctx) -> dict:
    """One image at a time: forward, bilinear to full size, softmax, CRF here, palette PNG."""
    net, out, voc = seg_model(ctx), ctx.out("eval_seg", "ref"), ctx.voc

    def one(img_id: str) -> None:
        img = read_image(voc.image_path(img_id))
        x = torch.from_numpy(hwc_to_chw(normalize(img)))[None].to(ctx.device)
        with torch.inference_mode():
            up = F.interpolate(net(x), img.shape[:2], mode="bilinear", align_corners=False)
            prob = F.softmax(up, dim=1)[0].cpu().numpy()
        save_png(out / f"{img_id}.png", crf_inference_prob(img, prob, S["seg_crf_params"]).astype(np.uint8),
                 voc_palette())
    secs = timed(lambda: ([one(i) for i in ctx.ids], score(ctx, out)), ctx.device)
    ours, same, total = ctx.work / "ours" / "eval_seg", 0, 0
    for i in ctx.ids:
        if (ours / f"{i}.png").is_file():
            a, b = load_png(ours / f"{i}.png"), load_png(out / f"{i}.png")
            same, total = same + int((a == b).sum()), total + a.size
    check = (f"predictions: {100 * same / total:.3f}% of pixels equal" if total
             else "not checked (ours missing)")
    return {"seconds_per_unit": secs / len(ctx.ids), "artifact_bytes": mean_bytes(out, ".png"),
            "check": check}


RUNNERS: dict[tuple[str, str], Callable[[Ctx], dict]] = {
    ("train_cam", "ours"): run_train_cam, ("make_cam", "ours"): run_make_cam,
    ("make_cam", "ref"): run_make_cam_ref, ("cam_to_ir_label", "ours"): run_cam_to_ir_label,
    ("eval", "ours"): run_eval, ("train_amn", "ours"): run_train_amn,
    ("make_amn_cam", "ours"): run_make_amn_cam,
    ("amn_cam_to_ir_label", "ours"): run_amn_cam_to_ir_label,
    ("train_irn", "ours"): run_train_irn, ("make_sem_seg", "ours"): run_make_sem_seg,
    ("make_sem_seg", "ref"): run_make_sem_seg_ref, ("train_seg", "ours"): run_train_seg,
    ("eval_seg", "ours"): run_eval_seg, ("eval_seg", "ref"): run_eval_seg_ref,
}


def child_main(args: argparse.Namespace) -> None:
    """One step (one part) in this process; its result and peak memory go to --_result."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ctx = Ctx(Path(args._work), device, args.amp, args.num_workers, args.train_batch,
              args.train_iters)
    with strict_float32():  # as the driver runs every pass
        result = RUNNERS[(args._child, args._part)](ctx)
    result["peak_host_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_workers_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["peak_device_mib"] = (torch.cuda.max_memory_allocated(device) / 2 ** 20
                                 if device.type == "cuda" else None)
    result["threads"] = torch.get_num_threads()
    Path(args._result).write_text(json.dumps(result))


# ------------------------------------- the parent -------------------------------------------

def child_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--device", args.device, "--num_workers", str(args.num_workers),
             "--train_iters", str(args.train_iters)]
    if args.train_batch:
        flags += ["--train_batch", str(args.train_batch)]
    return flags + (["--amp"] if args.amp else [])


def run_child(step: str, part: str, work: Path, args: argparse.Namespace) -> dict:
    """Run one step in a fresh interpreter; its result, or {'error': ...} with its log tail."""
    result, log = work / "results" / f"{step}.{part}.json", work / "logs" / f"{step}.{part}.log"
    result.parent.mkdir(exist_ok=True)
    log.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "bench.bench_voc_scale", *child_flags(args), "--_child", step,
           "--_part", part, "--_work", str(work), "--_result", str(result)]
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc != 0 or not result.is_file():
        tail = log.read_text()[-3000:]
        print(f"[bench_voc_scale] {step} ({part}) FAILED (exit {rc}):\n{tail}", file=sys.stderr)
        return {"error": f"exit {rc}", "wall_seconds": wall}
    out = json.loads(result.read_text())
    out["wall_seconds"] = wall
    print(f"[bench_voc_scale] {step} ({part}): {out['seconds_per_unit']:.3g} s/{SPECS[step].unit}"
          f", process {wall:.0f} s", file=sys.stderr, flush=True)
    return out


def projected_hours(spec: StepSpec, seconds_per_unit: float | None) -> tuple[float, float] | None:
    """(VOC h, COCO h) of a step at `seconds_per_unit` (per image or per iteration at the
    reference batch): the units of each chain, COCO's images scaled by their pixel area (see
    the module docstring). Also bench/gpu_check.py's projection."""
    if seconds_per_unit is None:
        return None
    coco_scale = COCO_AREA if spec.unit == "image" else 1.0
    return (seconds_per_unit * spec.voc_units / 3600,
            seconds_per_unit * spec.coco_units * coco_scale / 3600)


def make_row(spec: StepSpec, ours: dict, ref: dict | None) -> dict:
    """One table row: times, memory, bytes and the extrapolated hours."""
    row = {"step": spec.name, "unit": spec.unit, "ours_s": ours.get("seconds_per_unit"),
           "reference_s": (ref or {}).get("seconds_per_unit"), "error": ours.get("error"),
           "peak_host_mib": ours.get("peak_host_mib"),
           "peak_workers_mib": ours.get("peak_workers_mib"),
           "peak_device_mib": ours.get("peak_device_mib"),
           "artifact": spec.artifact, "artifact_bytes": ours.get("artifact_bytes"),
           "voc_units": spec.voc_units, "coco_units": spec.coco_units, "detail": ours}
    if ref is not None:
        row["reference_detail"] = ref
    for prefix, seconds in (("", row["ours_s"]), ("reference_", row["reference_s"])):
        hours = projected_hours(spec, seconds)
        row[f"{prefix}voc_h"], row[f"{prefix}coco_h"] = hours if hours else (None, None)
    ok = row["ours_s"] is not None and row["reference_s"] is not None
    row["ratio"] = row["ours_s"] / row["reference_s"] if ok else None
    return row


def _fmt(v, spec: str = ".3g", none: str = "-") -> str:
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def unit_label(row: dict) -> str:
    d = row["detail"]
    if row["unit"] != "iteration" or "reference_batch" not in d:
        return row["unit"]
    if d["measured_batch"] == d["reference_batch"]:
        return f"iteration (bs {d['reference_batch']})"
    return f"iteration (bs {d['reference_batch']}, measured at {d['measured_batch']}, scaled)"


def table(rows: list[dict]) -> str:
    head = ("| step | unit | ours s/unit | reference-style s/unit | ratio | peak host MiB | "
            "peak device MiB | artifact bytes/image | extrapolated VOC h | extrapolated COCO h |")
    lines = [head, "|" + " --- |" * 10]
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['step']} | {r['unit']} | failed ({r['error']}) |" + " - |" * 7)
            continue
        host = _fmt(r["peak_host_mib"], ".0f")
        if r["peak_workers_mib"]:
            host += f" (workers {r['peak_workers_mib']:.0f})"
        lines.append(" | ".join([
            f"| {r['step']}", unit_label(r), _fmt(r["ours_s"]), _fmt(r["reference_s"]),
            _fmt(r["ratio"]), host, _fmt(r["peak_device_mib"], ".0f"),
            _fmt(r["artifact_bytes"], ",.0f"), _fmt(r["voc_h"], ".2f"),
            _fmt(r["coco_h"], ".2f")]) + " |")
    return "\n".join(lines)


def _hours(rows: list[dict], key: str, which: Callable[[dict], bool]) -> float:
    return sum(r[key] for r in rows if which(r) and r.get(key) is not None)


def totals(rows: list[dict]) -> dict:
    """Chain hours and artifact disk, over the steps that were measured."""
    ok = [r for r in rows if r["ours_s"] is not None]
    to_masks = lambda r: SPECS[r["step"]].to_pseudo_masks
    ref_or_ours = lambda r, k: r[f"reference_{k}"] if r.get(f"reference_{k}") is not None else r[k]
    out = {"steps_measured": [r["step"] for r in ok],
           "voc_to_pseudo_masks_h": _hours(ok, "voc_h", to_masks),
           "voc_whole_h": _hours(ok, "voc_h", lambda r: True),
           "coco_whole_h": _hours(ok, "coco_h", lambda r: True),
           "voc_whole_reference_style_h": sum(ref_or_ours(r, "voc_h") for r in ok),
           "coco_whole_reference_style_h": sum(ref_or_ours(r, "coco_h") for r in ok)}
    sem = next((r for r in ok if r["step"] == "make_sem_seg"), None)
    if sem is not None:  # DeepLab trains on train_aug pseudo-masks (docs/pipeline.md §3.13)
        out["voc_make_sem_seg_on_train_aug_extra_h"] = sem["ours_s"] * (TRAIN_AUG - TRAIN) / 3600
    for name, units, scale in (("voc", "voc_units", 1.0), ("coco", "coco_units", COCO_AREA)):
        disk = {r["step"]: r["artifact_bytes"] * r[units] * scale for r in ok
                if r["artifact_bytes"] is not None and not math.isnan(r["artifact_bytes"])}
        maps = sum(v for k, v in disk.items() if k in ("make_cam", "make_amn_cam"))
        out[f"{name}_disk_gb"], out[f"{name}_maps_gb"] = sum(disk.values()) / 1e9, maps / 1e9
    return out


def totals_text(t: dict, n_steps: int) -> str:
    part = "" if len(t["steps_measured"]) == n_steps else \
        f" (only the {len(t['steps_measured'])} measured steps)"
    lines = [f"Totals{part}:",
             f"- VOC chain to pseudo-masks (train_cam ... make_sem_seg on train): "
             f"{t['voc_to_pseudo_masks_h']:.2f} h",
             f"- whole VOC chain (+ train_seg, eval_seg): {t['voc_whole_h']:.2f} h "
             f"(reference-style make_cam / make_sem_seg / eval_seg: "
             f"{t['voc_whole_reference_style_h']:.2f} h)",
             f"- COCO whole chain: {t['coco_whole_h']:.2f} h (reference-style: "
             f"{t['coco_whole_reference_style_h']:.2f} h)"]
    if "voc_make_sem_seg_on_train_aug_extra_h" in t:
        lines.append(f"- DeepLab's train_aug pseudo-masks need make_sem_seg on train_aug too: "
                     f"+{t['voc_make_sem_seg_on_train_aug_extra_h']:.2f} h on VOC")
    lines.append(f"- artifacts on disk: VOC {t['voc_disk_gb']:.2f} GB (maps of train_aug "
                 f"{t['voc_maps_gb']:.2f} GB), COCO {t['coco_disk_gb']:.2f} GB (maps of train "
                 f"{t['coco_maps_gb']:.2f} GB)")
    return "\n".join(lines)


def notes(rows: list[dict], args: argparse.Namespace, threads: int | None) -> list[str]:
    out = [f"device {args.device}, {threads} torch threads, --num_workers {args.num_workers}, "
           f"{'amp (autocast + channels_last)' if args.amp else 'fp32'}, {args.n_images} images "
           f"({args.size[0]}x{args.size[1]}, one in four transposed), "
           f"{WARMUP_ITERS} warm-up + {args.train_iters} timed training iterations; random "
           f"weights (speed, not accuracy)",
           f"COCO per-image rows scaled by the pixel area of 640x480 over 500x375 (x{COCO_AREA:.2f});"
           f" training rows are per iteration at the fixed crop sizes",
           "artifact bytes come from random-weight outputs: trained networks give other maps and "
           "masks (a VOC-like GT PNG here is "
           f"{_fmt(args.gt_png_bytes, ',.0f')} bytes)"]
    for r in rows:
        ref = r.get("reference_detail") or {}
        if ref.get("error"):
            out.append(f"{r['step']} reference-style FAILED ({ref['error']})")
        if ref.get("method"):
            out.append(f"{r['step']} reference-style: {ref['method']}")
        if ref.get("check"):
            out.append(f"{r['step']} check: {ref['check']}")
        if ref.get("artifact_bytes") and r["step"] == "make_cam":
            out.append(f"make_cam reference-style float32 .npz: {ref['artifact_bytes']:,.0f} "
                       f"bytes/image (ours {_fmt(r['artifact_bytes'], ',.0f')})")
        if ref.get("peak_host_mib"):
            out.append(f"{r['step']} reference-style peak host {ref['peak_host_mib']:.0f} MiB, "
                       f"device {_fmt(ref.get('peak_device_mib'), '.0f')} MiB")
    return out


def parse_steps(text: str) -> list[StepSpec]:
    names = {ALIASES.get(s.strip(), s.strip()) for s in text.split(",") if s.strip()}
    unknown = sorted(names - set(SPECS))
    if unknown:
        raise SystemExit(f"unknown steps {unknown}; choose from {', '.join(SPECS)}")
    return [s for s in STEPS if s.name in names]


def build_parser() -> argparse.ArgumentParser:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--n_images", type=int, default=None,
                   help="synthetic images (default 2 on CPU, 32 on CUDA)")
    p.add_argument("--train_iters", type=int, default=None,
                   help="timed training iterations after 1 warm-up (default 2 on CPU, 10 on CUDA)")
    p.add_argument("--train_batch", type=int, default=None,
                   help="images per training iteration, time scaled to the reference batch "
                        "(default 1 on CPU; the reference batch on CUDA)")
    p.add_argument("--amp", action="store_true",
                   help="as the driver's --amp --channels_last: autocast (bf16 where supported, "
                        "else fp16) and channels_last")
    p.add_argument("--steps", default=",".join(SPECS), help="comma-separated, of: " + ", ".join(SPECS))
    p.add_argument("--num_workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="loader / CPU-pool workers (run_sample.py's default: half the cores)")
    p.add_argument("--no_reference", action="store_true", help="skip the reference-style runs")
    p.add_argument("--json", default=None, help="also write the results here")
    hidden = argparse.SUPPRESS
    p.add_argument("--size", type=int, nargs=2, default=VOC_SIZES[0], help=hidden)
    for flag in ("--_child", "--_part", "--_work", "--_result"):
        p.add_argument(flag, default=None, help=hidden)
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Device-dependent defaults."""
    cpu = args.device == "cpu"
    if args.n_images is None:
        args.n_images = 2 if cpu else 32
    if args.train_iters is None:
        args.train_iters = 2 if cpu else 10
    if args.train_batch is None and cpu:
        args.train_batch = 1
    args.size = tuple(args.size)
    return args


def run_all(args: argparse.Namespace, specs: list[StepSpec], work: Path) -> list[dict]:
    ids = prepare(work, args.n_images, args.size)
    args.gt_png_bytes = mean_bytes(work / "voc" / "SegmentationClass", ".png")
    print(f"[bench_voc_scale] {len(ids)} images in {work}", file=sys.stderr, flush=True)
    rows = []
    for spec in specs:
        ours = run_child(spec.name, "ours", work, args)
        ref = run_child(spec.name, "ref", work, args) \
            if spec.reference and not args.no_reference else None
        rows.append(make_row(spec, ours, ref))
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = resolve(build_parser().parse_args(argv))
    if args._child:
        child_main(args)
        return {}
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; use --device cpu")
    specs, start = parse_steps(args.steps), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_voc_scale_") as tmp:
        rows = run_all(args, specs, Path(tmp))
    threads = next((r["detail"].get("threads") for r in rows if r["detail"].get("threads")), None)
    report = {"settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
              "rows": rows, "totals": totals(rows), "notes": notes(rows, args, threads),
              "wall_seconds": time.perf_counter() - start}
    print(table(rows))
    print()
    print(totals_text(report["totals"], len(STEPS)))
    print()
    print("\n".join(f"- {n}" for n in report["notes"]))
    print(f"\nbench wall time: {report['wall_seconds'] / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    if any(r["error"] or (r.get("reference_detail") or {}).get("error") for r in rows):
        raise SystemExit("some steps failed (see above)")
    return report


if __name__ == "__main__":
    main()
