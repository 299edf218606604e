"""The mechanisms the step runners configure, tested on their own (explicit arguments, no
flags): seed evaluation with its sweep, and DeepLab prediction of a list with its folder record."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from misc import imutils
from misc.eval.seed_eval import evaluate_seeds
from misc.eval.seg_inference import SegInferSettings, predict_ids
from misc.io.maps import save_maps
from misc.io.png import load_png, save_png


def _iou(pred: np.ndarray, gt: np.ndarray, n: int) -> float:
    """Mean IoU over classes present in pred or gt, written out directly."""
    ious = []
    for c in range(n):
        p, g = pred == c, gt == c
        if (p | g).any():
            ious.append((p & g).sum() / (p | g).sum())
    return float(np.mean(ious))


def test_evaluate_seeds_equals_thresholding_by_hand(tmp_path):
    rng = np.random.default_rng(0)
    gts, maps = {}, {}
    for name in ("a", "b"):
        gt = rng.integers(0, 3, (6, 7)).astype(np.uint8)
        gt[0, 0] = 255
        scores = rng.random((2, 6, 7)).astype(np.float32)
        keys = np.array([0, 1]) if name == "a" else np.array([1, 0])  # classes in any order
        save_maps(tmp_path / f"{name}.npz", keys, scores[:, ::4, ::4], scores)
        save_png(tmp_path / "gt" / f"{name}.png", gt)
        gts[name], maps[name] = gt, (keys, scores)
    rec = evaluate_seeds(["a", "b"], tmp_path, tmp_path / "gt", ("x", "y"), 0.5, [0.3, 0.7],
                         drop_background_channel=False)

    def by_hand(t: float) -> float:
        preds, gt_all = [], []
        for name in ("a", "b"):
            keys, s = maps[name]
            pred = np.where(s.max(0) > t, keys[s.argmax(0)] + 1, 0)
            keep = gts[name] != 255
            preds.append(pred[keep])
            gt_all.append(gts[name][keep])
        return _iou(np.concatenate(preds), np.concatenate(gt_all), 3)

    assert rec["threshold"] == 0.5
    np.testing.assert_allclose(rec["miou"], by_hand(0.5))
    for t in (0.3, 0.5, 0.7):
        np.testing.assert_allclose(rec["sweep"][f"{t:.2f}"], by_hand(t), atol=1e-5)
    best = max((0.3, 0.5, 0.7), key=by_hand)
    assert rec["best_threshold"] == best and set(rec["iou"]) == {"background", "x", "y"}


class _Linear(torch.nn.Module):
    """A 1x1 convolution at output stride 2: a stand-in segmentation network."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x[..., ::2, ::2])


def _images(tmp_path, n=3):
    rng = np.random.default_rng(1)
    paths = {}
    for i in range(n):
        img = rng.integers(0, 256, (10 + i, 13, 3), dtype=np.uint8)
        paths[f"im{i}"] = tmp_path / f"im{i}.png"
        from PIL import Image
        Image.fromarray(img).save(paths[f"im{i}"])
    return paths


def test_predict_ids_writes_argmax_of_the_averaged_views_and_keeps_existing(tmp_path):
    paths = _images(tmp_path)
    model, out = _Linear().eval(), tmp_path / "pred"
    settings = SegInferSettings(scales=(1.0, 0.5), flip=True, crf_params=None, num_workers=0)
    conf = predict_ids(model, list(paths), paths.__getitem__, out, settings,
                       torch.device("cpu"), 3, gt_dir=None)
    assert conf is None
    for name, path in paths.items():
        x = torch.from_numpy(imutils.hwc_to_chw(imutils.normalize(imutils.read_image(path))))[None]
        h, w = x.shape[-2:]
        probs = 0
        with torch.no_grad():
            for s in (1.0, 0.5):
                xs = x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear",
                                                    align_corners=False)
                for flip in (False, True):
                    logit = model(xs.flip(-1) if flip else xs)
                    logit = logit.flip(-1) if flip else logit
                    up = F.interpolate(logit, (h, w), mode="bilinear", align_corners=False)
                    probs = probs + F.softmax(up, 1)[0]
        np.testing.assert_array_equal(load_png(out / f"{name}.png"), probs.argmax(0).numpy())
    stamp = (out / "im0.png").stat().st_mtime_ns
    # existing predictions are kept (the output record decides whether they are current);
    # a missing one is made, and the confusion is None when not every id was predicted
    (out / "im1.png").unlink()
    assert predict_ids(model, list(paths), paths.__getitem__, out, settings,
                       torch.device("cpu"), 3, None) is None
    assert (out / "im0.png").stat().st_mtime_ns == stamp and (out / "im1.png").is_file()


def test_predict_ids_confusion_against_gt(tmp_path):
    paths = _images(tmp_path, 2)
    model, out = _Linear().eval(), tmp_path / "pred"
    for name, path in paths.items():
        h, w = imutils.read_image(path).shape[:2]
        save_png(tmp_path / "gt" / f"{name}.png", (np.arange(h * w).reshape(h, w) % 3).astype(np.uint8))
    conf = predict_ids(model, list(paths), paths.__getitem__, out, SegInferSettings(num_workers=0),
                       torch.device("cpu"), 3, gt_dir=tmp_path / "gt")
    want = np.zeros((3, 3), np.int64)
    for name in paths:
        gt, pred = load_png(tmp_path / "gt" / f"{name}.png"), load_png(out / f"{name}.png")
        np.add.at(want, (gt.ravel(), pred.ravel()), 1)
    np.testing.assert_array_equal(conf, want)
