"""Tests of the synthetic-data backbone pretraining (data/pretrain_backbone.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import data.pretrain_backbone as pb
from net import conformer
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
    assert any(f"pretrained with {{'task': '{pb.TASK}', 'steps': 2, 'image_size': 48, "
               f"'network': 'resnet50'}}, this version uses {{'task': '{pb.TASK}', 'steps': 3"
               in line for line in logs)
    assert json.loads(path.with_suffix(".json").read_text())["steps"] == 3
    old = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**old, "task": None}))  # before the task
    pb.ensure_pretrained_backbone(path, steps=3, log=logs.append, batch_size=4)
    assert any("'task': None" in line for line in logs)


# ------------------------------------------ Conformer ------------------------------------------

def test_conformer_heads_are_the_imagenet_layout_and_train_on_the_task() -> None:
    """The Conformer's two heads (a Linear on the pooled CNN map, one on the cls token) each
    give the 48 group logits; at init (heads ~0) the loss is that of uniform guesses over the
    2 heads x 3 groups of 16, 6 ln 16; a few steps on one batch bring it well down."""
    torch.manual_seed(0)
    model = pb.conformer_network(depth=3).build()
    x, y = pb.synthetic_batch(np.random.default_rng(0), 8, pb.CONFORMER_IMAGE_SIZE)
    assert x.shape == (8, 3, 64, 64)
    model.train()
    logits = model(x)
    assert logits.shape == (8, 2, pb.N_OUTPUTS)
    assert model.conv_cls_head.weight.shape == (pb.N_OUTPUTS, 1024)
    assert model.trans_cls_head.weight.shape == (pb.N_OUTPUTS, conformer.EMBED_DIM)
    start = pb.group_loss(logits, y).item()
    assert start == pytest.approx(6 * np.log(16), abs=0.5)
    pb.train(model, 12, np.random.default_rng(1), 8, batches=lambda rng, n: (x, y), lr=1e-3)
    model.train()
    with torch.no_grad():
        end = float(pb.group_loss(model(x), y))
    assert end < 0.5 * start


def test_group_loss_sums_the_heads_and_predict_sums_their_logits() -> None:
    y = torch.tensor([[3, 0, 15]])
    one = torch.zeros(1, pb.N_OUTPUTS)
    one[0, 3] = one[0, 16 + 0] = one[0, 32 + 15] = 5.0
    two = torch.stack([one, torch.zeros_like(one)], dim=1)  # (1, 2, 48)
    assert float(pb.group_loss(two, y)) == pytest.approx(
        float(pb.group_loss(one, y)) + 3 * np.log(16), rel=1e-6)
    assert pb.group_predict(two).tolist() == [[3, 0, 15]]


def test_the_conformer_cache_loads_strictly_into_transcam_and_bao_networks(
        tmp_path: Path) -> None:
    """The saved file has the keys of conformer.Net (the ImageNet layout: 2-D
    conv_cls_head.weight), loads with its two heads dropped and everything else equal to the
    file; the sidecar names the network and its 64 px task."""
    path = tmp_path / "conformer.pth"
    network = pb.conformer_network(depth=3)
    assert pb.ensure_pretrained_backbone(path, steps=2, batch_size=4, log=lambda _: None,
                                         network=network) == path
    summary = json.loads(path.with_suffix(".json").read_text())
    assert (summary["network"], summary["image_size"], summary["steps"]) == (
        "conformer_depth3", 64, 2)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == set(conformer.Net(depth=3).state_dict())
    assert state["conv_cls_head.weight"].shape == (pb.N_OUTPUTS, 1024)
    net = conformer.Net(depth=3)
    done = conformer.load_conformer_weights(net, path)
    assert done.kind == "imagenet" and set(done.dropped) == set(conformer.HEAD_KEYS)
    for key, value in net.state_dict().items():
        if key not in conformer.HEAD_KEYS:
            assert torch.equal(value, state[key]), key
    assert not torch.allclose(net.bn1.running_var, torch.ones(64))  # recomputed statistics
    bao = conformer.Net(depth=3, with_bao_layers=True)
    assert set(conformer.load_conformer_weights(bao, path).kept_init) == \
        set(conformer.HEAD_KEYS) | set(conformer.BAO_KEYS)
    with pytest.raises(ValueError, match="does not fit"):  # depth 3 is no Conformer-S
        conformer.load_conformer_weights(conformer.Net(depth=6), path)


def test_a_cache_of_another_network_is_pretrained_again(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose sidecar names another network (a ResNet pretrained to the Conformer's
    path) is rebuilt, with the network's own schedule when no steps are given."""
    path = tmp_path / "conformer_s_synthetic.pth"
    path.write_bytes(b"weights")
    path.with_suffix(".json").write_text(json.dumps(
        {"task": pb.TASK, "steps": pb.CONFORMER_STEPS, "image_size": 64, "network": "resnet50"}))
    calls = []

    def fake(steps, seed, batch_size, log, network):
        calls.append((steps, batch_size, network.name))
        return {"w": torch.zeros(1)}, {"network": network.name}

    monkeypatch.setattr(pb, "pretrain", fake)
    logs: list[str] = []
    assert pb.ensure_pretrained_conformer(path, log=logs.append) == path
    assert calls == [(pb.CONFORMER_STEPS, None, "conformer_s")]
    assert any("'network': 'resnet50'" in line for line in logs)
    assert pb.ensure_pretrained_conformer(path, log=logs.append) == path  # now current
    assert len(calls) == 1
