"""BAO's rules (docs/bao.md §4): the EMA schedule, the teacher's copy in epoch 0, the
pseudo-label rule, the balanced smoothed CE, the normalisation + argmax of make_bao, BAO's FP /
FN, the student or teacher of a checkpoint, the errors that name a flag, the tiny chain."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import run_sample
from misc.engine.ema import copy_into, cosine_momentum, ema_update
from misc.engine.losses import balanced_smoothed_ce
from misc.errors import BadInput
from misc.eval.metrics import error_rates
from misc.io.checkpoints import load_bao_checkpoint
from misc.seeds.bao import reference_min_max, teacher_pseudo_labels
from net import conformer
from step.driver.plan import PlanError
from step.train_bao import teacher_momentum
from tests.tiny import bao_flags, flags, transcam_flags


def test_cosine_momentum_at_worked_steps():
    assert cosine_momentum(0, 1322, 0.9995) == pytest.approx(0.9995)
    assert cosine_momentum(661, 1322, 0.9995) == pytest.approx(0.99975)
    assert cosine_momentum(1322, 1322, 0.9995) == pytest.approx(1.0)
    assert teacher_momentum(0, 5, 10, 3, 0.9995, True) is None  # epoch 0: a copy
    assert teacher_momentum(2, 0, 10, 3, 0.9995, True) == pytest.approx(0.9995)  # restart
    assert teacher_momentum(2, 0, 10, 3, 0.9995, False) == pytest.approx(0.99975)


def test_copy_and_ema():
    s, t = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        s.weight.fill_(2.0), t.weight.fill_(0.0)
    ema_update(t, s, 0.75)
    assert t.weight.item() == pytest.approx(0.5)  # 0.75 * 0 + 0.25 * 2
    copy_into(t, s)
    assert t.weight.item() == 2.0


def test_pseudo_labels_on_a_two_class_map():
    cam = torch.tensor([[[[4.0, 2.0, -1.0]], [[0.0, 3.0, 1.0]]]])  # (1, 2, 1, 3)
    # class 0 / max 4: 1, .5, 0; class 1 / max 3: 0, 1, 1/3 -> bg 0, 0, 2/3
    assert teacher_pseudo_labels(cam, torch.tensor([[1.0, 1.0]])).tolist() == [[[1, 2, 0]]]
    assert teacher_pseudo_labels(cam, torch.tensor([[1.0, 0.0]])).tolist() == [[[1, 0, 0]]]


def test_reference_min_max_and_argmax():
    s = torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]], [[0.0, 0.0]]])
    n = reference_min_max(s)
    assert n[0, 0].tolist() == pytest.approx([-(1 + 1e-5) / (2 + 1e-5), (2 - 1e-5) / (2 + 1e-5)])
    assert n[2, 0].tolist() == pytest.approx([-1.0, -1.0])
    # channel 1 is flat: (0 - 2 - 1e-5) / 1e-5 everywhere, far below -1: channel 0 wins twice
    assert n[1, 0, 0].item() == pytest.approx(-200001.0)
    assert n.argmax(0).tolist() == [[0, 0]]


def test_the_tiny_bao_chain_runs(fake_voc, tmp_path, r50):
    out = tmp_path / "out"
    run_sample.main(flags(fake_voc, out, r50) + transcam_flags(out) + bao_flags(out) + [
        "--train_transcam_pass", "True", "--train_bao_pass", "True", "--make_bao_pass", "True",
        "--eval_bao_pass", "True"])
    assert len(list((out / "bao_label").glob("*.png"))) == 4
    assert "eval_bao" in (out / "metrics.jsonl").read_text()
    state = torch.load(out / "sess" / "bao.pth", weights_only=True)  # student + teacher.*
    student = {k for k in state if not k.startswith("teacher.")}
    assert {k.removeprefix("teacher.") for k in state if k.startswith("teacher.")} == student
    assert student == set(conformer.Net(3, with_bao_layers=True, depth=3).state_dict())


def test_balanced_smoothed_ce_on_four_hand_worked_pixels():
    # 3 outputs, eps 0.4: targets 0.6 for the label, 0.2 elsewhere. Logits [ln 2, 0, 0] give
    # p = .5 .25 .25: label 0 -> 0.6 ln 2 + 0.4 ln 4 = 1.4 ln 2; label 1 -> 0.2 ln 2 + 0.8 ln 4 =
    # 1.8 ln 2; zero logits with label 2 -> ln 3; the 255 pixel is left out
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 0, 0, :2] = math.log(2)
    label = torch.tensor([[[0, 1, 2, 255]]])
    bg, fg = 1.4 * math.log(2), (1.8 * math.log(2) + math.log(3)) / 2
    assert balanced_smoothed_ce(logits, label, 0.4).item() == pytest.approx((bg + fg) / 2)
    # BAO's --w_pcl when made to count (--bao_w_pcl_counts True): the foreground mean x 0.5
    assert balanced_smoothed_ce(logits, label, 0.4, 0.5).item() == pytest.approx(
        (bg + 0.5 * fg) / 2)


def test_error_rates_on_a_hand_worked_confusion():
    conf = np.array([[6, 2, 0], [1, 3, 0], [0, 0, 0]])  # rows GT, columns prediction
    r = error_rates(conf, ("bg", "a", "b"))
    # bg: TP 6, GT 8, predicted 7, union 9; a: TP 3, GT 4, predicted 5, union 6; b: nowhere
    assert r["fp"]["bg"] == pytest.approx(1 / 9) and r["fn"]["bg"] == pytest.approx(2 / 9)
    assert r["fp"]["a"] == pytest.approx(2 / 6) and r["fn"]["a"] == pytest.approx(1 / 6)
    assert r["fp"]["b"] is None and r["fn"]["b"] is None
    assert r["mean_fp"] == pytest.approx((1 / 9 + 1 / 3) / 2)
    assert r["mean_fn"] == pytest.approx((2 / 9 + 1 / 6) / 2)


def test_student_or_teacher_of_a_bao_checkpoint(tmp_path):
    path = tmp_path / "bao.pth"
    torch.save({"weight": torch.tensor([[1.0]]), "bias": torch.tensor([2.0]),
                "teacher.weight": torch.tensor([[3.0]]), "teacher.bias": torch.tensor([4.0])},
               path)
    net = torch.nn.Linear(1, 1)
    load_bao_checkpoint(net, path, "student", "train_bao")
    assert (net.weight.item(), net.bias.item()) == (1.0, 2.0)
    load_bao_checkpoint(net, path, "teacher", "train_bao")
    assert (net.weight.item(), net.bias.item()) == (3.0, 4.0)
    torch.save({"weight": torch.tensor([[1.0]]), "bias": torch.tensor([2.0])}, path)
    with pytest.raises(BadInput, match="takes --bao_infer_model student"):
        load_bao_checkpoint(net, path, "teacher", "train_bao")


def _bao_plan_error(fake_voc, tmp_path, r50, extra: list[str]) -> str:
    out = tmp_path / "out"
    with pytest.raises(PlanError) as err:
        run_sample.main(flags(fake_voc, out, r50) + transcam_flags(out) + bao_flags(out) + extra)
    return str(err.value)


def test_missing_transcam_weights_name_the_flag(fake_voc, tmp_path, r50):
    said = _bao_plan_error(fake_voc, tmp_path, r50, ["--train_bao_pass", "True"])
    assert "--transcam_weights_name: checkpoint" in said and "not found: run train_transcam " \
        "(--train_transcam_pass True) first" in said


def test_checkpoints_of_the_wrong_network_name_the_flag(fake_voc, tmp_path, r50):
    five = tmp_path / "five.pth"  # a BAO network of another class count
    torch.save(conformer.Net(5, with_bao_layers=True, depth=3).state_dict(), five)
    make = ["--make_bao_pass", "True", "--bao_weights_name"]
    said = _bao_plan_error(fake_voc, tmp_path, r50, make + [str(r50)])
    assert "--bao_weights_name: checkpoint" in said and "a bare ResNet backbone" in said
    said = _bao_plan_error(fake_voc, tmp_path, r50, make + [str(five)])
    assert "--bao_weights_name" in said and "label_enc.weight: (1024, 5) vs (1024, 3)" in said
    said = _bao_plan_error(fake_voc, tmp_path, r50, make + [str(five), "--bao_infer_model",
                                                              "teacher"])
    assert "holds no weights under teacher.*" in said and "--bao_infer_model student" in said
    said = _bao_plan_error(fake_voc, tmp_path, r50, [
        "--make_bao_amn_pass", "True", "--bao_amn_weights_name", str(five)])
    assert "--bao_amn_weights_name" in said and "Conformer-S with BAO's layers" in said
