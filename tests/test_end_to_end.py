"""The no-argument run of run_sample.py, on a tiny toy configuration."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import run_sample
from data.toy_dataset import ToyConfig
from misc.io.maps import load_maps
from misc.io.png import load_png
from misc.irn.ins_seg import load_instances
from step.driver import flags, resolve
from tests import reference_ops
from tests.tiny import tiny_profile_file


def _seed_labels(maps: dict, first: int, thres: float) -> np.ndarray:
    """[0, keys + 1][argmax([thres; high_res[first:]])] in float32 (ties: background)."""
    scores = maps["high_res"][first:].astype(np.float32)
    padded = np.concatenate([np.full((1,) + scores.shape[1:], thres, np.float32), scores])
    return np.concatenate([[0], maps["keys"] + 1])[padded.argmax(0)]


def test_no_argument_run_on_a_tiny_configuration(tmp_path, monkeypatch):
    """`python run_sample.py` with no flags: builds the toy dataset and its backbone, runs
    every step, writes the report, the plots and the run's configuration."""
    monkeypatch.setattr(resolve, "TOY_ROOT", tmp_path / "data" / "toy")
    monkeypatch.setattr(resolve, "TOY_CONFIG", ToyConfig.tiny())
    monkeypatch.setattr(resolve, "TOY_BACKBONE", tmp_path / "data" / "cache" / "r50.pth")
    monkeypatch.setattr(resolve, "TOY_PRETRAIN_STEPS", 2)
    monkeypatch.setitem(flags.PROFILE_FILES, "toy",
                        tiny_profile_file(tmp_path, flags.PROFILE_FILES["toy"],
                                          checkpoint_every=2))
    monkeypatch.chdir(tmp_path)
    out = run_sample.main([])
    assert list(out["timings"]) == ["train_cam", "make_cam", "eval_cam", "cam_to_ir_label",
                                    "train_amn", "make_amn_cam", "eval_amn_cam",
                                    "amn_cam_to_ir_label", "train_irn", "make_ins_seg_labels",
                                    "eval_ins_seg", "make_sem_seg_labels", "eval_sem_seg",
                                    "make_cocoann", "train_seg", "eval_seg"]
    tiny_toy, result = tmp_path / "data" / "toy", tmp_path / "result"
    report = (result / "report.md").read_text()
    for words in ("CAM seed mIoU", "AMN seed mIoU", "pseudo-mask mIoU", "DeepLab mIoU",
                  "instance mAP@0.5", "instances_train_pseudo.json",
                  "| total |", "threshold_curves.png", "examples.png"):
        assert words in report
    for picture in ("threshold_curves.png", "examples.png"):
        with Image.open(result / picture) as img:
            assert img.size[0] > 200 and img.size[1] > 200
    config = json.loads((result / "run_config.json").read_text())
    assert config["packages"]["torch"] == torch.__version__
    assert config["flags"]["voc12_root"] == str(tiny_toy)
    assert (tmp_path / "sample_train_eval.log").read_text().count("| total |") == 1

    ids = (tiny_toy / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    n_classes = len((tiny_toy / "class_names.txt").read_text().split())
    for i in ids:
        maps = load_maps(result / "cam" / f"{i}.npz")
        ir = load_png(result / "ir_label" / f"{i}.png")
        assert maps["high_res"].shape[1:] == ir.shape
        assert maps["cam"].shape[0] == maps["high_res"].shape[0] == len(maps["keys"])
        assert 0 <= maps["high_res"].min() and maps["high_res"].max() <= 1
        allowed = {0, 255} | {int(k) + 1 for k in maps["keys"]}
        assert set(np.unique(ir)) <= allowed
        amn = load_maps(result / "amn_cam" / f"{i}.npz")
        np.testing.assert_array_equal(amn["keys"], maps["keys"])
        assert amn["high_res"].shape == (len(maps["keys"]) + 1,) + ir.shape  # background first
        assert amn["cam"].shape == (len(maps["keys"]) + 1,) + maps["cam"].shape[1:]
        assert 0 <= amn["high_res"].min() and amn["high_res"].max() <= 1
        assert set(np.unique(load_png(result / "amn_ir_label" / f"{i}.png"))) <= allowed
    records = [json.loads(line) for line in (result / "metrics.jsonl").read_text().splitlines()]
    for i in (tiny_toy / "ImageSets/Segmentation/train.txt").read_text().split():
        mask = load_png(result / "sem_seg" / f"{i}.png")
        keys = load_maps(result / "amn_cam" / f"{i}.npz")["keys"]
        assert mask.shape == load_png(tiny_toy / "SegmentationClass" / f"{i}.png").shape
        assert set(np.unique(mask)) <= {0} | {int(k) + 1 for k in keys}
    train_ids = (tiny_toy / "ImageSets/Segmentation/train.txt").read_text().split()
    ins = next(r for r in records if r["step"] == "eval_ins_seg")
    assert ins["n_images"] == len(train_ids) and ins["map"] == ins["map@0.5"]
    assert all(ins[k] is None or 0 <= ins[k] <= 1 for k in ("map@0.5", "map@0.25", "map@0.75"))
    coco = json.loads((result / "instances_train_pseudo.json").read_text())
    assert [im["name"] for im in coco["images"]] == train_ids
    assert len(coco["annotations"]) == sum(
        len(load_instances(result / "ins_seg" / f"{i}.npz")) for i in train_ids)
    sem = next(r for r in records if r["step"] == "eval_sem_seg")
    assert 0 <= sem["miou"] <= 1 and len(sem["iou"]) == n_classes + 1
    # the recorded mIoUs are those of the written files against the GT of the train list
    eval_ids = (tiny_toy / "ImageSets/Segmentation/train.txt").read_text().split()
    gt = {i: load_png(tiny_toy / "SegmentationClass" / f"{i}.png") for i in eval_ids}
    miou, _ = reference_ops.miou([(load_png(result / "sem_seg" / f"{i}.png"), gt[i])
                                  for i in eval_ids], n_classes + 1)
    assert sem["miou"] == pytest.approx(miou, abs=1e-12)
    for step, folder, first in (("eval_cam", "cam", 0), ("eval_amn_cam", "amn_cam", 1)):
        ev = next(r for r in records if r["step"] == step)
        assert 0 <= ev["miou"] <= 1 and len(ev["iou"]) == n_classes + 1
        assert len(ev["sweep"]) == 19
        assert max(ev["sweep"].values()) == pytest.approx(ev["best_miou"], abs=1e-4)
        assert ev["threshold"] == 0.25
        pairs = [(_seed_labels(load_maps(result / folder / f"{i}.npz"), first, 0.25), gt[i])
                 for i in eval_ids]
        assert ev["miou"] == pytest.approx(reference_ops.miou(pairs, n_classes + 1)[0], abs=1e-12)

    # a rerun keeps the trained networks, skips finished images and changes nothing; the
    # optional ground-truth DeepLab passes, given alone, join the whole chain
    before = (result / "cam" / f"{ids[0]}.npz").stat().st_mtime_ns
    again = run_sample.main(["--train_seg_gt_pass", "True", "--eval_seg_gt_pass", "True"])
    assert list(again["timings"])[-2:] == ["train_seg_gt", "eval_seg_gt"]
    records = [json.loads(line) for line in (result / "metrics.jsonl").read_text().splitlines()]
    trained_on = next(r for r in records if r["step"] == "train_seg_gt")["labels"]
    assert trained_on == str(tiny_toy / "SegmentationClass")
    assert 0 <= next(r for r in records if r["step"] == "eval_seg_gt")["miou"] <= 1
    assert (tmp_path / "sess" / "deeplabv2_gt.pth").is_file()
    val_ids = (tiny_toy / "ImageSets/Segmentation/val.txt").read_text().split()
    assert all((result / "seg_pred_gt" / f"{i}.png").is_file() for i in val_ids)
    report = (result / "report.md").read_text()
    assert "DeepLab on the ground truth (upper bound) mIoU" in report
    assert "DeepLab on pseudo-masks vs on the ground truth of the same images" in report
    assert "train_cam" not in again["timings"] and "train_seg" not in again["timings"]
    assert again["results"]["make_cam"]["written"] == 0
    assert again["results"]["cam_to_ir_label"]["written"] == 0
    assert again["results"]["make_ins_seg_labels"]["written"] == 0
    assert (result / "cam" / f"{ids[0]}.npz").stat().st_mtime_ns == before
    assert "| train_cam | earlier |" in (result / "report.md").read_text()
