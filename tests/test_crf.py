"""Dense CRF, the IR-label composition rule and the IR-label writer."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from misc.artifacts import load_png, save_maps
from misc.crf import compose_ir_label, crf_inference_label, ir_label_from_scores
from misc.ir_label import make_ir_labels


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


def test_make_ir_labels_workers_and_skip(tmp_path):
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
