"""Dense CRF, the IR-label composition rule and the IR-label writer."""
from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
from PIL import Image

import misc.seeds.crf
import misc.seeds.ir_label
from misc.io.maps import save_maps
from misc.io.png import load_png
from misc.seeds.crf import compose_ir_label, crf_inference_label, ir_label_from_scores
from misc.seeds.ir_label import make_ir_labels


def test_compose_ir_label_hand_made():
    fg = np.array([[0, 3, 3, 0],
                   [0, 0, 5, 5],
                   [1, 0, 0, 0]])
    bg = np.array([[0, 3, 0, 3],
                   [2, 0, 5, 0],
                   [0, 0, 1, 0]])
    expected = np.array([[0, 3, 3, 255],
                         [255, 0, 5, 5],
                         [1, 0, 255, 0]], np.uint8)
    out = compose_ir_label(fg, bg)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def _two_tone(h=40, w=60, edge=30, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 30, np.int16)
    img[:, edge:] = 220
    img += rng.integers(-3, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_crf_moves_labels_to_image_edge():
    img = _two_tone()
    labels = np.zeros((40, 60), np.int64)
    labels[:, 26:] = 1  # 4 columns too far left of the image edge at 30
    out = crf_inference_label(img, labels, 2)
    assert out.shape == (40, 60)
    truth = np.zeros_like(labels)
    truth[:, 30:] = 1
    assert (out == truth).mean() > (labels == truth).mean()
    assert (out[:, 26:30] == 0).mean() > 0.9  # the dark strip returns to label 0
    assert (out[:, 32:] == 1).all() and (out[:, :24] == 0).all()


def test_ir_label_from_scores_three_zones():
    h, w = 48, 48
    img = np.full((h, w, 3), 10, np.uint8)
    img[8:40, 8:40] = 128  # unsure ring: scores between the two thresholds
    img[16:32, 16:32] = 240  # confident object
    scores = np.zeros((1, h, w), np.float32)
    scores[0, 8:40, 8:40] = 0.1
    scores[0, 16:32, 16:32] = 0.9
    ir = ir_label_from_scores(img, scores, np.array([4]), fg_thres=0.3, bg_thres=0.05)
    assert ir.dtype == np.uint8 and ir.shape == (h, w)
    assert (ir[18:30, 18:30] == 5).all()  # class 4 -> label 5
    assert (ir[10:14, 10:38] == 255).all()  # ring inside both thresholds -> unsure
    assert (ir[:6] == 0).all() and (ir[:, :6] == 0).all()  # confident background
    assert set(np.unique(ir)) <= {0, 5, 255}
    empty = ir_label_from_scores(img, np.zeros((0, h, w), np.float32), np.zeros(0, np.int64),
                                 0.3, 0.05)
    np.testing.assert_array_equal(empty, np.zeros((h, w), np.uint8))


def _fake_dataset(root):
    """Two tiny images with CAM-style and AMN-style (bg channel first) map files."""
    rng = np.random.default_rng(0)
    ids = ["a", "b"]
    for k, i in enumerate(ids):
        h, w = 24 + 4 * k, 32
        img = np.full((h, w, 3), 20, np.uint8)
        img[6:18, 8:24] = 200
        if k:
            img[6:18, 16:24] = 110  # second object, its own colour
        (root / "img").mkdir(exist_ok=True)
        Image.fromarray(img).save(root / "img" / f"{i}.jpg", quality=95)
        keys = np.array([2, 7][: k + 1])
        s = np.zeros((len(keys), h, w), np.float32)
        s[0, 6:18, 8:24] = 0.8
        s[0, 4:20, 6:26] = np.maximum(s[0, 4:20, 6:26], 0.2)
        if k:
            s[1, 6:18, 16:24] = 0.9
        save_maps(root / "cam" / f"{i}.npz", keys, s[:, ::4, ::4], s)
        amn = np.concatenate([rng.random((1, h, w)).astype(np.float32), s])
        save_maps(root / "amn" / f"{i}.npz", keys, amn[:, ::4, ::4], amn)
    return ids


def test_make_ir_labels_workers_and_skip(tmp_path, monkeypatch):
    monkeypatch.setattr(misc.seeds.ir_label, "MIN_JOBS_FOR_POOL", 1)  # a pool even for 2 images
    ids = _fake_dataset(tmp_path)
    args = dict(image_path=lambda i: tmp_path / "img" / f"{i}.jpg", fg_thres=0.3, bg_thres=0.05)
    r1 = make_ir_labels(ids, tmp_path / "cam", out_dir=tmp_path / "o1",
                        drop_background_channel=False, num_workers=1, **args)
    r2 = make_ir_labels(ids, tmp_path / "cam", out_dir=tmp_path / "o2",
                        drop_background_channel=False, num_workers=2, **args)
    r3 = make_ir_labels(ids, tmp_path / "amn", out_dir=tmp_path / "o3",
                        drop_background_channel=True, num_workers=2, **args)
    assert r1["written"] == r2["written"] == r3["written"] == 2
    for i in ids:
        a = load_png(tmp_path / "o1" / f"{i}.png")
        np.testing.assert_array_equal(a, load_png(tmp_path / "o2" / f"{i}.png"))
        np.testing.assert_array_equal(a, load_png(tmp_path / "o3" / f"{i}.png"))
        assert (a == 3).any() and (a == 0).any()
    assert (load_png(tmp_path / "o1" / "b.png") == 8).any()

    stamp = (tmp_path / "o1" / "a.png").stat().st_mtime_ns
    again = make_ir_labels(ids, tmp_path / "cam", out_dir=tmp_path / "o1",
                           drop_background_channel=False, num_workers=1, **args)
    assert (again["written"], again["skipped"]) == (0, 2)
    assert (tmp_path / "o1" / "a.png").stat().st_mtime_ns == stamp
    forced = make_ir_labels(ids, tmp_path / "cam", out_dir=tmp_path / "o1", overwrite=True,
                            drop_background_channel=False, num_workers=1, **args)
    assert (forced["written"], forced["skipped"]) == (2, 0)


def test_make_ir_labels_missing_map_names_step(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_amn_cam"):
        make_ir_labels(["x"], tmp_path / "amn", lambda i: tmp_path / f"{i}.jpg", tmp_path / "out", 0.45, 0.15,
                       True, num_workers=1)


class _RecordingCRF:
    """DenseCRF2D that records every call (arguments by name) and forwards it to pydensecrf."""
    calls: list = []
    real = dcrf.DenseCRF2D

    def __init__(self, w, h, n_labels):
        self.d = self.real(w, h, n_labels)
        self.calls.append(("init", (w, h, n_labels)))

    def setUnaryEnergy(self, u):
        self.calls.append(("unary", np.array(u)))
        self.d.setUnaryEnergy(u)

    def addPairwiseGaussian(self, sxy, compat, kernel=dcrf.DIAG_KERNEL,
                            normalization=dcrf.NORMALIZE_SYMMETRIC):
        self.calls.append(("gaussian", dict(sxy=np.broadcast_to(sxy, 2).tolist(), compat=compat,
                                            kernel=kernel, normalization=normalization)))
        self.d.addPairwiseGaussian(sxy=sxy, compat=compat, kernel=kernel,
                                   normalization=normalization)

    def addPairwiseBilateral(self, sxy, srgb, rgbim, compat, kernel=dcrf.DIAG_KERNEL,
                             normalization=dcrf.NORMALIZE_SYMMETRIC):
        self.calls.append(("bilateral", dict(sxy=np.broadcast_to(sxy, 2).tolist(),
                                             srgb=np.broadcast_to(srgb, 3).tolist(),
                                             rgbim=np.array(rgbim), compat=compat, kernel=kernel,
                                             normalization=normalization)))
        self.d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=rgbim, compat=compat, kernel=kernel,
                                    normalization=normalization)

    def inference(self, t):
        self.calls.append(("inference", t))
        return self.d.inference(t)


def test_ir_label_crf_uses_the_reference_hyperparameters(monkeypatch):
    """Both CRFs of the IR-label rule (docs/pipeline.md §2.4): unary from labels with
    gt_prob 0.7 (label 0 an ordinary class), Gaussian sxy 3 / compat 3, bilateral sxy 50 /
    srgb 5 / compat 10 on the RGB image, 10 mean-field iterations."""
    _RecordingCRF.calls = []
    monkeypatch.setattr(misc.seeds.crf.dcrf, "DenseCRF2D", _RecordingCRF)
    img = _two_tone(12, 16, edge=8)
    scores = np.zeros((2, 12, 16), np.float32)
    scores[0, :, 9:] = 0.8
    scores[1, :6, :4] = 0.2
    ir_label_from_scores(img, scores, np.array([3, 6]), fg_thres=0.3, bg_thres=0.1)
    names = [c[0] for c in _RecordingCRF.calls]
    assert names == ["init", "unary", "gaussian", "bilateral", "inference"] * 2
    per_crf = [dict(_RecordingCRF.calls[k:k + 5]) for k in (0, 5)]
    for thres, rec in zip((0.3, 0.1), per_crf):
        assert rec["init"] == (16, 12, 3)
        labels = np.argmax(np.concatenate([np.full((1, 12, 16), thres), scores]), 0).reshape(-1)
        unary = np.full((3, 12 * 16), -np.log(0.3 / 2), np.float32)
        unary[labels, np.arange(12 * 16)] = -np.log(0.7)
        np.testing.assert_allclose(rec["unary"], unary, rtol=1e-6)
        assert rec["gaussian"] == dict(sxy=[3, 3], compat=3, kernel=dcrf.DIAG_KERNEL,
                                       normalization=dcrf.NORMALIZE_SYMMETRIC)
        bil = rec["bilateral"]
        np.testing.assert_array_equal(bil.pop("rgbim"), img)
        assert bil == dict(sxy=[50, 50], srgb=[5, 5, 5], compat=10, kernel=dcrf.DIAG_KERNEL,
                           normalization=dcrf.NORMALIZE_SYMMETRIC)
        assert rec["inference"] == 10


def test_crf_inference_label_equals_a_direct_pydensecrf_call():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (14, 18, 3)).astype(np.uint8)
    img[:, 9:] //= 3
    labels = rng.integers(0, 3, (14, 18))
    d = dcrf.DenseCRF2D(18, 14, 3)
    unary = np.full((3, 14 * 18), -np.log(0.3 / 2), np.float32)
    unary[labels.reshape(-1), np.arange(14 * 18)] = -np.log(0.7)
    d.setUnaryEnergy(unary)
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(img), compat=10)
    expected = np.argmax(np.array(d.inference(10)).reshape(3, 14, 18), axis=0)
    got = crf_inference_label(img, labels, 3)
    np.testing.assert_array_equal(got, expected)
    assert (got != labels).any()  # the CRF did change some labels
