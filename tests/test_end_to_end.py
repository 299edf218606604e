"""The four CAM-stage steps through run_sample.py on a tiny toy dataset."""
import json

import numpy as np
import pytest
import torch

import run_sample
from data.toy_dataset import ToyConfig, build_toy_dataset
from misc.artifacts import load_maps, load_png
from net.resnet50 import ResNet50


@pytest.fixture(scope="module")
def tiny_toy(tmp_path_factory):
    return build_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", ToyConfig.tiny())


def flags(root, out, weights):
    lists = root / "ImageSets" / "Segmentation"
    return ["--voc12_root", str(root), "--train_list", str(lists / "train_aug.txt"),
            "--val_list", str(lists / "val.txt"), "--infer_list", str(lists / "train.txt"),
            "--backbone_weights", str(weights), "--device", "cpu", "--num_workers", "1",
            "--cam_crop_size", "64", "--cam_resize_long", "56", "72", "--cam_batch_size", "8",
            "--cam_num_epoches", "1", "--cam_scales", "1.0", "0.5",
            "--cam_weights_name", str(out / "sess" / "res50_cam.pth"),
            "--cam_out_dir", str(out / "cam"), "--ir_label_out_dir", str(out / "ir_label"),
            "--metrics_file", str(out / "metrics.jsonl"), "--log_name", str(out / "run"),
            "--amn_crop_size", "64", "--amn_batch_size", "8", "--amn_num_epoches", "1",
            "--amn_weights_name", str(out / "sess" / "res50_amn.pth"),
            "--amn_cam_out_dir", str(out / "amn_cam"), "--amn_ir_label_out_dir",
            str(out / "amn_ir_label"), "--irn_crop_size", "80", "--irn_batch_size", "8",
            "--irn_num_epoches", "1", "--irn_weights_name", str(out / "sess" / "res50_irn.pth"),
            "--sem_seg_out_dir", str(out / "sem_seg"), "--exp_times", "4",
            "--seg_backbone", "resnet50", "--seg_crop_size", "32", "--seg_batch_size", "4",
            "--seg_num_iters", "2", "--seg_train_list", str(lists / "train.txt"),
            "--seg_weights_name", str(out / "sess" / "deeplabv2.pth"),
            "--seg_pred_out_dir", str(out / "seg_pred")]


def test_cam_stage_end_to_end(tiny_toy, tmp_path):
    weights = tmp_path / "r50.pth"
    torch.manual_seed(0)
    torch.save(ResNet50(num_classes=10).state_dict(), weights)
    out = run_sample.main(flags(tiny_toy, tmp_path, weights))
    assert list(out["timings"]) == ["train_cam", "make_cam", "eval_cam", "cam_to_ir_label",
                                    "train_amn", "make_amn_cam", "eval_amn_cam",
                                    "amn_cam_to_ir_label", "train_irn", "make_sem_seg_labels",
                                    "eval_sem_seg", "train_seg", "eval_seg"]

    ids = (tiny_toy / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    n_classes = len((tiny_toy / "class_names.txt").read_text().split())
    for i in ids:
        maps = load_maps(tmp_path / "cam" / f"{i}.npz")
        ir = load_png(tmp_path / "ir_label" / f"{i}.png")
        assert maps["high_res"].shape[1:] == ir.shape
        assert maps["cam"].shape[0] == maps["high_res"].shape[0] == len(maps["keys"])
        assert 0 <= maps["high_res"].min() and maps["high_res"].max() < 1
        allowed = {0, 255} | {int(k) + 1 for k in maps["keys"]}
        assert set(np.unique(ir)) <= allowed
        amn = load_maps(tmp_path / "amn_cam" / f"{i}.npz")
        np.testing.assert_array_equal(amn["keys"], maps["keys"])
        assert amn["high_res"].shape == (len(maps["keys"]) + 1,) + ir.shape  # background first
        assert amn["cam"].shape == (len(maps["keys"]) + 1,) + maps["cam"].shape[1:]
        assert 0 <= amn["high_res"].min() and amn["high_res"].max() <= 1
        assert set(np.unique(load_png(tmp_path / "amn_ir_label" / f"{i}.png"))) <= allowed
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for i in (tiny_toy / "ImageSets/Segmentation/train.txt").read_text().split():
        mask = load_png(tmp_path / "sem_seg" / f"{i}.png")
        keys = load_maps(tmp_path / "amn_cam" / f"{i}.npz")["keys"]
        assert mask.shape == load_png(tiny_toy / "SegmentationClass" / f"{i}.png").shape
        assert set(np.unique(mask)) <= {0} | {int(k) + 1 for k in keys}
    sem = next(r for r in records if r["step"] == "eval_sem_seg")
    assert 0 <= sem["miou"] <= 1 and len(sem["iou"]) == n_classes + 1
    for step in ("eval_cam", "eval_amn_cam"):
        ev = next(r for r in records if r["step"] == step)
        assert 0 <= ev["miou"] <= 1 and len(ev["iou"]) == n_classes + 1
        assert len(ev["sweep"]) == 19
        assert max(ev["sweep"].values()) == pytest.approx(ev["best_miou"], abs=1e-4)
    assert (tmp_path / "run_config.json").is_file()

    # a rerun of the inference steps skips finished images and changes nothing
    before = (tmp_path / "cam" / f"{ids[0]}.npz").stat().st_mtime_ns
    again = run_sample.main(flags(tiny_toy, tmp_path, weights) + [
        "--make_cam_pass", "True", "--cam_to_ir_label_pass", "True"])
    assert again["results"]["make_cam"]["written"] == 0
    assert again["results"]["cam_to_ir_label"]["written"] == 0
    assert (tmp_path / "cam" / f"{ids[0]}.npz").stat().st_mtime_ns == before


def test_step_before_its_input_is_a_clear_error(tiny_toy, tmp_path):
    weights = tmp_path / "r50.pth"
    torch.save(ResNet50().state_dict(), weights)
    with pytest.raises(FileNotFoundError, match="run train_cam"):
        run_sample.main(flags(tiny_toy, tmp_path, weights) + ["--make_cam_pass", "True"])


def test_missing_backbone_weights_is_a_clear_error(tiny_toy, tmp_path):
    with pytest.raises(FileNotFoundError, match="--backbone_weights"):
        run_sample.main(flags(tiny_toy, tmp_path, tmp_path / "missing.pth")
                        + ["--train_cam_pass", "True"])


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no JPEGImages"):
        run_sample.main(["--voc12_root", str(tmp_path / "nowhere"), "--eval_cam_pass", "True"])
