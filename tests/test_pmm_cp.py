"""PMM's cyclic pseudo-masks (docs/pmm.md §9) through run_sample.main on a tiny VOC-layout root:
round 1 (train_seg, eval_seg), make_seg_cp from round 1's last checkpoint, round 2
(train_seg_cp, eval_seg_cp) in folders and records of its own; a rerun keeps everything; a
changed round-1 checkpoint remakes the CP masks."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

import run_sample
from misc import imutils
from misc.io.checkpoints import load_checkpoint
from misc.io.png import load_png
from misc.seeds.crf import crf_inference_prob
from net.deeplabv2 import deeplab_v2_msc
from step.driver.context import cyclic_round
from step.driver.workspace import already_trained
from tests.test_deeplab import seg_flags
from tests.tiny import write_fake_voc

CP_CRF = ("2", "3", "1", "4", "67", "3")  # PMM's values but 2 iterations


def cp_flags(out) -> list[str]:
    return ["--seg_cp_out_dir", str(out / "cp_label"), "--seg_cp_weights_name",
            str(out / "sess" / "dl_cp.pth"), "--seg_cp_pred_out_dir", str(out / "seg_pred_cp"),
            "--seg_cp_scales", "0.5", "1.0", "--seg_cp_crf_params", *CP_CRF,
            "--seg_puf", "clamp", "--seg_puf_beta", "0.5", "--seg_puf_k", "0.5"]


def _records(out, step: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["step"] == step]


def _mtimes(folder, ids) -> dict:
    return {i: (folder / f"{i}.png").stat().st_mtime_ns for i in ids}


def cp_mask_of(checkpoint, root, image_id: str) -> np.ndarray:
    """The CP mask of one image worked out from a round-1 checkpoint: the mean softmax of the
    MSC logits over scales 0.5, 1 and their mirrors, bilinear to the image, then the CRF."""
    model = deeplab_v2_msc(4, "resnet50")
    load_checkpoint(model, checkpoint, made_by="test")
    model.eval()
    rgb = imutils.read_image(root / "JPEGImages" / f"{image_id}.jpg")
    img = torch.from_numpy(imutils.hwc_to_chw(imutils.normalize(rgb)))[None]
    h, w = rgb.shape[:2]
    probs = []
    with torch.no_grad():
        for s in (0.5, 1.0):
            x = torch.nn.functional.interpolate(img, scale_factor=s, mode="bilinear",
                                                align_corners=False) if s != 1 else img
            for flip in (False, True):
                logits = model(x.flip(-1) if flip else x)
                logits = logits.flip(-1) if flip else logits
                up = torch.nn.functional.interpolate(logits, (h, w), mode="bilinear",
                                                     align_corners=False)
                probs.append(torch.softmax(up, 1)[0])
    prob = torch.stack(probs).mean(0).numpy()
    return crf_inference_prob(rgb, prob, tuple(map(float, CP_CRF)))


def kept_in_a_whole_chain(argv: list[str]) -> dict[str, bool]:
    """Whether a whole-chain run with these flags would keep each round's checkpoint."""
    args = run_sample.resolved(argv + ["--train_seg_pass", "True"])
    args.resume_chain = True
    return {name: already_trained(run_sample.PIPELINE, args, name)
            for name in ("train_seg", "train_seg_cp")}


def test_two_rounds_in_their_own_folders_and_records(tmp_path, r50):
    root = tmp_path / "voc"
    ids = write_fake_voc(root, [(40, 48), (48, 40), (36, 52), (48, 48)])
    base = seg_flags(root, tmp_path, r50) + cp_flags(tmp_path)
    passes = ("train_seg", "eval_seg", "make_seg_cp", "train_seg_cp", "eval_seg_cp")
    out = run_sample.main(base + [a for p in passes for a in (f"--{p}_pass", "True")])
    assert list(out["timings"]) == ["train_seg", "eval_seg", "make_seg_cp", "train_seg_cp",
                                    "eval_seg_cp"]
    # round 2 learnt from the masks round 1's last checkpoint gives, worked out directly
    for i in ids:
        mask = load_png(tmp_path / "cp_label" / f"{i}.png")
        np.testing.assert_array_equal(mask, cp_mask_of(tmp_path / "sess" / "dl.pth", root, i))
    assert _records(tmp_path, "train_seg_cp")[-1]["labels"] == str(tmp_path / "cp_label")
    assert _records(tmp_path, "train_seg")[-1]["labels"] == str(root / "SegmentationClass")
    one, two = (torch.load(tmp_path / "sess" / n, weights_only=True)
                for n in ("dl.pth", "dl_cp.pth"))
    assert any(not torch.equal(one[k], two[k]) for k in one)  # two models
    for step, folder in (("eval_seg", "seg_pred"), ("eval_seg_cp", "seg_pred_cp")):
        assert len(_records(tmp_path, step)) == 1
        assert all((tmp_path / folder / f"{i}.png").is_file() for i in ids)

    # a rerun keeps the CP masks and the predictions; a whole-chain rerun would keep both
    # checkpoints (explicit training passes always train: step/driver/workspace.already_trained)
    masks, preds = _mtimes(tmp_path / "cp_label", ids), _mtimes(tmp_path / "seg_pred_cp", ids)
    run_sample.main(base + ["--eval_seg_pass", "True", "--make_seg_cp_pass", "True",
                            "--eval_seg_cp_pass", "True"])
    assert _mtimes(tmp_path / "cp_label", ids) == masks
    assert _mtimes(tmp_path / "seg_pred_cp", ids) == preds
    assert _records(tmp_path, "eval_seg_cp")[-1]["miou"] == _records(tmp_path, "eval_seg_cp")[0]["miou"]
    assert kept_in_a_whole_chain(base) == {"train_seg": True, "train_seg_cp": True}

    # another round-1 checkpoint (one more iteration) remakes every CP mask
    run_sample.main(base + ["--seg_num_iters", "4", "--train_seg_pass", "True",
                            "--make_seg_cp_pass", "True"])
    assert all(t != masks[i] for i, t in _mtimes(tmp_path / "cp_label", ids).items())
    for i in ids:
        np.testing.assert_array_equal(load_png(tmp_path / "cp_label" / f"{i}.png"),
                                      cp_mask_of(tmp_path / "sess" / "dl.pth", root, i))
    assert kept_in_a_whole_chain(base + ["--seg_num_iters", "4"]) == \
        {"train_seg": True, "train_seg_cp": False}  # round 2 retrains on the new masks


def test_round_two_trains_without_puf_into_its_own_files():
    args = argparse.Namespace(seg_cp_out_dir="cp", seg_cp_weights_name="cp.pth",
                              seg_cp_pred_out_dir="pred_cp", seg_puf="clamp",
                              seg_label_dir=None, seg_weights_name="one.pth",
                              seg_pred_out_dir="pred", seg_test_list="test.txt")
    two = cyclic_round(args)
    assert (two.seg_label_dir, two.seg_weights_name, two.seg_pred_out_dir, two.seg_puf,
            two.seg_test_list) == ("cp", "cp.pth", "pred_cp", "none", None)
    settings = run_sample.PIPELINE.settings("train_seg_cp")
    assert "seg_puf" not in settings and "seg_learning_rate" in settings
    assert "seg_cp_crf_params" in run_sample.PIPELINE.settings("make_seg_cp")


@pytest.mark.parametrize("flag", ["--make_seg_cp_pass", "--train_seg_cp_pass"])
def test_cp_passes_are_optional(flag):
    assert run_sample.PIPELINE.steps[flag[2:-5]].optional
