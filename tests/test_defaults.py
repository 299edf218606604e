"""The reference's quirks kept as defaults (docs/pipeline.md §2.3 and §4 Q1, Q2): dropout stays
on at AMN inference, and the poly optimiser's SGD momentum equals the weight decay."""
import numpy as np
import pytest
import torch
from PIL import Image

import run_sample
import step.make_amn_cam
from misc.engine.optim import PolyOptimizer
from misc.io.maps import load_maps
from net.resnet50_amn import Net
from step.driver.flags import load_profile
from step.driver.resolve import parse


def _resolve(argv):
    return run_sample.resolved(argv)


def test_parser_defaults_keep_the_quirks(fake_voc):
    raw = parse(run_sample.PIPELINE, [])
    assert raw.amn_deterministic is False and raw.amn_dropout == 0.1
    assert raw.cam_weight_decay == raw.irn_weight_decay == 1e-4
    args = _resolve(["--voc12_root", str(fake_voc)])
    assert args.amn_deterministic is False and args.amn_dropout == 0.1
    assert args.poly_momentum is None  # VOC profile: -1 -> None -> momentum = weight decay
    assert load_profile("voc12")["poly_momentum"] == -1
    assert _resolve(["--voc12_root", str(fake_voc), "--poly_momentum", "0.9"]).poly_momentum == 0.9


def _sgd_by_hand(p0, grads, lr0, wd, momentum, max_step, power):
    """Two or more SGD steps written out: g = grad + wd p; buf = momentum buf + g (buf = g at the
    first step); p -= lr_t buf with lr_t = lr0 (1 - t / max_step)^power."""
    p, buf = p0, None
    for t, grad in enumerate(grads):
        g = grad + wd * p
        buf = g if buf is None else momentum * buf + g
        p = p - lr0 * (1 - t / max_step) ** power * buf
    return p


@pytest.mark.parametrize("momentum,effective", [(None, 0.25), (0.9, 0.9), (0.0, 0.0)])
def test_poly_optimizer_momentum_defaults_to_the_weight_decay(momentum, effective):
    wd, lr0, grads = 0.25, 0.5, [1.0, -2.0, 3.0]
    w = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    opt = PolyOptimizer([{"params": [w], "lr": lr0, "weight_decay": wd}], lr0, wd, max_step=4,
                        momentum=momentum)
    assert opt.param_groups[0]["momentum"] == effective
    for grad in grads:
        w.grad = torch.tensor([grad], dtype=torch.float64)
        opt.step()
    expected = _sgd_by_hand(2.0, grads, lr0, wd, effective, 4, 0.9)
    assert w.item() == pytest.approx(expected, rel=1e-12)
    if momentum is None:  # distinguishable from plain SGD and from momentum 0.9
        for other in (0.0, 0.9):
            assert abs(expected - _sgd_by_hand(2.0, grads, lr0, wd, other, 4, 0.9)) > 1e-3


def test_make_amn_cam_keeps_dropout_on_by_default(fake_voc, tmp_path, monkeypatch):
    """Two default runs of make_amn_cam give different maps (dropout samples at inference);
    with --amn_deterministic True two runs are identical."""
    torch.manual_seed(0)
    nets, made = {}, []

    def cached_net(n_classes, dropout):  # one ResNet-50 for the four runs
        made.append(dropout)
        if dropout not in nets:
            nets[dropout] = Net(n_classes, dropout=dropout)
        return nets[dropout]

    monkeypatch.setattr(step.make_amn_cam.context, "network", lambda module, flag: cached_net)
    # the random initial weights stand in for a trained checkpoint (loading 100 MB 4x is slow)
    loaded = []
    monkeypatch.setattr(step.make_amn_cam, "load_checkpoint",
                        lambda model, path, made_by: loaded.append(path))
    ids = ["img_000"]
    (tmp_path / "list.txt").write_text("\n".join(ids) + "\n")
    (tmp_path / "ir").mkdir()
    for i in ids:
        size = Image.open(fake_voc / "JPEGImages" / f"{i}.jpg").size
        Image.fromarray(np.full(size[::-1], 255, np.uint8)).save(tmp_path / "ir" / f"{i}.png")

    def run(extra):
        out = tmp_path / f"amn{len(made)}"
        args = _resolve(["--voc12_root", str(fake_voc), "--train_list", str(tmp_path / "list.txt"),
                         "--amn_weights_name", "amn.pth", "--ir_label_out_dir",
                         str(tmp_path / "ir"), "--amn_cam_out_dir", str(out), "--cam_scales",
                         "1.0", "--device", "cpu", "--num_workers", "0", "--infer_batch_size",
                         "2", "--log_name", str(tmp_path / "log")] + extra)
        step.make_amn_cam.run(args)
        return [load_maps(out / f"{i}.npz")["high_res"] for i in ids]

    first, second = run([]), run([])
    assert made == [0.1, 0.1] and loaded == ["amn.pth"] * 2
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))
    third, fourth = run(["--amn_deterministic", "True"]), run(["--amn_deterministic", "True"])
    assert all(np.array_equal(a, b) for a, b in zip(third, fourth))
