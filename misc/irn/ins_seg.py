"""Instance pseudo-labels from IRN's displacement field and boundary map (docs/pipeline.md §3.12).

Per image, on the device of the inputs and vectorised over all pixels at once:

1. centroids: every stride-4 pixel follows the displacement field D (2, h4, w4) (IRN output after
   the mean-shift subtraction) for 300 steps, bilinear at the current position, clipped to the
   map, then rounded;
2. instances: 4-connected components of weak displacement (|D| < 2.5); a pixel's instance is the
   component its centroid lands in (pixels landing outside every component form one more
   "instance", as in the reference); instances are numbered like the reference (that group
   first, then components by their first pixel in raster order);
3. class x instance seeds: every class CAM restricted to every instance region, (K*I, h4, w4),
   class-major; one call of `misc.irn.random_walk.random_walk` for all of them;
4. x4 bilinear upsampling, crop to (H, W), division by the global max, constant background
   `bg_thres` first, argmax;
5. segments: 4-connected components of each class x instance mask; score = max normalised random
   walk score inside, 0 for segments smaller than 1% of the image (`min_area_frac`).

The reference's float semantics are kept where they decide discrete outcomes: centroid steps in
float64 rounded to float32 after each step (NumPy promotes float32 - int32 to float64), first-index
argmax ties. Segments are pairwise disjoint, so an image's result is one uint16 label image plus
per-segment score and class (`save_instances` / `load_instances`, npz without pickle).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from misc.errors import BadInput, MissingInput
from misc.io.atomic import atomic_path
from misc.irn.random_walk import INFER_RADIUS, random_walk

CENTROID_ITERATIONS = 300
WEAK_DISPLACEMENT = 2.5      # |D| below this (stride-4 pixels) marks an instance centre region
MIN_AREA_FRACTION = 0.01     # segments smaller than this share of H*W get score 0
MAX_SEGMENTS = np.iinfo(np.uint16).max


@dataclasses.dataclass
class InstanceResult:
    """Instance segments of one image.

    labels: (H, W) uint16, 0 = no segment, i + 1 = segment i (segments are disjoint).
    score: (N,) float32 in [0, 1]. cls: (N,) int64 0-based foreground class.
    Segment order is the reference's: class-major over (class, instance), then raster order.
    """

    labels: np.ndarray
    score: np.ndarray
    cls: np.ndarray

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def masks(self) -> np.ndarray:
        """(N, H, W) bool, one mask per segment."""
        return self.labels[None] == np.arange(1, len(self) + 1, dtype=np.int64)[:, None, None]

    @classmethod
    def empty(cls, size: tuple[int, int]) -> "InstanceResult":
        return cls(np.zeros(size, np.uint16), np.zeros(0, np.float32), np.zeros(0, np.int64))


# ------------------------------------ displacement field ------------------------------------

def find_centroids(displacement: Tensor, iterations: int = CENTROID_ITERATIONS) -> Tensor:
    """Where every pixel ends after following the field.

    displacement: (2, h, w) float (dy, dx) in stride-4 pixels. Returns (2, h, w) int64 (y, x) with
    0 <= y < h, 0 <= x < w. Each step: p += bilinear(D, p) (corner weights and sum order of the
    reference, float64 arithmetic, stored as float32), clip to the map; finally round half-even.
    A step depends only on the pixel's own position, so a pixel whose position did not change
    has reached its final value and leaves the active set (exact, and most pixels settle early).
    """
    _, h, w = displacement.shape
    dev = displacement.device
    flat = displacement.reshape(2, -1).double()
    ys, xs = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    pos = torch.stack([ys, xs]).reshape(2, -1).float()
    upper = torch.tensor([[h - 1], [w - 1]], device=dev, dtype=torch.float32)
    active = torch.arange(h * w, device=dev)
    cen = pos
    for _ in range(iterations):
        new = _centroid_step(flat, cen, w, upper)
        moved = (new != cen).any(0)
        pos[:, active] = new
        active, cen = active[moved], new[:, moved]
        if active.numel() == 0:
            break
    return pos.round().long().view(2, h, w)


def _centroid_step(flat: Tensor, cen: Tensor, w: int, upper: Tensor) -> Tensor:
    """One refinement step of positions cen (2, n) float32 on the field flat (2, h*w) float64."""
    lo, hi = cen.floor(), cen.ceil()
    frac = cen.double() - lo.double()                      # (2, n): y_c, x_c
    lo, hi = lo.long(), hi.long()
    n = cen.shape[1]
    idx = torch.cat([hi[0] * w + hi[1], lo[0] * w + hi[1], hi[0] * w + lo[1], lo[0] * w + lo[1]])
    v_uu, v_du, v_ud, v_dd = flat.index_select(1, idx).split(n, dim=1)
    yc, xc = frac[0], frac[1]
    step = v_uu * yc * xc + v_du * (1 - yc) * xc + v_ud * yc * (1 - xc) \
        + v_dd * (1 - yc) * (1 - xc)
    return torch.minimum((cen.double() + step).float().clamp_min(0), upper)


def connected_components(values: Tensor) -> Tensor:
    """4-connected components of equal nonzero values.

    values: (h, w) integer; 0 is background. Returns (h, w) int64: for each pixel the flat index
    (row-major) of its component's first pixel in raster order, -1 on background. Min-label
    propagation with pointer jumping, on the input's device, until nothing changes.
    """
    h, w = values.shape
    n = h * w
    fg = values != 0
    big = torch.tensor(n, device=values.device)
    lab = torch.where(fg, torch.arange(n, device=values.device).view(h, w), big)
    right = (values[:, 1:] == values[:, :-1]) & fg[:, 1:]   # pixel (y, x) joined to (y, x+1)
    down = (values[1:] == values[:-1]) & fg[1:]              # pixel (y, x) joined to (y+1, x)
    while True:
        new = lab.clone()
        new[:, :-1] = torch.where(right, torch.minimum(new[:, :-1], lab[:, 1:]), new[:, :-1])
        new[:, 1:] = torch.where(right, torch.minimum(new[:, 1:], lab[:, :-1]), new[:, 1:])
        new[:-1] = torch.where(down, torch.minimum(new[:-1], lab[1:]), new[:-1])
        new[1:] = torch.where(down, torch.minimum(new[1:], lab[:-1]), new[1:])
        flat = new.view(-1)
        for _ in range(4):  # pointer jumping: a label is a pixel of the same component
            flat = torch.where(flat < n, flat[flat.clamp_max(n - 1)], flat)
        new = flat.view(h, w)
        if torch.equal(new, lab):
            return torch.where(fg, lab, torch.full_like(lab, -1))
        lab = new


def instance_map(displacement: Tensor, iterations: int = CENTROID_ITERATIONS,
                 weak_thres: float = WEAK_DISPLACEMENT) -> Tensor:
    """Instance id per stride-4 pixel, (h, w) int64 in [0, I), ids compressed and ordered as the
    reference: pixels whose centroid lies outside every weak-displacement component first (if
    any), then components by first pixel. displacement: (2, h, w) float."""
    d = displacement.float()
    weak = torch.sqrt(d[1] ** 2 + d[0] ** 2) < weak_thres
    comp = connected_components(weak.to(torch.uint8))            # -1 outside weak regions
    cen = find_centroids(displacement, iterations)
    w = displacement.shape[2]
    at_centroid = comp.view(-1)[cen[0].view(-1) * w + cen[1].view(-1)]
    return torch.unique(at_centroid, sorted=True, return_inverse=True)[1].view(comp.shape)


@torch.no_grad()
def edge_and_displacement(forward: Callable[[Tensor], tuple[Tensor, Tensor]], img: Tensor,
                          pad_to: int) -> tuple[Tensor, Tensor]:
    """IRN maps of one image as the reference's inference wrapper (§3.10 step 1, §3.12).

    forward(x (2, 3, S, S)) -> (edge logits (2, 1, s4, s4), displacement (2, 2, s4, s4)), the
    model in eval mode (mean shift subtracted); img: (3, H, W) normalised. The pair [img,
    mirror] is zero-padded right/bottom to pad_to when the image fits. Returns boundary (h4, w4)
    = sigmoid of the mean of the edge logits of the image and the unmirrored mirror, in [0, 1],
    and the displacement (2, h4, w4) of the unmirrored image; h4 = ceil(H / 4).
    """
    h, w = img.shape[1:]
    pair = torch.stack([img, img.flip(-1)])
    if h <= pad_to and w <= pad_to:
        pair = F.pad(pair, (0, pad_to - w, 0, pad_to - h))
    h4, w4 = (h - 1) // 4 + 1, (w - 1) // 4 + 1
    edge, disp = forward(pair)
    edge = edge[:, 0, :h4, :w4]
    return torch.sigmoid((edge[0] + edge[1].flip(-1)) / 2), disp[0, :, :h4, :w4]


# ------------------------------------ instance segments -------------------------------------

def instance_seeds(cams: Tensor, instances: Tensor) -> tuple[Tensor, Tensor]:
    """Class x instance CAMs.

    cams: (K, h, w) >= 0; instances: (h, w) int64 in [0, I). Returns seeds (K*I, h, w), row
    k*I + i = cams[k] on instance i, 0 elsewhere, and the class row index k of each (K*I,).
    """
    n_inst = int(instances.max()) + 1
    onehot = instances[None] == torch.arange(n_inst, device=cams.device).view(-1, 1, 1)
    seeds = cams.float()[:, None] * onehot[None].float()
    k = cams.shape[0]
    return seeds.reshape(k * n_inst, *cams.shape[1:]), \
        torch.arange(k, device=cams.device).repeat_interleave(n_inst)


def _upsampled(rw: Tensor, size: tuple[int, int]) -> Tensor:
    """x4 bilinear (align_corners False) of (M, h, w), cropped to (M, H, W)."""
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    return up[:, :size[0], :size[1]]


def best_channel(rw: Tensor, size: tuple[int, int], bg_thres: float,
                 chunk_elems: int = 1 << 25) -> tuple[Tensor, Tensor]:
    """Argmax of [bg_thres; up(rw) / max(up(rw))] without holding all upsampled maps at once.

    rw: (M, h, w) >= 0. Returns (value (H, W) float32, index (H, W) int64):
    index -1 where the background wins (ties go to it, and between channels to the first, as
    torch.argmax), else the winning channel and its normalised score. All background when the
    maps are all zero.
    """
    step = max(1, chunk_elems // (size[0] * size[1]))
    chunks = [slice(i, i + step) for i in range(0, rw.shape[0], step)]
    gmax = torch.stack([_upsampled(rw[c], size).max() for c in chunks]).max()
    value = torch.full(size, bg_thres, device=rw.device, dtype=torch.float32)
    index = torch.full(size, -1, device=rw.device, dtype=torch.long)
    if not gmax > 0:  # the reference would divide by zero; nothing is foreground
        return value, index
    for c in chunks:
        up = _upsampled(rw[c], size) / gmax
        arg = up.argmax(0)
        val = up.gather(0, arg[None])[0]
        better = val > value
        value, index = torch.where(better, val, value), torch.where(better, arg + c.start, index)
    return value, index


def segments(value: Tensor, index: Tensor, min_area: float) -> tuple[Tensor, Tensor, Tensor]:
    """Connected components of each channel's mask, in (channel, raster) order.

    value, index: (H, W) from `best_channel`. Returns labels (H, W) int64 (0 none, s+1 segment s),
    channel (S,) int64 and score (S,) float32 (max value inside; 0 if area < min_area).
    """
    comp = connected_components(index + 1)
    fg = comp >= 0
    key = index[fg] * comp.numel() + comp[fg]           # channel-major, then first pixel
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
    n_seg = uniq.numel()
    labels = torch.zeros_like(comp)
    labels[fg] = inverse + 1
    area = torch.zeros(n_seg, device=value.device, dtype=torch.long).index_add_(
        0, inverse, torch.ones_like(inverse))
    score = torch.zeros(n_seg, device=value.device, dtype=torch.float32).scatter_reduce_(
        0, inverse, value[fg], reduce="amax", include_self=False)
    score = torch.where(area < min_area, torch.zeros_like(score), score)
    return labels, uniq // comp.numel(), score


@torch.no_grad()
def instance_masks(cams: Tensor, keys: np.ndarray | Tensor, boundary: Tensor,
                   displacement: Tensor, size: tuple[int, int], beta: float = 10,
                   exp_times: int = 8, bg_thres: float = 0.25,
                   min_area_frac: float = MIN_AREA_FRACTION,
                   centroid_iterations: int = CENTROID_ITERATIONS,
                   weak_thres: float = WEAK_DISPLACEMENT,
                   radius: int = INFER_RADIUS) -> InstanceResult:
    """Instance segments of one image (docs/pipeline.md §3.12).

    cams: (K, h4, w4) >= 0, the ORIGINAL CAMs' stride-4 "cam" (no background channel, no power);
    keys: (K,) 0-based classes of the cams rows; boundary: (h4, w4) IRN boundary probability in
    [0, 1]; displacement: (2, h4, w4) IRN field after the mean-shift subtraction; size: (H, W)
    with h4 = ceil(H / 4). All tensors on one device. Returns an `InstanceResult` on the CPU
    (empty when K == 0 or nothing beats the background).
    """
    keys = torch.as_tensor(np.asarray(keys), dtype=torch.long)
    if keys.numel() == 0:
        return InstanceResult.empty(size)
    inst = instance_map(displacement, centroid_iterations, weak_thres)
    seeds, seed_class = instance_seeds(cams, inst)
    alive = torch.nonzero(seeds.flatten(1).amax(1) > 0)[:, 0]  # zero rows stay zero: skip them
    if alive.numel() == 0:
        return InstanceResult.empty(size)
    rw = random_walk(seeds[alive], boundary, beta, exp_times, radius)
    value, index = best_channel(rw, size, bg_thres)
    labels, channel, score = segments(value, index, min_area_frac * size[0] * size[1])
    if score.numel() > MAX_SEGMENTS:
        raise ValueError(f"{score.numel()} segments do not fit a uint16 label image")
    cls = keys[seed_class[alive[channel]].cpu()]
    return InstanceResult(labels.cpu().numpy().astype(np.uint16), score.cpu().numpy(),
                          cls.numpy().astype(np.int64))


# ------------------------------------------ files -------------------------------------------

def save_instances(path: str | Path, result: InstanceResult) -> None:
    """Write result/ins_seg/<id>.npz: labels (H, W) uint16, score (N,) float32, class (N,) int64."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, labels=result.labels.astype(np.uint16),
                                score=result.score.astype(np.float32),
                                **{"class": result.cls.astype(np.int64)})


def load_instances(path: str | Path) -> InstanceResult:
    """Read a file written by `save_instances`; a clear error if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"instance file {path} not found: run make_ins_seg_labels first")
    try:
        with np.load(path, allow_pickle=False) as data:
            res = InstanceResult(data["labels"], data["score"], data["class"])
    except Exception as err:
        raise BadInput(f"corrupt instance file {path} ({err}); delete it and rerun "
                         f"make_ins_seg_labels") from err
    if res.labels.max(initial=0) > len(res) or res.cls.shape != res.score.shape:
        raise BadInput(f"inconsistent instance file {path}: {len(res)} scores, "
                         f"{res.cls.shape[0]} classes, labels up to {res.labels.max()}")
    return res


# ----------------------------------- displacement mean --------------------------------------

@torch.no_grad()
def displacement_mean(forward: Callable[[Tensor], tuple[Tensor, Tensor]],
                      batches: Iterable[Tensor]) -> Tensor:
    """Mean displacement over images, as the reference's pass after IRN training (§3.9).

    forward(images (B, 3, S, S)) -> (edge, displacement (B, 2, h, w)); batches yields image
    batches already on the model's device. Returns (2,) float32 on the CPU: the mean over batches
    of each batch's mean over (B, h, w) (equal batches, as the reference's drop_last loader).
    """
    means = [forward(images)[1].float().mean(dim=(0, 2, 3)).cpu() for images in batches]
    if not means:
        raise BadInput("displacement_mean needs at least one batch (is the list shorter "
                         "than one batch with drop_last?)")
    return torch.stack(means).mean(dim=0)


@torch.no_grad()
def fit_mean_shift(model: torch.nn.Module, mean_shift: torch.nn.Module,
                   batches: Iterable[Tensor]) -> Tensor:
    """Set `mean_shift.running_mean` to the displacement mean of `model` over `batches`.

    model(images) -> (edge, displacement); mean_shift: the module holding the (2,) running_mean
    buffer that the model subtracts in eval mode. As in the reference the pass runs in eval mode
    with the stored mean at zero (so it averages the raw field); the model's mode is restored.
    Returns the new mean (2,).
    """
    was_training = model.training
    mean_shift.running_mean.zero_()
    model.eval()
    try:
        mean = displacement_mean(model, batches)
    finally:
        model.train(was_training)
    mean_shift.running_mean.copy_(mean.to(mean_shift.running_mean))
    return mean
