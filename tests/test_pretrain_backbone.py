"""Tests of the synthetic-data backbone pretraining (data/pretrain_backbone.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import data.pretrain_backbone as pb
from net.resnet50 import ResNet50, load_backbone_weights


def test_synthetic_batch_is_deterministic_and_normalised() -> None:
    x1, y1 = pb.synthetic_batch(np.random.default_rng(3), 8)
    x2, y2 = pb.synthetic_batch(np.random.default_rng(3), 8)
    assert x1.shape == (8, 3, pb.IMAGE_SIZE, pb.IMAGE_SIZE) and x1.dtype == torch.float32
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert y1.shape == (8, 3) and int(y1.min()) >= 0
    assert all(int(y1[:, g].max()) < n for g, n in enumerate(pb.GROUPS))
    assert -3.0 < float(x1.mean()) < 3.0


def test_the_task_shares_no_class_definition_with_the_toy_datasets() -> None:
    """The pretraining draws with its own code (no import of the toy generators, whose class
    cues would leak) and its random categories are distinct and fixed by BANK_SEED."""
    import ast
    tree = ast.parse(Path(pb.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m.startswith("data.toy") for m in imported), imported
    again = pb.make_bank(pb.BANK_SEED)
    assert np.array_equal(again.radii, pb.BANK.radii) and np.array_equal(again.colours,
                                                                         pb.BANK.colours)
    assert not np.array_equal(pb.make_bank(1).radii, pb.BANK.radii)
    assert len({tuple(r.round(3)) for r in pb.BANK.radii}) == pb.GROUPS[0]
    assert len({tuple(c.ravel().round(3)) for c in pb.BANK.colours}) == pb.GROUPS[1]
    assert len({tuple(t.round(3)) for t in pb.BANK.textures}) == pb.GROUPS[2]


def test_lr_schedule() -> None:
    lrs = [pb.lr_at(s, 100) for s in range(100)]
    assert lrs[0] < lrs[4] == pytest.approx(pb.LR) and lrs[-1] < 0.01 * pb.LR


def test_ensure_builds_loads_and_does_not_rebuild(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cache" / "backbone.pth"
    logs: list[str] = []
    assert pb.ensure_pretrained_backbone(path, steps=2, log=logs.append, batch_size=8) == path
    assert path.is_file() and any("held-out accuracy" in line for line in logs)
    summary = json.loads(path.with_suffix(".json").read_text())
    assert summary["steps"] == 2 and 0.0 <= summary["heldout_accuracy"] <= 1.0

    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["fc.weight"].shape == (pb.N_OUTPUTS, 2048)
    assert set(state) == set(ResNet50(num_classes=pb.N_OUTPUTS).state_dict())
    model = ResNet50()  # fixed BN, strides (2, 2, 2, 1)
    load_backbone_weights(model, path)
    assert torch.equal(model.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert not torch.allclose(model.bn1.running_var, torch.ones(64))  # stats were recomputed
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2048, 2, 2)

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt although the file exists")

    monkeypatch.setattr(pb, "pretrain", fail)
    stamp = path.stat().st_mtime_ns
    assert pb.ensure_pretrained_backbone(path, steps=2, log=logs.append) == path
    assert path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in path.parent.iterdir()) == ["backbone.json", "backbone.pth"]


def test_a_cache_of_another_step_count_or_task_is_pretrained_again(tmp_path: Path) -> None:
    """A backbone cached by a version with another step count or task is rebuilt, saying why
    (the downstream output records then see a new backbone file)."""
    path = tmp_path / "backbone.pth"
    pb.ensure_pretrained_backbone(path, steps=2, log=lambda _: None, batch_size=4)
    logs: list[str] = []
    pb.ensure_pretrained_backbone(path, steps=3, log=logs.append, batch_size=4)
    assert any(f"pretrained with {{'task': '{pb.TASK}', 'steps': 2, 'image_size': 48}}, this "
               f"version uses {{'task': '{pb.TASK}', 'steps': 3" in line for line in logs)
    assert json.loads(path.with_suffix(".json").read_text())["steps"] == 3
    old = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**old, "task": None}))  # before the task
    pb.ensure_pretrained_backbone(path, steps=3, log=logs.append, batch_size=4)
    assert any("'task': None" in line for line in logs)
