"""Conformer-S (net/conformer.py): the reference's BAO, TransCAM and ImageNet checkpoints (their
keys, shapes and dtypes, random values) load strictly, the ImageNet file with exactly its two
heads dropped; bad files are refused with what they hold and the flag; the forward's shapes,
TransCAM's propagation and drop-path behave as docs/bao.md says."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from misc.io.checkpoints import load_checkpoint, network_of
from net import conformer
from net.conformer import BAO_KEYS, HEAD_KEYS, DropPath, Net, load_conformer_weights, propagate
from net.resnet50 import ResNet50

MANIFESTS = Path(__file__).resolve().parent / "data" / "reference_checkpoints"
FILES = {"bao": "conformer_bao", "transcam": "conformer_transcam",
         "imagenet": "conformer_small_patch16_imagenet"}
COUNTS = {"bao": 722, "transcam": 718, "imagenet": 718}


def manifest(name: str) -> dict[str, dict]:
    return json.loads((MANIFESTS / f"{FILES[name]}.keys.json").read_text())


def reference_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every key, shape and dtype of the reference's file, random values."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, 100, v["shape"], generator=gen) if v["dtype"] == "int64"
            else torch.randn(v["shape"], generator=gen) for k, v in manifest(name).items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The three reference files (random values), written once: each is ~150 MB."""
    folder = tmp_path_factory.mktemp("conformer_files")
    for name in FILES:
        torch.save(reference_state(name), folder / f"{name}.pth")
    return {name: folder / f"{name}.pth" for name in FILES}


@pytest.fixture(scope="module")
def bao_net() -> Net:
    return Net(with_bao_layers=True).eval()


@pytest.fixture(scope="module")
def tiny() -> Net:
    torch.manual_seed(0)
    return Net(with_bao_layers=True, depth=3).eval()


def snapshot(net: Net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_manifests_differ_exactly_as_documented():
    bao, transcam, imagenet = (manifest(n) for n in ("bao", "transcam", "imagenet"))
    assert {n: len(manifest(n)) for n in FILES} == COUNTS
    assert set(bao) - set(transcam) == set(BAO_KEYS) and set(transcam) <= set(bao)
    assert set(imagenet) == set(transcam)
    assert {k: (transcam[k]["shape"], imagenet[k]["shape"]) for k in transcam
            if transcam[k] != imagenet[k]} == {
        "trans_cls_head.weight": ([21, 384], [1000, 384]), "trans_cls_head.bias": ([21], [1000]),
        "conv_cls_head.weight": ([21, 1024, 3, 3], [1000, 1024]),
        "conv_cls_head.bias": ([21], [1000])}


@pytest.mark.parametrize("name, with_bao", [("bao", True), ("transcam", False)])
def test_reference_file_loads_strictly(name, with_bao, files):
    """BAO's 722 keys into Net(with_bao_layers=True), TransCAM's 718 into Net(): same keys in
    the same order, every value lands, through both loaders."""
    net = Net(with_bao_layers=with_bao)
    state = reference_state(name)
    assert list(net.state_dict()) == list(state) and len(state) == COUNTS[name]
    assert load_conformer_weights(net, files[name]) == conformer.ConformerLoad(name, (), ())
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    for p in net.parameters():
        p.data.zero_()
    load_checkpoint(net, files[name], made_by=f"train_{name}")  # the steps' loader
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_imagenet_file_drops_exactly_its_two_heads(tmp_path):
    """The ImageNet file: its 1000-way trans_cls_head and Linear conv_cls_head are dropped
    (named), the net's 21-way heads keep their init, the other 714 keys load strictly; the
    {"model": ...} wrapping of released files is accepted."""
    state = reference_state("imagenet")
    torch.save({"model": state}, tmp_path / "imagenet.pth")
    del state["conv_cls_head.weight"]  # keep memory down: the dropped keys are not compared
    net = Net()
    before = snapshot(net)
    done = load_conformer_weights(net, tmp_path / "imagenet.pth")
    assert done.kind == "imagenet"
    assert done.dropped == done.kept_init == HEAD_KEYS == (
        "trans_cls_head.weight", "trans_cls_head.bias", "conv_cls_head.weight", "conv_cls_head.bias")
    after = net.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in HEAD_KEYS)
    assert sum(torch.equal(after[k], state[k]) for k in after if k not in HEAD_KEYS) == 714


def test_transcam_file_into_bao_net_keeps_bao_layers_at_init(files):
    net = Net(with_bao_layers=True)
    before = snapshot(net)
    done = load_conformer_weights(net, files["transcam"], flag="--transcam_weights")
    assert (done.kind, done.dropped, done.kept_init) == ("transcam", (), BAO_KEYS)
    assert all(torch.equal(net.state_dict()[k], before[k]) for k in BAO_KEYS)


def test_imagenet_into_bao_net_keeps_heads_and_bao_layers(files):
    done = load_conformer_weights(Net(with_bao_layers=True), files["imagenet"])
    assert done.dropped == HEAD_KEYS and set(done.kept_init) == set(HEAD_KEYS) | set(BAO_KEYS)


def save_without(path: Path, name: str, key: str) -> None:
    torch.save({k: v for k, v in reference_state(name).items() if k != key}, path)


def save_resnet_keys(path: Path) -> None:
    """A ResNet-50 state_dict's keys (tiny values: the loader refuses it by its keys)."""
    torch.save({k: torch.zeros(1) for k in ResNet50().state_dict()}, path)


BAD = {  # file writer (None: the reference file of that name), flag, message
    "resnet": (save_resnet_keys, "--conformer_weights",
               r"resnet.pth is not a Conformer-S state_dict: it holds a bare ResNet backbone "
               r"\(conv1.\*, layer1..4.\*.*Pass a Conformer-S state_dict.*as --conformer_weights"),
    "resnet_transcam_flag": (save_resnet_keys, "--transcam_weights",
                             r"holds a bare ResNet backbone .*as --transcam_weights"),
    "missing_key": (lambda p: save_without(p, "imagenet", "conv_trans_9.cnn_block.residual_conv.weight"),
                    "--conformer_weights",
                    r"\(imagenet Conformer-S\) does not fit .*missing "
                    r"\['conv_trans_9.cnn_block.residual_conv.weight'\], unexpected \[\]"),
    "bao_into_transcam": ("bao", "--transcam_weights",
                          r"\(bao Conformer-S\) does not fit .*with_bao_layers=False.*unexpected "
                          r"\['classifier_x.bias', 'classifier_x.weight', 'label_enc.bias'"),
    "coco_heads": (lambda p: torch.save({**reference_state("transcam"),
                                         "trans_cls_head.weight": torch.zeros(81, 384)}, p),
                   "--transcam_weights",
                   r"shape mismatches \['trans_cls_head.weight: \(81, 384\) vs \(21, 384\)'\]"),
    "optimizer": (lambda p: torch.save({"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, p),
                  "--conformer_weights", r"holds an optimizer state_dict"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_are_refused_with_what_they_hold(case, tmp_path, files):
    write, flag, message = BAD[case]
    path = files[write] if isinstance(write, str) else tmp_path / "resnet.pth"
    if not isinstance(write, str):
        write(path)
    net = Net()
    before = snapshot(net)
    with pytest.raises(ValueError, match=message):
        load_conformer_weights(net, path, flag=flag)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_missing_file_names_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.pth not found.*as --transcam_weights"):
        load_conformer_weights(Net(depth=3), tmp_path / "nope.pth", flag="--transcam_weights")


def test_known_network_names():
    assert network_of(set(manifest("bao"))).startswith("Conformer-S with BAO's layers")
    assert network_of(set(manifest("imagenet"))).startswith("Conformer-S (")


def test_parameter_count():
    """36.68 M with the 21-way heads and BAO's layers; with the ImageNet heads 37.67 M, the
    published 37.7 M of Conformer-S."""
    net = Net(with_bao_layers=True)
    assert sum(p.numel() for p in net.parameters()) == 36_680_127
    params = {k for k, _ in net.named_parameters()}
    imagenet = sum(torch.Size(v["shape"]).numel() for k, v in manifest("imagenet").items()
                   if k in params)
    assert imagenet == 37_673_424


def test_drop_path_rates_rise_linearly(bao_net):
    rates = [bao_net.trans_1.drop_path.p]
    rates += [b.trans_block.drop_path.p for b in bao_net.blocks()]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 12).tolist())


def test_forward_shapes_and_propagation(bao_net):
    """1x3x64x64 -> a 4x4 grid: logits (1, 21), maps (1, 21, 4, 4), A* (1, 16, 16) with rows
    summing to <= 12; M* = A* M and AM = A* f, the BAO map = [AM_0, M*_1..20]."""
    torch.manual_seed(1)
    img, label = torch.randn(1, 3, 64, 64), torch.zeros(1, 20)
    label[0, [2, 7]] = 1
    with torch.no_grad():
        out = bao_net(img, label)
    assert out.conv_logits.shape == out.trans_logits.shape == (1, 21)
    assert out.conv_cam.shape == out.cam.shape == out.am.shape == (1, 21, 4, 4)
    assert out.attention.shape == (1, 16, 16)
    assert (out.attention >= 0).all() and (out.attention.sum(-1) <= 12 + 1e-4).all()
    torch.testing.assert_close(out.conv_logits, out.conv_cam.mean(dim=(2, 3)))
    want = torch.einsum("ij,cj->ci", out.attention[0], out.conv_cam[0].flatten(1)).view(21, 4, 4)
    torch.testing.assert_close(out.cam[0], want)
    scores = out.bao_scores()
    assert torch.equal(scores[:, 0], out.am[:, 0]) and torch.equal(scores[:, 1:], out.cam[:, 1:])


def test_tiny_net_plumbing(tiny):
    """depth 3 keeps the structure (stem, conv_1/trans_1, one block per stage, last fusion):
    a non-square 2x3x32x48 batch gives a 2x3 grid; bad sizes and a label for a TransCAM net
    are refused; gradients reach the BAO layers."""
    assert [n for n, _ in tiny.named_children() if n.startswith("conv_trans")] == \
        ["conv_trans_2", "conv_trans_3"]
    img, label = torch.randn(2, 3, 32, 48), torch.eye(20)[:2]
    out = tiny(img, label)
    assert out.cam.shape == out.am.shape == (2, 21, 2, 3) and out.attention.shape == (2, 6, 6)
    out.am.sum().backward()
    assert tiny.label_enc.weight.grad.abs().sum() > 0
    tiny.zero_grad()
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny(torch.randn(1, 3, 32, 40))
    with pytest.raises(ValueError, match="with_bao_layers=True"):
        Net(depth=3)(img, label)
    with pytest.raises(ValueError, match="bao_scores needs the AM"):
        tiny(img).bao_scores()
    assert propagate(torch.eye(6).expand(2, 6, 6), out.am).equal(out.am)


def test_drop_path_only_in_training():
    """Eval: two forwards equal. Train (batch statistics are deterministic): drop-path makes
    them differ, and without drop-path they are equal again."""
    torch.manual_seed(0)
    img = torch.randn(2, 3, 32, 32)
    net = Net(depth=3, drop_path_rate=0.9).eval()
    with torch.no_grad():
        assert torch.equal(net(img).cam, net(img).cam)
        net.train()
        torch.manual_seed(1)
        first = net(img).trans_logits
        assert any(not torch.equal(first, net(img).trans_logits) for _ in range(3))
        for m in net.modules():
            if isinstance(m, DropPath):
                m.p = 0.0
        assert torch.equal(net(img).trans_logits, net(img).trans_logits)


def test_drop_path_keeps_the_expectation():
    torch.manual_seed(0)
    drop = DropPath(0.25).train()
    y = drop(torch.ones(4000, 3))
    torch.testing.assert_close(y.unique(), torch.tensor([0.0, 4 / 3]))
    assert (y[:, 0:1] == y).all() and y.mean().item() == pytest.approx(1.0, abs=0.05)
