"""BAO on our ResNet-50 AMN (docs/bao.md §5): the threshold-free labels of AMN's own background
channel, the AMN teacher's pseudo-label and the student's loss terms on hand-worked values, and
the tiny chain from the AMN maps to IRN trained on BAO-AMN's labels."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import run_sample
from misc.errors import BadInput
from misc.eval.seed_eval import evaluate_threshold_free
from misc.io.maps import save_maps
from misc.seeds.bao import teacher_pseudo_labels, threshold_free_labels
from step.train_bao_amn import amn_network
from tests.tiny import flags


def test_threshold_free_labels_on_three_pixels():
    # channels [bg, class 0, class 2] of a (C = 3) dataset: class ids 0, 1, 3
    prob = torch.tensor([[[0.9, 0.2, 0.5]], [[0.05, 0.7, 0.2]], [[0.05, 0.1, 0.3]]])
    labels = threshold_free_labels(prob, torch.tensor([0, 1, 3]))
    assert labels.dtype == torch.uint8
    # (a) softmax argmax: bg, class 0, bg (0.5 > 0.3)
    assert labels[0].tolist() == [[0, 1, 0]]
    # (b) per-channel min-max: bg (0.9 .. 0.2) -> 1, -0.29, 0.43; class 2 (0.05 .. 0.3) peaks at
    # the third pixel -> 1 > 0.43: class id 3 where the softmax said background
    assert labels[1].tolist() == [[0, 1, 3]]


def test_maps_without_the_labels_say_how_to_remake_them(tmp_path):
    save_maps(tmp_path / "a.npz", np.array([0]), np.zeros((2, 1, 1)), np.zeros((2, 2, 2)))
    with pytest.raises(BadInput, match="--make_amn_cam_pass True --overwrite True"):
        evaluate_threshold_free(["a"], tmp_path, lambda i: tmp_path / f"{i}.jpg", tmp_path,
                                ("c",), 2, 0.7)


def test_amn_teacher_pseudo_label_from_its_softmax():
    # 2 classes, 2 pixels: logits [0, ln 3, 0] -> softmax .2 .6 .2; [ln 4, 0, 0] -> 4/6 1/6 1/6
    logits = torch.tensor([[[[0.0, math.log(4)]], [[math.log(3), 0.0]], [[0.0, 0.0]]]])
    labels = torch.tensor([[1.0, 0.0]])
    fg = amn_network(0.0).teacher_foreground(lambda img, y: logits, None, labels)
    torch.testing.assert_close(fg, torch.tensor([[[[0.6, 1 / 6]], [[0.2, 1 / 6]]]]))
    # class 0 / its max .6: 1, .28; bg = 1 - max: 0, .72 -> class 0 (id 1), then background
    assert teacher_pseudo_labels(fg, labels).tolist() == [[[1, 0]]]


def test_amn_student_classification_term():
    logits = torch.tensor([[[[0.0, math.log(4)]], [[math.log(3), 0.0]], [[0.0, 0.0]]]])
    labels = torch.tensor([[1.0, 0.0]])
    am, cls = amn_network(0.0).student_outputs(lambda img, y: logits, None, labels)
    assert am is logits and cls.item() == 0.0
    _, cls = amn_network(2.0).student_outputs(lambda img, y: logits, None, labels)
    # foreground means ln(3)/2 (present) and 0 (absent): soft margin
    # (-log sigmoid(ln(3)/2) - log(1 - sigmoid(0))) / 2 = (ln(1 + 1/sqrt(3)) + ln 2) / 2, times 2
    assert cls.item() == pytest.approx(math.log(1 + 3 ** -0.5) + math.log(2), abs=1e-5)


def test_the_tiny_bao_amn_chain_feeds_irn(fake_voc, tmp_path, r50):
    out = tmp_path / "out"
    run_sample.main(flags(fake_voc, out, r50) + [
        "--train_cam_pass", "True", "--make_cam_pass", "True", "--cam_to_ir_label_pass", "True",
        "--train_amn_pass", "True", "--make_amn_cam_pass", "True", "--eval_amn_cam_pass", "True",
        "--amn_bao_eval", "True", "--train_bao_amn_pass", "True", "--amn_num_epoches", "2",
        "--bao_amn_weights_name", str(out / "sess" / "bao_amn.pth"),
        "--bao_amn_cam_out_dir", str(out / "bao_amn_cam"),
        "--bao_amn_out_dir", str(out / "bao_amn_label"), "--bao_crf_n_labels", "4",
        "--make_bao_amn_pass", "True", "--bao_infer_model", "teacher",
        "--eval_bao_amn_pass", "True",
        "--train_irn_pass", "True", "--irn_label_dir", str(out / "bao_amn_label"),
        "--cam_batch_size", "4", "--amn_batch_size", "4", "--irn_batch_size", "4"])
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    amn = next(r for r in lines if r["step"] == "eval_amn_cam")
    assert set(amn["threshold_free"]) == {"softmax_argmax", "bao_min_max", "bao_min_max_crf"}
    for row in amn["threshold_free"].values():  # IoU + FP + FN = 1 per class, so means too
        assert row["miou"] + row["mean_fp"] + row["mean_fn"] == pytest.approx(1.0)
    assert any(r["step"] == "eval_bao_amn" for r in lines)
    state = torch.load(out / "sess" / "bao_amn.pth", weights_only=True)
    student = {k for k in state if not k.startswith("teacher.")}
    assert {k.removeprefix("teacher.") for k in state if k.startswith("teacher.")} == student
    assert len(list((out / "bao_amn_label").glob("*.png"))) == 4
    # amn_cam_to_ir_label did not run: IRN trained on the BAO-AMN labels, the only ones there
    assert not (out / "amn_ir_label").exists()
    assert (out / "sess" / "res50_irn.pth").is_file()
