"""Tests of the fractal (IFS) backbone pretraining (data/pretrain_fractal.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import data.pretrain_fractal as pf
from net.resnet50 import ResNet50, load_backbone_weights


@pytest.fixture(scope="module")
def cats() -> pf.Categories:
    return pf.make_categories(6, seed=1)


def test_rendering_is_deterministic_per_seed(cats: pf.Categories) -> None:
    batches = pf.fractal_batcher(cats)
    x1, y1 = batches(np.random.default_rng(3), 8)
    x2, y2 = batches(np.random.default_rng(3), 8)
    x3, _ = batches(np.random.default_rng(4), 8)
    assert x1.shape == (8, 3, pf.IMAGE_SIZE, pf.IMAGE_SIZE) and x1.dtype == torch.float32
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert int(y1.min()) >= 0 and int(y1.max()) < 6
    again = pf.make_categories(6, seed=1)
    assert np.array_equal(again.maps, cats.maps) and np.array_equal(again.probs, cats.probs)


def test_categories_differ_and_are_contractive(cats: pf.Categories) -> None:
    flat = cats.maps.reshape(len(cats.maps), -1)
    assert len({row.tobytes() for row in flat}) == len(flat)
    used = cats.probs > 0
    assert np.allclose(cats.probs.sum(1), 1) and (used.sum(1) >= 2).all()
    norms = np.linalg.norm(cats.maps[..., :2], ord=2, axis=(-2, -1))[used]
    assert (norms < 1).all()
    # two categories drawn with the same placement rng give different pictures
    a = pf.render(np.random.default_rng(0), cats, np.array([0]))
    b = pf.render(np.random.default_rng(0), cats, np.array([1]))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1


def test_degenerate_attractors_are_rejected() -> None:
    line = np.stack([np.linspace(0, 1, 500), np.zeros(500)], 1)       # a segment
    points = np.zeros((500, 2))                                        # a single point
    square = np.random.default_rng(0).uniform(0, 1, (5000, 2))         # fills its box
    assert pf.fill_ratio(line) < pf.MIN_FILL and pf.fill_ratio(points) == 0.0
    assert pf.fill_ratio(square) > 0.9
    cats = pf.make_categories(4, seed=2)
    assert cats.rejected > 0  # about half of the random IFS draws are too thin
    rng = np.random.default_rng(0)
    pts, _ = pf.chaos_game(rng, cats.maps, cats.probs, chains=128, iters=72)
    assert all(pf.fill_ratio(p) >= 0.8 * pf.MIN_FILL for p in pts)


def test_two_step_pretraining_writes_a_loadable_backbone(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "fractal.pth"
    logs: list[str] = []
    assert pf.ensure_fractal_backbone(path, steps=2, log=logs.append, batch_size=4,
                                      n_categories=5) == path
    assert any("held-out accuracy" in line for line in logs)
    summary = json.loads(path.with_suffix(".json").read_text())
    assert summary["steps"] == 2 and summary["categories"] == 5
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["fc.weight"].shape == (5, 2048)
    assert set(state) == set(ResNet50(num_classes=5).state_dict())
    model = ResNet50()  # fixed BN, strides (2, 2, 2, 1): the CAM network's backbone
    load_backbone_weights(model, path)
    assert torch.equal(model.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2048, 2, 2)
    stamp = path.stat().st_mtime_ns
    pf.ensure_fractal_backbone(path, steps=2, log=logs.append)  # present: not rebuilt
    assert path.stat().st_mtime_ns == stamp
