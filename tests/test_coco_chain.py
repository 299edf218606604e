"""The COCO branch through run_sample.py on the tiny toy dataset in COCO layout: 80 classes,
the reference's COCO defaults, separate output folders, and no mixing with VOC outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

import run_sample
from coco14.dataloader import COCODataset
from data.toy_coco import CATEGORY_IDS, UNANNOTATED_EVERY, build_toy_coco
from misc.io.maps import load_maps
from misc.io.png import load_png
from step.driver.workspace import start_run
from tests.tiny import flags


@pytest.fixture(scope="module")
def tiny_coco(tiny_toy, tmp_path_factory):
    from coco14.prepare import prepare
    root = build_toy_coco(tiny_toy, tmp_path_factory.mktemp("coco") / "toy_coco")
    prepare(root)
    return root


def test_toy_coco_layout_and_prepared_labels(tiny_toy, tiny_coco):
    data = COCODataset(tiny_coco)
    assert data.n_classes == 80 and len(CATEGORY_IDS) == 80 and 12 not in CATEGORY_IDS
    toy_names = (tiny_toy / "class_names.txt").read_text().split()
    assert data.class_names[:len(toy_names)] == tuple(toy_names)
    train = (tiny_coco / "train14.txt").read_text().split()
    assert data.split_list("train") == tiny_coco / "train14.txt"
    assert data.image_path(train[0]).name == f"COCO_train2014_{train[0]}.jpg"
    toy_ids = (tiny_toy / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    for k, (cid, tid) in enumerate(zip(train, toy_ids)):
        voc_gt = load_png(tiny_toy / "SegmentationClass" / f"{tid}.png")
        coco_gt = load_png(data.gt_dir() / f"{cid}.png")
        if k % UNANNOTATED_EVERY == 1:  # annotations dropped: all background
            assert not data.labels[cid].any() and (coco_gt == 0).all()
            continue
        inside = voc_gt != 255  # the VOC void band is background in COCO
        np.testing.assert_array_equal(coco_gt[inside], voc_gt[inside])
        np.testing.assert_array_equal(np.nonzero(data.labels[cid])[0] + 1,
                                      np.setdiff1d(np.unique(voc_gt), [0, 255]))


def coco_flags(root, out, weights):
    argv = flags(root, out, weights)
    at = argv.index("--voc12_root")
    argv[at:at + 2] = ["--dataset", "coco14", "--coco14_root", str(root)]
    lists = {"--train_list": "train14", "--val_list": "val14", "--infer_list": "train14",
             "--seg_train_list": "train14"}
    for flag, name in lists.items():
        argv[argv.index(flag) + 1] = str(root / f"{name}.txt")
    return argv


def test_cam_stage_on_coco_with_80_classes(tiny_coco, tmp_path):
    weights = tmp_path / "r50.pth"
    from data.pretrain_backbone import ensure_pretrained_backbone
    ensure_pretrained_backbone(weights, steps=1)
    out = tmp_path / "out"
    run_sample.main(coco_flags(tiny_coco, out, weights) + [
        "--train_cam_pass", "True", "--make_cam_pass", "True", "--eval_cam_pass", "True"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    cam = next(r for r in records if r["step"] == "eval_cam")
    assert len(cam["iou"]) == 81 and 0 < cam["miou"] <= 1
    train = (tiny_coco / "train14.txt").read_text().split()
    empty = load_maps(out / "cam" / f"{train[1]}.npz")
    assert empty["keys"].size == 0 and empty["high_res"].shape[0] == 0  # all background
    assert (out / "cam" / ".dataset").read_text().strip() == "coco14"


def test_coco_outputs_default_to_their_own_folders_and_refuse_voc_ones(tiny_coco, fake_voc,
                                                                       tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = run_sample.resolved(
        ["--dataset", "coco14", "--coco14_root", str(tiny_coco)])
    assert args.cam_out_dir == "result/coco14/cam"
    assert args.cam_weights_name == "sess/coco14/res50_cam.pth"
    assert args.metrics_file == "result/coco14/metrics.jsonl"
    assert args.cocoann_out_dir == "result/coco14"
    assert (args.sem_seg_bg_thres, args.amn_conf_fg_thres, args.amn_conf_bg_thres,
            args.sem_seg_power, args.seg_num_iters) == (0.22, 0.45, 0.15, 1.3, 100000)
    voc = run_sample.resolved(["--voc12_root", str(fake_voc)])
    assert voc.cam_out_dir == "result/cam" and voc.sem_seg_bg_thres == 0.25
    (tmp_path / "result" / "cam").mkdir(parents=True)  # as a VOC make_cam leaves it
    start_run(run_sample.PIPELINE, voc)
    assert (tmp_path / "result" / "cam" / ".dataset").read_text() == "voc12\n"
    assert not (tmp_path / "result" / "amn_cam").exists()  # folders are not created early
    args.cam_out_dir = "result/cam"  # a COCO run pointed at VOC's CAMs
    with pytest.raises(ValueError, match="result/cam holds voc12 outputs.*--cam_out_dir"):
        start_run(run_sample.PIPELINE, args)
