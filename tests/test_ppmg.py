"""PMM's CVS and PPMG (docs/pmm.md §2-§4): the formulas against values worked out by hand, the
CRF's parameters and channel order, the tie rule, the pool, and the PPMG rows of eval_cam."""
from __future__ import annotations

import json
import math

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
import torch

import misc.eval.seed_eval
import misc.seeds.crf
import run_sample
from misc.eval.seed_eval import evaluate_ppmg, parse_setting, setting_name
from misc.io.maps import save_maps
from misc.seeds.ppmg import (
    alpha_for_threshold,
    background_score,
    coefficient_of_variation,
    cv_smooth,
    ppmg,
    ppmg_many,
    proportional_labels,
    threshold_for_alpha,
)
from net import resnet50_cam
from tests.tiny import flags


def test_cvs_on_a_hand_computed_map():
    # pixels > 0.05: 0.2, 0.6, 1.0 -> mean 0.6, population std sqrt(0.32 / 3) = 0.326599;
    # cv = 0.544331, exponent 1 - 0.3 cv = 0.836701; 0.05 is smoothed (>= t) but not in the cv
    v = np.array([[[0.0, 0.04, 0.05], [0.2, 0.6, 1.0]]], np.float32)
    assert coefficient_of_variation(v[0]) == pytest.approx(0.5443311, abs=1e-6)
    e = 0.8367007
    expected = np.array([[[0.0, 0.0, 0.05 ** e], [0.2 ** e, 0.6 ** e, 1.0]]], np.float32)
    np.testing.assert_allclose(cv_smooth(v), expected, rtol=1e-5)
    # cv_scale 0: CVS off, only the values below t are zeroed
    np.testing.assert_array_equal(cv_smooth(v, cv_scale=0.0),
                                  np.where(v >= 0.05, v, 0).astype(np.float32))
    # no value above t: cv 0, the map is kept (zeroed below t)
    flat = np.full((1, 2, 2), 0.03, np.float32)
    assert coefficient_of_variation(flat[0]) == 0.0
    np.testing.assert_array_equal(cv_smooth(flat), np.zeros_like(flat))


def test_alpha_and_threshold_equivalence():
    # (1 - v)^alpha = v: alpha 11 crosses at v ~ 0.156, alpha 24 at ~ 0.094 (docs/pmm.md §3)
    assert threshold_for_alpha(11) == pytest.approx(0.156, abs=1e-3)
    assert threshold_for_alpha(24) == pytest.approx(0.094, abs=1e-3)
    # threshold 0.25 <-> alpha 4.82, 0.15 <-> 11.67, 0.45 <-> 1.34
    assert alpha_for_threshold(0.25) == pytest.approx(4.82, abs=5e-3)
    assert alpha_for_threshold(0.15) == pytest.approx(11.67, abs=5e-3)
    assert alpha_for_threshold(0.45) == pytest.approx(1.34, abs=5e-3)
    # before the CRF the background wins exactly below the crossing
    v = np.array([0.15, 0.16], np.float32)
    b = background_score(v, 11)
    assert b[0] > v[0] and b[1] < v[1]
    assert background_score(np.float32(0.5), 2) == pytest.approx(0.25)


def test_tie_rule_and_proportional_importance():
    keys = np.array([3, 7])
    # class 3 (label 4): foreground mass 0 + 0.5 + 0.5 = 1.0 -> p = v / 2
    # class 7 (label 8): foreground mass 0 + 0.5 + 0.9 = 1.4 -> p = v / 2.4
    v = np.array([[[0.0, 0.5, 0.5, 0.2, 0.7]],
                  [[0.0, 0.5, 0.0, 0.9, 0.3]]], np.float32)
    fg = np.array([[[1, 1, 1, 0, 0]],
                   [[1, 1, 0, 1, 0]]], bool)
    # px 0: foreground for both CRFs but CAM 0 -> background; px 1: equal value, class 3 has the
    # smaller mass -> 4; px 2: only class 3; px 3: only class 7 (class 3's 0.2 is not fg);
    # px 4: no foreground -> background
    np.testing.assert_array_equal(proportional_labels(fg, v, keys), [[0, 4, 4, 8, 0]])
    # the importance uses the map given (un-smoothed), so a stronger mass elsewhere flips px 1
    v2 = v.copy()
    v2[0, 0, 2] = 1.0  # class 3's mass 1.5 > 1.4: at px 1 class 7 wins now
    np.testing.assert_array_equal(proportional_labels(fg, v2, keys)[0, 1], 8)
    assert proportional_labels(fg[:0], v[:0], keys[:0]).shape == (1, 5)


def _textured(h=48, w=64, seed=3):
    """A colour-textured image (channels differ) with a class map over a blob."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    box = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4), 0)
    img[box] = rng.integers(150, 256, img[box].shape)
    yy, xx = np.mgrid[:h, :w] / h
    maps = np.stack([np.exp(-((yy - 0.5) ** 2 + (xx - 0.67) ** 2) / 0.065),
                     np.exp(-((yy - 0.42) ** 2 + (xx - 0.42) ** 2) / 0.026)]).astype(np.float32)
    maps += 0.1 * rng.random(maps.shape).astype(np.float32)
    return img, np.clip(maps / maps.max(axis=(1, 2), keepdims=True), 0, 1), np.array([1, 4])


def _independent_ppmg(img_bgr, maps, keys, alpha, cv_scale):
    """PPMG written out directly on pydensecrf, from the formulas of docs/pmm.md §3."""
    h, w = img_bgr.shape[:2]
    fg = []
    for v in maps.astype(np.float64):
        above = v[v > 0.05]
        cv = above.std() / above.mean() if above.size else 0.0
        vt = (v * (v >= 0.05)) ** (1 - cv_scale * cv)
        prob = np.stack([(1 - vt) ** alpha, vt]).astype(np.float32)
        d = dcrf.DenseCRF2D(w, h, 2)
        d.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(prob, 1e-5, 1)).reshape(2, -1)))
        d.addPairwiseGaussian(sxy=3, compat=10)
        d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.ascontiguousarray(img_bgr), compat=10)
        fg.append(np.array(d.inference(10)).reshape(2, h, w)[1] > 0.5)
    fg = np.stack(fg)
    p = maps / (1 + (maps * fg).sum(axis=(1, 2)))[:, None, None]
    out = np.zeros((h, w), np.uint8)
    best = np.zeros((h, w))
    for k in range(len(keys)):  # strictly greater: earlier channels (and background) win ties
        score = fg[k] * p[k]
        out[score > best] = keys[k] + 1
        best = np.maximum(best, score)
    return out


def test_ppmg_matches_an_independent_version_and_feeds_bgr():
    img, maps, keys = _textured()
    for alpha, cv in ((11.0, 0.3), (4.8, 0.0)):
        ours = ppmg(img, maps, keys, alpha, cv)
        np.testing.assert_array_equal(ours, _independent_ppmg(img[..., ::-1], maps, keys, alpha, cv))
    # the channel order matters on a textured image: RGB instead of BGR changes some pixels
    rgb = ppmg(img, maps, keys, bgr=False)
    changed = int((rgb != ppmg(img, maps, keys)).sum())
    assert 0 < changed < rgb.size // 10
    np.testing.assert_array_equal(rgb, _independent_ppmg(img, maps, keys, 11.0, 0.3))


def test_ppmg_crf_parameters(monkeypatch):
    calls = []

    real = dcrf.DenseCRF2D

    class Recording:  # forwards to pydensecrf, recording the pairwise terms and iterations
        def __init__(self, w, h, n_labels):
            self.d = real(w, h, n_labels)
            calls.append(("init", n_labels))

        def setUnaryEnergy(self, u):
            self.d.setUnaryEnergy(u)

        def addPairwiseGaussian(self, sxy, compat):
            calls.append(("gaussian", sxy, compat))
            self.d.addPairwiseGaussian(sxy=sxy, compat=compat)

        def addPairwiseBilateral(self, sxy, srgb, rgbim, compat):
            calls.append(("bilateral", sxy, srgb, compat, np.array(rgbim)))
            self.d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=rgbim, compat=compat)

        def inference(self, t):
            calls.append(("inference", t))
            return self.d.inference(t)

    monkeypatch.setattr(misc.seeds.crf.dcrf, "DenseCRF2D", Recording)
    img, maps, keys = _textured(16, 20)
    ppmg(img, maps, keys)
    assert calls[:2] == [("init", 2), ("gaussian", 3, 10)]
    assert calls[2][:4] == ("bilateral", 80, 13, 10)
    np.testing.assert_array_equal(calls[2][4], img[..., ::-1])  # BGR
    assert calls[3:] == [("inference", 10)] * 2  # one CRF per present class


def test_ppmg_many_equals_single_calls_and_handles_no_class():
    img, maps, keys = _textured(32, 40)
    settings = [(a, c) for a in (4.8, 11.0, 24.0) for c in (0.3, 0.0)]
    for out, (a, c) in zip(ppmg_many(img, maps, keys, settings), settings):
        np.testing.assert_array_equal(out, ppmg(img, maps, keys, a, c))
    empty = ppmg(img, maps[:0], keys[:0])
    assert empty.dtype == np.uint8 and not empty.any()
    with pytest.raises(ValueError, match="do not fit"):
        ppmg(img[:10], maps, keys)
    assert parse_setting(setting_name(4.8, 0.0)) == (4.8, 0.0)


def test_evaluate_ppmg_pool_equals_serial(tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.setattr(misc.eval.seed_eval, "PPMG_MIN_JOBS_FOR_POOL", 1)
    ids = []
    for n in range(3):
        img, maps, keys = _textured(24, 32, seed=n)
        i = f"im{n}"
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        gt = np.where(maps.max(0) > 0.4, keys[maps.argmax(0)] + 1, 0).astype(np.uint8)
        Image.fromarray(gt).save(tmp_path / f"{i}_gt.png")
        (tmp_path / "gt").mkdir(exist_ok=True)
        Image.fromarray(gt).save(tmp_path / "gt" / f"{i}.png")
        save_maps(tmp_path / "amn" / f"{i}.npz", keys, maps[:, ::4, ::4],
                  np.concatenate([np.ones_like(maps[:1]), maps]))
        ids.append(i)
    names = [f"c{k}" for k in range(5)]
    args = (ids, tmp_path / "amn", lambda i: tmp_path / f"{i}.png", tmp_path / "gt", names,
            [(11.0, 0.3), (4.8, 0.0)], True)
    serial, pooled = evaluate_ppmg(*args, num_workers=1), evaluate_ppmg(*args, num_workers=2)
    assert serial["ppmg"] == pooled["ppmg"] and list(serial["ppmg"]) == ["a11_cv0.3", "a4.8_cv0"]
    assert round(serial["ppmg_best"]["miou"], 5) == max(serial["ppmg"].values())
    assert evaluate_ppmg(*args[:5], [], True) == {}


def test_eval_cam_writes_ppmg_rows(fake_voc, tmp_path, r50):
    torch.manual_seed(0)
    (tmp_path / "sess").mkdir()
    torch.save(resnet50_cam.Net(3).state_dict(), tmp_path / "sess" / "res50_cam.pth")
    base = flags(fake_voc, tmp_path, r50) + ["--make_cam_pass", "True", "--eval_cam_pass", "True"]
    run_sample.main(base + ["--ppmg_eval", "True", "--ppmg_alphas", "4.8", "11",
                            "--ppmg_cv_scales", "0.3", "0"])
    record = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("step") == "eval_cam"][-1]
    assert list(record["ppmg"]) == ["a4.8_cv0.3", "a4.8_cv0", "a11_cv0.3", "a11_cv0"]
    assert all(0 <= m <= 1 and not math.isnan(m) for m in record["ppmg"].values())
    assert round(record["ppmg_best"]["miou"], 5) == max(record["ppmg"].values())
    report = (tmp_path / "report.md").read_text()
    assert "| PPMG alpha | cv_scale | CAM mIoU |" in report and "PPMG best" in report
    run_sample.main(base)  # off by default: no rows
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == "eval_cam" and "ppmg" not in last
