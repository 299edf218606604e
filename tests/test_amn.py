"""AMN: the loss against a direct per-pixel formula, the NaN guard, label conditioning,
PIL-nearest label downsampling, make_amn_cam's composite rule, checkpoint round trip."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from misc.engine.losses import balanced_smoothed_ce, downsample_labels, pil_nearest_indices
from misc.io.checkpoints import load_checkpoint, save_checkpoint
from misc.io.png import save_png
from misc.seeds.multiscale import amn_merge
from net.resnet50_amn import Net


def direct_loss(logits, label, eps):
    """Pixel by pixel: soft targets 0.6 / 0.02 (21 classes, eps 0.4), fg and bg means."""
    n_out = logits.shape[1]
    bg, fg = [], []
    for b in range(label.shape[0]):
        for y in range(label.shape[1]):
            for x in range(label.shape[2]):
                lab = int(label[b, y, x])
                if lab == 255:
                    continue
                z = logits[b, :, y, x].double()
                logp = z - torch.logsumexp(z, 0)
                q = [1 - eps if c == lab else eps / (n_out - 1) for c in range(n_out)]
                ce = -sum(q[c] * logp[c] for c in range(n_out))
                (bg if lab == 0 else fg).append(float(ce))
    return 0.5 * np.mean(bg) + 0.5 * np.mean(fg)


def test_loss_matches_direct_formula():
    torch.manual_seed(0)
    logits = torch.randn(2, 21, 3, 4)
    label = torch.tensor([[[0, 0, 5, 255], [0, 5, 5, 255], [0, 0, 0, 0]],
                          [[12, 12, 0, 0], [255, 12, 0, 0], [255, 255, 20, 0]]])
    got = balanced_smoothed_ce(logits, label, eps=0.4)
    assert got.item() == pytest.approx(direct_loss(logits, label, 0.4), rel=1e-5)


def test_smoothed_targets_0_6_and_0_02_are_the_optimum():
    """For 21 classes and eps 0.4 the soft targets are 0.6 / 0.02: logits log(q) minimise the
    loss (zero gradient, loss = entropy of q) and a sharper one-hot logit scores worse."""
    label = torch.tensor([[[0, 7]]])
    q = torch.full((2, 21), 0.02, dtype=torch.float64)
    q[0, 0] = q[1, 7] = 0.6
    logits = q.log().t().reshape(1, 21, 1, 2).clone().requires_grad_(True)
    loss = balanced_smoothed_ce(logits, label, eps=0.4)
    loss.backward()
    entropy = -(0.6 * math.log(0.6) + 20 * 0.02 * math.log(0.02))
    assert loss.item() == pytest.approx(entropy, rel=1e-9)
    assert logits.grad.abs().max() < 1e-12
    sharper = logits.detach() * 3
    assert balanced_smoothed_ce(sharper, label, eps=0.4).item() > loss.item() + 0.1


def test_no_foreground_or_background_gives_no_nan():
    logits = torch.randn(1, 21, 2, 2, requires_grad=True)
    for label in (torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7),
                  torch.full((1, 2, 2), 255)):
        loss = balanced_smoothed_ce(logits, label, 0.4)
        loss.backward()
        assert math.isfinite(loss.item()) and torch.isfinite(logits.grad).all()
    only_bg = balanced_smoothed_ce(logits, torch.zeros(1, 2, 2, dtype=torch.long), 0.4)
    assert only_bg.item() > 0


@pytest.mark.parametrize("n_in,n_out", [(512, 32), (512, 128), (100, 7), (33, 3), (64, 64)])
def test_nearest_indices_match_pil(n_in, n_out):
    row = np.arange(n_in, dtype=np.float32)[None].repeat(2, 0)
    pil = np.asarray(Image.fromarray(row).resize((n_out, 2), Image.NEAREST))[0].astype(int)
    assert pil_nearest_indices(n_in, n_out).tolist() == pil.tolist()


def test_downsample_labels_picks_pil_pixels():
    label = torch.randint(0, 21, (2, 64, 48))
    down = downsample_labels(label, (4, 3))
    for b in range(2):
        pil = np.asarray(Image.fromarray(label[b].numpy().astype(np.uint8))
                         .resize((3, 4), Image.NEAREST))
        assert down[b].numpy().tolist() == pil.tolist()


def test_label_conditioning_shapes_and_effect():
    torch.manual_seed(0)
    net = Net(n_classes=5).eval()
    net.set_inference_dropout(False)
    assert tuple(net.label_enc.weight.shape) == (2048, 5)
    img = torch.randn(2, 3, 64, 80)
    y = torch.tensor([[1., 0, 0, 0, 0], [0, 1, 1, 0, 0]])
    with torch.no_grad():
        out = net(img, y)
        other = net(img, y.flip(0))
    assert out.shape == (2, 6, 4, 5)
    assert not torch.allclose(out, other)  # the label changes the output


def test_label_conditioning_value_from_the_weights():
    """logits = ASPP(F * (W y + b)) (docs/pipeline.md §3.5): stage-4 features scaled channel-wise
    by the linear label embedding (no shift, no activation), computed from the weights."""
    torch.manual_seed(1)
    net = Net(n_classes=3).eval()
    net.set_inference_dropout(False)
    img = torch.randn(2, 3, 40, 56)
    y = torch.tensor([[1., 0, 1], [0, 1, 0]])
    r = net.resnet50
    with torch.no_grad():
        feats = r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(img))))))))
        w, b = net.label_enc.weight.double().numpy(), net.label_enc.bias.double().numpy()
        enc = np.array([[sum(w[c, k] * float(y[i, k]) for k in range(3)) + b[c]
                         for c in range(2048)] for i in range(2)])
        assert (enc < 0).any()  # a negative scale must stay negative (no ReLU)
        scaled = feats.double() * torch.from_numpy(enc)[:, :, None, None]
        expected = sum(F.conv2d(scaled, conv.weight.double(), conv.bias.double(), padding=rate,
                                dilation=rate)
                       for conv, rate in zip(net.classifier[1].children(), (6, 12, 18, 24)))
        got = net(img, y)
    assert got.shape == (2, 4, 3, 4)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6)


def test_dropout_is_active_at_inference_by_default():
    torch.manual_seed(0)
    net = Net(n_classes=3).eval()
    torch.nn.init.normal_(net.classifier[1].c0.weight, 0, 1)
    x, y = torch.randn(1, 3, 32, 32), torch.ones(1, 3)
    net.set_inference_dropout(True)
    with torch.no_grad():
        assert not torch.equal(net(x, y), net(x, y))
        net.set_inference_dropout(False)
        assert torch.equal(net(x, y), net(x, y))


def test_reference_key_layout_and_checkpoint_round_trip(tmp_path):
    net = Net(n_classes=20)
    keys = set(net.state_dict())
    assert {"label_enc.weight", "classifier.1.c0.weight", "classifier.1.c3.bias",
            "backbone.0.4.0.conv1.weight", "newly_added.0.1.c2.weight", "newly_added.1.bias",
            "resnet50.layer4.2.bn3.running_var", "stage4.0.0.conv1.weight"} <= keys
    assert net.classifier[1].c3.dilation == (24, 24)
    assert not net.resnet50.conv1.weight.requires_grad and not net.stage1[1].weight.requires_grad
    assert net.stage1[4][0].conv1.weight.requires_grad  # layer1 trains in AMN (no detach)
    save_checkpoint(tmp_path / "amn.pth", net.state_dict())
    other = Net(n_classes=20)
    load_checkpoint(other, tmp_path / "amn.pth", made_by="train_amn")
    assert torch.equal(other.label_enc.weight, net.label_enc.weight)
    with pytest.raises(ValueError, match=r"classifier.1.c0.bias: \(21,\) vs \(81,\)"):
        load_checkpoint(Net(n_classes=80), tmp_path / "amn.pth", made_by="train_amn")


def test_make_amn_cam_composite_rule(tmp_path):
    """Raw softmax probability where the CAM IR label is 0, min-max normalised elsewhere."""
    h, w = 4, 4
    ir = np.array([[0, 0, 1, 1], [0, 255, 1, 1], [0, 0, 0, 255], [3, 3, 0, 0]], np.uint8)
    save_png(tmp_path / "img.png", ir)
    logits = torch.zeros(4, h, w)  # bg + 3 classes, a single scale
    logits[1, :2, 2:] = 3.0
    logits[3, 3, :2] = 2.0
    label = torch.tensor([1., 0, 1])  # classes 0 and 2 present -> keep channels 0, 1, 3
    keys, cam, high, labels = amn_merge(tmp_path)([logits], label, (h, w), "img")
    assert keys.tolist() == [0, 2]
    # the softmax argmax over [bg, class 0, class 2] (ids 0, 1, 3): class 0 where its logit is
    # 3, class 2 where its logit is 2, background where all are 0 (a tie: the first channel)
    assert labels[0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [3, 3, 0, 0]]
    prob = torch.softmax(logits, 0)[[0, 1, 3]]
    lo, hi = prob.amin((1, 2), keepdim=True), prob.amax((1, 2), keepdim=True)
    norm = (prob - lo) / (hi - lo + 1e-5)
    expected = torch.where(torch.from_numpy(ir == 0), prob, norm)
    torch.testing.assert_close(high, expected)
    assert high[0, 0, 0] == prob[0, 0, 0] and high[1, 0, 2] == norm[1, 0, 2]
    assert high[2, 1, 1] == norm[2, 1, 1]  # 255 counts as "not confident background"
    assert cam.shape == (3, 1, 1)
