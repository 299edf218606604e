"""What IRN learned on a toy run, measured against the ground truth (docs/toy.md §7).

    python -m experiments.toy_irn [run_sample.py flags] [--masks NAME=DIR ...] [--maps NAME=DIR ...]

With the run's flags (the same --irn_weights_name, --infer_list, ... as the run), over
--infer_list:

- boundaries: IRN's boundary map (image and mirror, as make_sem_seg_labels) scored against the
  ground truth's object contours at stride 4 (a cell is a contour cell when it holds a void-band
  pixel): the AUC of contour vs other cells, and the mean boundary on contour cells, object
  interiors and background;
- displacements: mean |D| (stride-4 pixels, eval mode) on objects, the instances per image that
  make_ins_seg_labels' clustering finds against the ground truth's;
- vertical offset: for every PNG label folder in --masks (0 background, c + 1 class c) and every
  map folder in --maps (its channels against their own classes), the mean signed offset
  (prediction centroid - ground-truth centroid, (dy, dx) pixels, + = lower / further right)
  per (image, class), and for the label folders the mIoU when every mask is moved by dy in
  [-10, 10].

Prints one JSON object and writes it to --diagnosis_out when given.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import run_sample
from misc.io.maps import load_maps
from misc.io.png import load_png as read_png
from misc.irn.ins_seg import edge_and_displacement, instance_map
from step.driver import context

SHIFTS = range(-10, 11)


def _option(argv: list[str], name: str) -> tuple[list[str], list[str]]:
    """Pop `--name A B ...` (values up to the next flag) out of argv."""
    if f"--{name}" not in argv:
        return argv, []
    i = argv.index(f"--{name}")
    j = i + 1
    while j < len(argv) and not argv[j].startswith("--"):
        j += 1
    return argv[:i] + argv[j:], argv[i + 1:j]


def contour_cells(gt: np.ndarray) -> np.ndarray:
    """(h4, w4) bool: stride-4 cells (4i..4i+3) holding a void (255) pixel of `gt` (H, W)."""
    void = torch.from_numpy(gt == 255).float()[None, None]
    h4, w4 = (gt.shape[0] - 1) // 4 + 1, (gt.shape[1] - 1) // 4 + 1
    void = F.pad(void, (0, 4 * w4 - gt.shape[1], 0, 4 * h4 - gt.shape[0]))
    return F.max_pool2d(void, 4)[0, 0].numpy() > 0


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties half (Mann-Whitney)."""
    values = np.concatenate([positive, negative])
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    # average ranks of ties
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def centroid(mask: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """(y, x) of `mask` (H, W) bool, weighted by `weight` (H, W) >= 0 when given."""
    w = mask.astype(np.float64) if weight is None else weight * mask
    rows, cols = np.arange(mask.shape[0])[:, None], np.arange(mask.shape[1])[None]
    return np.array([(w * rows).sum(), (w * cols).sum()]) / max(w.sum(), 1e-12)


def shifted(label: np.ndarray, dy: int) -> np.ndarray:
    """`label` moved down by dy rows (up for dy < 0), background filling the gap."""
    out = np.zeros_like(label)
    if dy >= 0:
        out[dy:] = label[:label.shape[0] - dy]
    else:
        out[:dy] = label[-dy:]
    return out


def miou(confusion: np.ndarray) -> float:
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    return float(np.mean(inter[union > 0] / union[union > 0]))


def confusion_of(pred: np.ndarray, gt: np.ndarray, n: int) -> np.ndarray:
    valid = (gt < 255) & (pred < 255)  # IR labels leave 255 unknown
    return np.bincount(n * gt[valid].astype(np.int64) + pred[valid], minlength=n * n).reshape(n, n)


def main(argv: list[str]) -> dict:
    argv, masks = _option(argv, "masks")
    argv, maps = _option(argv, "maps")
    argv, out = _option(argv, "diagnosis_out")
    args = run_sample.resolved(argv)
    data = context.dataset(args)
    n = data.n_classes + 1
    forward, samples, device = context.irn_inference(args, Path("/nonexistent"), ".none")
    boundary_on = {"contour": [], "object": [], "background": []}
    disp_on_objects, instances, gt_instances = [], [], []
    mask_dirs = dict(m.split("=", 1) for m in masks)
    map_dirs = dict(m.split("=", 1) for m in maps)
    offsets = {name: [] for name in [*mask_dirs, *map_dirs]}
    confusions = {name: {dy: np.zeros((n, n), np.int64) for dy in SHIFTS} for name in mask_dirs}
    with torch.inference_mode():
        for k in range(len(samples)):
            sample, img_id = samples[k], samples.ids[k]
            gt = read_png(Path(data.gt_dir()) / f"{img_id}.png")
            boundary, disp = edge_and_displacement(forward, sample["imgs"][0].to(device),
                                                   args.irn_crop_size)
            b = boundary.float().cpu().numpy()
            contour = contour_cells(gt)
            gt4 = gt[np.minimum(np.arange(b.shape[0]) * 4 + 2, gt.shape[0] - 1)][
                :, np.minimum(np.arange(b.shape[1]) * 4 + 2, gt.shape[1] - 1)]
            boundary_on["contour"].append(b[contour])
            boundary_on["object"].append(b[~contour & (gt4 > 0) & (gt4 < 255)])
            boundary_on["background"].append(b[~contour & (gt4 == 0)])
            d = disp.float().cpu()
            disp_on_objects.append(float(d.norm(dim=0).numpy()[(gt4 > 0) & (gt4 < 255)].mean()))
            instances.append(int(instance_map(d).max()) + 1)
            obj = read_png(Path(data.gt_dir()).parent / "SegmentationObject" / f"{img_id}.png")
            gt_instances.append(len(set(np.unique(obj)) - {0, 255}))
            classes = [c for c in np.unique(gt) if 0 < c < 255]
            for name, folder in mask_dirs.items():
                pred = read_png(Path(folder) / f"{img_id}.png")
                for dy in SHIFTS:
                    confusions[name][dy] += confusion_of(shifted(pred, dy), gt, n)
                offsets[name] += [centroid(pred == c) - centroid(gt == c)
                                  for c in classes if (pred == c).any()]
            for name, folder in map_dirs.items():
                m = load_maps(Path(folder) / f"{img_id}.npz")
                hr = m["high_res"]
                fg = hr[-len(m["keys"]):] if len(m["keys"]) else hr[:0]
                for key, channel in zip(m["keys"], fg):
                    if (gt == key + 1).any():
                        offsets[name].append(centroid(np.ones_like(channel, bool), channel)
                                             - centroid(gt == key + 1))
    cat = {k: np.concatenate(v) for k, v in boundary_on.items()}
    result = {
        "images": len(samples),
        "boundary_auc_contour_vs_rest": round(auc(cat["contour"], np.concatenate(
            [cat["object"], cat["background"]])), 4),
        "boundary_mean": {k: round(float(v.mean()), 4) for k, v in cat.items()},
        "displacement_on_objects": round(float(np.mean(disp_on_objects)), 4),
        "instances_per_image": round(float(np.mean(instances)), 2),
        "gt_instances_per_image": round(float(np.mean(gt_instances)), 2),
        "offset_yx_px": {k: np.round(np.mean(v, axis=0), 2).tolist() for k, v in offsets.items() if v},
        "miou_by_shift": {name: {dy: round(100 * miou(c), 2) for dy, c in per.items()}
                          for name, per in confusions.items()},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        Path(out[0]).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
