"""The TransCAM passes (docs/bao.md §3): the tiny chain through run_sample.main, make_transcam's
batched square views against a per-image loop written as the reference runs them, the
starting-weight errors that name the flag, and the colour jitter."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import run_sample
from misc import imutils
from misc.data.samples import SquareViewsDataset
from misc.io.maps import load_maps
from misc.io.records import read_record
from misc.seeds.multiscale import run_multiscale_inference, transcam_merge
from net.conformer import Net
from tests.tiny import flags, transcam_flags
from voc12.dataloader import VOCDataset

PASSES = ["--train_transcam_pass", "True", "--make_transcam_pass", "True",
          "--eval_transcam_pass", "True"]


def test_the_tiny_transcam_chain_runs_end_to_end(fake_voc, tmp_path, r50):
    out = tmp_path / "out"
    run_sample.main(flags(fake_voc, out, r50) + transcam_flags(out) + PASSES)
    record = read_record(out / "sess" / "transcam.pth")
    assert record["complete"] and {"transcam_learning_rate", "transcam_batch_size",
                                   "transcam_color_jitter", "transcam_depth"} <= set(record["settings"])
    assert "conformer_weights" not in record["inputs"]  # `none`: no file
    ids = (fake_voc / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    for i in ids:
        maps = load_maps(out / "transcam" / f"{i}.npz")
        h, w = imutils.image_size(fake_voc / "JPEGImages" / f"{i}.jpg")
        assert maps["keys"].tolist() == [0]
        assert maps["high_res"].shape == (1, h, w)
        assert maps["cam"].shape == (1, (h - 1) // 4 + 1, (w - 1) // 4 + 1)
        for m in (maps["cam"], maps["high_res"]):
            assert m.min() >= 0 and m.max() <= 1 and m.min() < 1e-4 and m.max() > 0.99
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if x["step"] == "eval_transcam"]
    assert evals and evals[-1]["threshold"] == 0.44 and "best_miou" in evals[-1]


def _reference_loop(net: Net, img: np.ndarray, sides, n_classes: int, keys) -> torch.Tensor:
    """TransCAM's inference, one image and one view at a time: resize to s x s, the view and
    its mirror through the network, each map upsampled to the image and summed, ReLU, min-max."""
    h, w = img.shape[:2]
    total = torch.zeros(n_classes, h, w)
    for s in sides:
        x = torch.from_numpy(imutils.hwc_to_chw(imutils.normalize(imutils.pil_resize(img, (s, s), 3))))
        for flip in (False, True):
            view = x.flip(-1) if flip else x
            cam = net(view[None]).cam[0, 1:]
            cam = cam.flip(-1) if flip else cam
            total += F.interpolate(cam[None], (h, w), mode="bilinear", align_corners=False)[0]
    m = F.relu(total[keys])
    lo, hi = m.amin(dim=(1, 2), keepdim=True), m.amax(dim=(1, 2), keepdim=True)
    return (m - lo) / (hi - lo + 1e-5)


def test_batched_square_views_equal_a_per_image_loop(fake_voc, tmp_path):
    torch.manual_seed(0)
    net = Net(3, depth=3).eval()
    data = VOCDataset(fake_voc, fake_voc / "cls_labels.csv")
    ids = (fake_voc / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    sides = (32, 48)
    dataset = SquareViewsDataset(ids, data, "train_aug", sides)
    with torch.inference_mode():
        run_multiscale_inference(dataset, lambda x, _l: net(x).cam[:, 1:], transcam_merge,
                                 tmp_path / "maps", torch.device("cpu"), reduce="sum",
                                 batch_size=4, exact=True)
        for i in ids:
            maps = load_maps(tmp_path / "maps" / f"{i}.npz")
            img = imutils.read_image(fake_voc / "JPEGImages" / f"{i}.jpg")
            want = _reference_loop(net, img, sides, 3, torch.from_numpy(maps["keys"]))
            assert np.abs(maps["high_res"] - want.numpy()).max() < 1e-4


@pytest.mark.parametrize("given, said", [
    ("resnet", r"--conformer_weights: weights file .*r50.pth is not a Conformer-S state_dict: it "
               r"holds a bare ResNet backbone .* as --conformer_weights"),
    ("missing", r"--conformer_weights: weights file .*nope.pth not found.* as --conformer_weights"),
    (None, r"--conformer_weights: no --conformer_weights given.*--conformer_weights none"),
])
def test_bad_starting_weights_name_the_flag_before_any_step(fake_voc, tmp_path, r50, given, said):
    out = tmp_path / "out"
    argv = flags(fake_voc, out, r50) + transcam_flags(out)[:-4] + PASSES[:2] + [
        "--train_cam_pass", "False"]
    argv.remove("--conformer_weights"), argv.remove("none")
    if given is not None:
        argv += ["--conformer_weights", str(r50 if given == "resnet" else tmp_path / "nope.pth")]
    with pytest.raises(ValueError, match=said):
        run_sample.main(argv)
    assert not (out / "sess" / "transcam.pth").exists()


def test_color_jitter():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)
    assert np.array_equal(imutils.color_jitter(img, 0, 0, 0, 0, rng), img)
    red = np.zeros((1, 1, 3))
    red[..., 0] = 255
    assert np.allclose(imutils._rotate_hue(red, 1 / 3), [[[0, 255, 0]]])
    grey = np.full((2, 2, 3), 90, np.uint8)  # no hue, no saturation: only brightness changes it
    out = imutils.color_jitter(grey, 0, 0.3, 0.3, 0.1, rng)
    assert np.array_equal(out, grey)
    bright = [int(imutils.color_jitter(grey, 0.3, 0, 0, 0, np.random.default_rng(k))[0, 0, 0])
              for k in range(50)]
    assert 63 <= min(bright) < 90 < max(bright) <= 117

