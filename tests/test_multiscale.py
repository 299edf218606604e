"""make_cam's batched multi-scale mechanism against a direct per-image, per-scale computation."""
import numpy as np
import torch
import torch.nn.functional as F

from misc import imutils
from misc.data.samples import MultiScaleDataset
from misc.io.maps import load_maps
from misc.seeds.multiscale import (
    cam_merge,
    flip_views_forward,
    padded_flip_views_forward,
    run_multiscale_inference,
    size_batches,
)
from voc12.dataloader import VOCDataset

SCALES = (1.0, 0.5, 1.5, 2.0)


class TinyCAM(torch.nn.Module):
    """A stride-16 stand-in for the CAM network: ReLU(conv) -> (B, C, ceil(h/16), ceil(w/16))."""

    def __init__(self, n_classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, n_classes, 16, stride=16, padding=0)

    def forward(self, x):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % 16, 0, -h % 16))
        return F.relu(self.conv(x))


def direct_cam(net, img_uint8, label, scales):
    """The reference's loop: one image, one scale at a time, pair [img, flip], sum, normalise."""
    h, w = img_uint8.shape[:2]
    outs = []
    for s in scales:
        x = torch.from_numpy(imutils.hwc_to_chw(imutils.normalize(imutils.pil_rescale(img_uint8, s, 3))))
        pair = torch.stack([x, x.flip(-1)])
        a = net(pair)
        outs.append(a[0] + a[1].flip(-1))
    keys = torch.nonzero(label)[:, 0]
    strided = sum(F.interpolate(o[None], ((h + 3) // 4, (w + 3) // 4), mode="bilinear",
                                align_corners=False)[0] for o in outs)[keys]
    up = (16 * ((h + 15) // 16), 16 * ((w + 15) // 16))
    high = sum(F.interpolate(o[None], up, mode="bilinear", align_corners=False)[0]
               for o in outs)[keys][:, :h, :w]
    strided = strided / (strided.flatten(1).max(1)[0][:, None, None] + 1e-5)
    high = high / (high.flatten(1).max(1)[0][:, None, None] + 1e-5)
    return keys.numpy(), strided.numpy(), high.numpy()


def test_size_batches_keep_orientation_and_similar_sizes_together():
    sizes = [(4, 5), (6, 3), (4, 5), (3, 3), (5, 4), (4, 6)]
    batches = size_batches(sizes, batch_size=2)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert [[sizes[i] for i in b] for b in batches] == [[(4, 5), (4, 5)], [(4, 6)],
                                                       [(3, 3), (5, 4)], [(6, 3)]]


def _per_image(forward, imgs, labels, reduce):
    return [flip_views_forward(forward, img[None], labels[i:i + 1], reduce)[0]
            for i, img in enumerate(imgs)]


def test_padded_batch_equals_each_image_alone_on_the_real_networks():
    """Images of different sizes in one masked, padded pass: the CAM and (deterministic) AMN
    outputs equal each image's own pass up to float rounding; without the masks they do not."""
    from misc.seeds.padded_batch import crop_outputs, pad_to_canvas
    from net import resnet50_amn, resnet50_cam
    torch.manual_seed(0)
    sizes = [(40, 52), (33, 47), (48, 36), (17, 70)]
    imgs = [torch.randn(3, h, w) for h, w in sizes]
    labels = torch.eye(4)[:, :3] + torch.eye(4)[:, 1:]
    cam = resnet50_cam.Net(3).eval()
    amn = resnet50_amn.Net(3).eval()
    amn.set_inference_dropout(False)
    with torch.no_grad():
        for forward, reduce in ((lambda x, _l: cam.cam(x), "sum"), (amn, "mean")):
            want = _per_image(forward, imgs, labels, reduce)
            got = padded_flip_views_forward(forward, imgs, labels, reduce, stride=16)
            for g, w, (h, wd) in zip(got, want, sizes):
                assert g.shape == w.shape == w.shape[:1] + ((h + 15) // 16, (wd + 15) // 16)
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
        canvas, valid = pad_to_canvas(imgs, 16)  # the masks matter: padding alone differs
        plain = crop_outputs(cam.cam(canvas), valid, tuple(canvas.shape[-2:]))
        alone = [cam.cam(img[None])[0] for img in imgs]
        assert any((p - a).abs().max() > 1e-3 for p, a in zip(plain, alone))


def test_batched_multiscale_equals_direct(fake_voc, tmp_path):
    voc = VOCDataset(fake_voc)
    labels = voc.labels
    # two classes present on one image to exercise the key selection
    labels.by_id["img_001"][2] = 1.0
    ids = ["img_000", "img_001", "img_002", "img_003"]
    ds = MultiScaleDataset(ids, voc, "test", SCALES)
    net = TinyCAM(labels.n_classes).eval()
    out = tmp_path / "cam"
    with torch.no_grad():
        stats = run_multiscale_inference(ds, lambda x, _l: net(x), cam_merge, out,
                                         torch.device("cpu"), reduce="sum", batch_size=4)
    assert stats["written"] == 4
    for i in ids:
        img = imutils.read_image(fake_voc / "JPEGImages" / f"{i}.jpg")
        with torch.no_grad():
            keys, strided, high = direct_cam(net, img, torch.from_numpy(labels[i]), SCALES)
        got = load_maps(out / f"{i}.npz")
        np.testing.assert_array_equal(got["keys"], keys)
        assert got["high_res"].shape == (len(keys),) + img.shape[:2]
        np.testing.assert_allclose(got["cam"], strided, atol=1e-5)
        np.testing.assert_allclose(got["high_res"], high, atol=1e-5)
        assert got["high_res"].max() <= 1 and got["high_res"].max() > 0.99
    # a rerun skips everything that is already written
    stats = run_multiscale_inference(ds, lambda x, _l: net(x), cam_merge, out,
                                     torch.device("cpu"), reduce="sum")
    assert stats == {**stats, "written": 0, "skipped": 4}
