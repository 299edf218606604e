"""BAO's rules (docs/bao.md §4): the EMA schedule, the teacher's copy in epoch 0, the
pseudo-label rule, the normalisation + argmax of make_bao, the tiny chain."""
from __future__ import annotations

import pytest
import torch

import run_sample
from misc.engine.ema import copy_into, cosine_momentum, ema_update
from misc.seeds.bao import reference_min_max, teacher_pseudo_labels
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
