"""PMM's plug point (ii) (docs/pmm.md §7): IR labels from PPMG at two alphas on a hand-worked
map, with the CRF replaced by its unary (Q = score / sum) so the decisions can be worked out."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

import misc.seeds.ppmg
from misc.errors import BadInput
from misc.seeds.ppmg import ppmg_ir_label
from step.driver.runners import ir_label_levels


class _UnaryOnly:
    """A CRF without pairwise terms: the marginals are the scores normalised per pixel."""

    def __init__(self, img, n_labels, **_):
        pass

    def marginals(self, prob):
        return prob / prob.sum(axis=0, keepdims=True)


def test_two_alphas_give_confident_fg_bg_and_255_between(monkeypatch):
    monkeypatch.setattr(misc.seeds.ppmg, "PairwiseCRF", _UnaryOnly)
    # cv_scale 0: the map is used as is (>= 0.05). alpha 1.34 crosses at 0.45, 11.67 at 0.15:
    # 0.9, 0.5 are confident fg (class 2 -> label 3); 0.3 is fg only at the high alpha -> 255;
    # 0.1 and 0.0 are bg for both -> 0
    v = np.array([[[0.9, 0.5, 0.3, 0.1, 0.0]]], np.float32)
    img = np.zeros((1, 5, 3), np.uint8)
    ir = ppmg_ir_label(img, v, np.array([2]), 1.34, 11.67, cv_scale=0.0)
    np.testing.assert_array_equal(ir, [[3, 3, 255, 0, 0]])
    assert ppmg_ir_label(img, v[:0], np.zeros(0, np.int64), 1.34, 11.67).tolist() == [[0] * 5]


def test_defaults_keep_the_reference_thresholds_and_bad_alphas_name_the_flag():
    args = argparse.Namespace(amn_ir_ppmg=False, amn_ir_ppmg_alphas=(1.34, 11.67),
                              amn_ir_ppmg_cv_scale=0.3)
    assert ir_label_levels(args, "amn", 0.45, 0.15) == (0.45, 0.15, None)
    args.amn_ir_ppmg = True
    assert ir_label_levels(args, "amn", 0.45, 0.15) == (1.34, 11.67, 0.3)
    args.amn_ir_ppmg_alphas = (11.67, 1.34)
    with pytest.raises(BadInput, match="--amn_ir_ppmg_alphas"):
        ir_label_levels(args, "amn", 0.45, 0.15)


def test_ppmg_ir_labels_are_scored_beside_the_thresholds_labels(tiny_toy, tmp_path, r50):
    """With --amn_ir_ppmg True the IR-label record gains `reference`: the score of the
    thresholds' labels of the same maps, which a run without PPMG writes and scores itself."""
    import json

    import run_sample
    from tests.test_ins_seg_steps import gt_maps
    from tests.tiny import flags

    gt_maps(tiny_toy, tmp_path)
    train = str(tiny_toy / "ImageSets" / "Segmentation" / "train.txt")  # gt_maps' AMN maps
    base = flags(tiny_toy, tmp_path, r50) + ["--amn_cam_to_ir_label_pass", "True",
                                             "--train_list", train]
    run_sample.main(base + ["--amn_ir_ppmg", "True", "--amn_ir_label_out_dir",
                            str(tmp_path / "ppmg_ir")])
    run_sample.main(base + ["--amn_ir_label_out_dir", str(tmp_path / "thres_ir")])
    ppmg_row, thres_row = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text()
                                          .splitlines()) if r["step"] == "amn_cam_to_ir_label"]
    assert ppmg_row["reference"] == pytest.approx(
        {"miou": thres_row["miou"], "coverage": thres_row["coverage"]}, abs=1e-12)
    assert "reference" not in thres_row
