"""make_cam / make_amn_cam merges (docs/pipeline.md §3.2, §3.6) against a direct per-image,
per-scale computation written out with numpy loops (several scales, flips, non-trivial sizes)."""
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from misc import imutils
from misc.data.samples import MultiScaleDataset
from misc.io.maps import load_maps
from misc.seeds.multiscale import amn_merge, cam_merge, run_multiscale_inference
from tests import reference_ops as ref
from voc12.dataloader import VOCDataset

SCALES = (1.0, 0.5, 1.5)
IDS = ["img_000", "img_001", "img_002", "img_003"]


class StrideEight(torch.nn.Module):
    """A stride-8 stand-in network: conv(x) (+ a label term) -> (B, n_out, ceil(h/8), ceil(w/8)),
    optionally ReLU'd and scaled (CAM-like scores)."""

    def __init__(self, n_out: int, n_classes: int, relu: bool, scale: float = 1.0):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv = torch.nn.Conv2d(3, n_out, 8, stride=8)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.1)
            self.conv.bias.copy_(torch.randn(n_out, generator=g))
        self.label_w = torch.randn(n_classes, n_out, generator=g)
        self.relu, self.scale = relu, scale

    def forward(self, x, labels):
        h, w = x.shape[-2:]
        out = self.conv(F.pad(x, (0, -w % 8, 0, -h % 8)))
        out = out + (labels @ self.label_w)[:, :, None, None]
        return (F.relu(out) if self.relu else out) * self.scale


def _dataset(fake_voc):
    voc = VOCDataset(fake_voc)
    labels = voc.labels
    labels.by_id["img_001"][2] = 1.0  # two classes present on one image
    labels.by_id["img_003"][1] = 1.0
    return labels, MultiScaleDataset(IDS, voc, "test", SCALES)


def _views(net, img, label):
    """Per scale: the network outputs (numpy) on the rescaled image and on its mirror,
    the mirror's output flipped back."""
    y = torch.from_numpy(label)[None]
    views = []
    for s in SCALES:
        x = torch.from_numpy(ref.normalise(ref.pil_bicubic_rescale(img, s)))[None]
        with torch.no_grad():
            a = net(x, y)[0].double().numpy()
            b = net(x.flip(-1), y)[0].double().numpy()[:, :, ::-1]
        views.append((a, b))
    return views


def test_amn_merge_means_scales_and_flips_of_logits(fake_voc, tmp_path):
    labels, ds = _dataset(fake_voc)
    net = StrideEight(labels.n_classes + 1, labels.n_classes, relu=False).eval()
    rng = np.random.default_rng(3)
    ir_dir = tmp_path / "ir"
    ir_dir.mkdir()
    irs = {}
    for i in IDS:
        h, w = ds.image_size(IDS.index(i))
        irs[i] = rng.choice(np.array([0, 1, 255], np.uint8), size=(h, w), p=[0.5, 0.3, 0.2])
        Image.fromarray(irs[i]).save(ir_dir / f"{i}.png")
    out = tmp_path / "amn"
    run_multiscale_inference(ds, net, amn_merge(ir_dir), out, torch.device("cpu"),
                             reduce="mean", batch_size=4)
    for i in IDS:
        img = imutils.read_image(fake_voc / "JPEGImages" / f"{i}.jpg")
        h, w = img.shape[:2]
        label = labels[i]
        zs = [(a + b) / 2 for a, b in _views(net, img, label)]  # mean of the flip pair
        keep = [0] + [int(k) + 1 for k in np.nonzero(label)[0]]
        got = load_maps(out / f"{i}.npz")
        np.testing.assert_array_equal(got["keys"], np.nonzero(label)[0])
        for key, size in (("cam", ((h + 3) // 4, (w + 3) // 4)), ("high_res", (h, w))):
            z = sum(ref.bilinear(zi, size) for zi in zs) / len(zs)  # mean over scales
            p = ref.softmax(z)[keep]
            lo, hi = p.min(axis=(1, 2), keepdims=True), p.max(axis=(1, 2), keepdims=True)
            norm = (p - lo) / (hi - lo + 1e-5)
            confident_bg = ref.pil_nearest(irs[i], size) == 0
            expected = np.where(confident_bg[None], p, norm)
            assert got[key].shape == expected.shape
            np.testing.assert_allclose(got[key], expected, atol=2e-5)
            # the test distinguishes: both kinds of pixel occur, and the maps are not flat
            assert confident_bg.any() and (~confident_bg).any() and p.std() > 1e-2


def test_cam_merge_sums_scales_and_flips_before_max_normalising(fake_voc, tmp_path):
    """Scores of about 1e-5, so that the + 1e-5 of the normalisation sees every factor of 2:
    a mean instead of a sum (over flips or scales) changes the result."""
    labels, ds = _dataset(fake_voc)
    net = StrideEight(labels.n_classes, labels.n_classes, relu=True, scale=5e-6).eval()
    out = tmp_path / "cam"
    run_multiscale_inference(ds, net, cam_merge, out, torch.device("cpu"), reduce="sum",
                             batch_size=4)
    for i in IDS:
        img = imutils.read_image(fake_voc / "JPEGImages" / f"{i}.jpg")
        h, w = img.shape[:2]
        label = labels[i]
        keys = np.nonzero(label)[0]
        summed = [a + b for a, b in _views(net, img, label)]  # flip pair summed
        up = (16 * ((h + 15) // 16), 16 * ((w + 15) // 16))
        strided = sum(ref.bilinear(o, ((h + 3) // 4, (w + 3) // 4)) for o in summed)[keys]
        high = sum(ref.bilinear(o, up) for o in summed)[keys][:, :h, :w]
        got = load_maps(out / f"{i}.npz")
        np.testing.assert_array_equal(got["keys"], keys)
        for key, m in (("cam", strided), ("high_res", high)):
            peak = m.max(axis=(1, 2), keepdims=True)
            assert (peak > 2e-6).all() and (peak < 2e-4).all()  # the eps is not negligible
            np.testing.assert_allclose(got[key], m / (peak + 1e-5), atol=1e-4, rtol=1e-4)
