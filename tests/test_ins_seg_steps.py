"""The instance steps through run_sample.main on the tiny toy dataset (docs/pipeline.md §3.9,
§3.12): train_irn's displacement-mean pass, make_ins_seg_labels, eval_ins_seg, make_cocoann.

Seeds and IR labels are made from the ground truth, so only train_irn is trained (one epoch on a
random backbone): the tests check the wiring and the files, not the quality."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import run_sample
from misc import imutils
from misc.eval.coco_export import coco_results
from misc.eval.ins_eval import load_gt_instances
from misc.io.maps import save_maps
from misc.io.png import load_png, save_png
from misc.irn.ins_seg import InstanceResult, load_instances, save_instances
from misc.irn.sem_seg import boundary_map
from net import resnet50_irn
from tests.tiny import flags


def ids_of(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def records(out: Path, step: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["step"] == step]


def gt_maps(root: Path, out: Path) -> None:
    """IR labels (the GT itself) for train_aug, CAMs and AMN maps (GT masks) for train."""
    labels = np.loadtxt(root / "cls_labels.csv", delimiter=",", skiprows=1, dtype=str)
    keys_of = {row[0]: np.flatnonzero(row[1:].astype(float)) for row in labels}
    for i in ids_of(root, "train_aug"):
        save_png(out / "amn_ir_label" / f"{i}.png", load_png(root / "SegmentationClass" / f"{i}.png"))
    for i in ids_of(root, "train"):
        gt, keys = load_png(root / "SegmentationClass" / f"{i}.png"), keys_of[i]
        high = np.stack([0.9 * (gt == k + 1) for k in keys]).astype(np.float32)
        save_maps(out / "cam" / f"{i}.npz", keys, high[:, ::4, ::4], high)
        amn = np.concatenate([1 - high.max(0, keepdims=True), high])
        save_maps(out / "amn_cam" / f"{i}.npz", keys, amn[:, ::4, ::4], amn)


@pytest.fixture(scope="module")
def chain(tiny_toy, tmp_path_factory, r50):
    """train_irn, make_ins_seg, eval_ins_seg, make_sem_seg and make_cocoann, once."""
    out = tmp_path_factory.mktemp("ins")
    gt_maps(tiny_toy, out)
    passes = ("train_irn", "make_ins_seg", "eval_ins_seg", "make_sem_seg", "make_cocoann")
    result = run_sample.main(flags(tiny_toy, out, r50)
                             + [a for p in passes for a in (f"--{p}_pass", "True")])
    return tiny_toy, out, r50, result


def test_steps_run_in_pipeline_order(chain):
    _, _, _, result = chain
    assert list(result["timings"]) == ["train_irn", "make_ins_seg_labels", "eval_ins_seg",
                                       "make_sem_seg_labels", "make_cocoann"]


def test_train_irn_stores_the_mean_displacement_of_top_left_crops(chain):
    """The checkpoint's mean_shift.running_mean is the raw mean displacement over the top-left
    --irn_crop_size crops of --infer_list (one batch of 8 here), computed directly."""
    root, out, _, _ = chain
    model = resnet50_irn.Net()
    model.load_state_dict(torch.load(out / "sess" / "res50_irn.pth", weights_only=True))
    stored = model.mean_shift.running_mean.clone()
    crops = []
    for i in ids_of(root, "train"):
        img = imutils.normalize(imutils.read_image(root / "JPEGImages" / f"{i}.jpg"))
        (img,) = imutils.crop_arrays([img], [0.0], 80, None)
        crops.append(torch.from_numpy(imutils.hwc_to_chw(img)))
    model.mean_shift.running_mean.zero_()
    with torch.no_grad():
        want = model.eval()(torch.stack(crops))[1].mean(dim=(0, 2, 3))
    assert stored.abs().sum() > 0
    torch.testing.assert_close(stored, want, rtol=1e-4, atol=1e-6)
    assert records(out, "train_irn")[-1]["displacement_mean"] == pytest.approx(
        want.tolist(), abs=1e-5)


def test_pseudo_masks_do_not_depend_on_the_mean_shift(chain, tmp_path):
    """Only the displacement output subtracts the mean: the boundary map, and so every
    make_sem_seg pseudo-mask, is the same with another mean."""
    root, out, weights, _ = chain
    state = torch.load(out / "sess" / "res50_irn.pth", weights_only=True)
    model = resnet50_irn.Net()
    model.load_state_dict(state)
    img = torch.randn(3, 40, 52, generator=torch.Generator().manual_seed(0))
    before = boundary_map(model.eval(), img, 64)
    model.mean_shift.running_mean.fill_(3.7)
    assert torch.equal(boundary_map(model, img, 64), before)

    shifted = tmp_path / "irn_shifted.pth"
    model.mean_shift.running_mean.copy_(torch.tensor([5.0, -4.0]))
    torch.save(model.state_dict(), shifted)  # every name of the shared buffer changed
    run_sample.main(flags(root, out, weights) + [
        "--make_sem_seg_pass", "True", "--irn_weights_name", str(shifted),
        "--sem_seg_out_dir", str(tmp_path / "sem_seg"), "--metrics_file",
        str(tmp_path / "metrics.jsonl"), "--log_name", str(tmp_path / "run")])
    for i in ids_of(root, "train"):
        np.testing.assert_array_equal(load_png(tmp_path / "sem_seg" / f"{i}.png"),
                                      load_png(out / "sem_seg" / f"{i}.png"))


def test_instance_labels_and_their_evaluation(chain):
    root, out, weights, result = chain
    ids = ids_of(root, "train")
    made = result["results"]["make_ins_seg_labels"]
    assert made["written"] == len(ids)
    labels = np.loadtxt(root / "cls_labels.csv", delimiter=",", skiprows=1, dtype=str)
    keys_of = {row[0]: set(np.flatnonzero(row[1:].astype(float)).tolist()) for row in labels}
    for i in ids:
        res = load_instances(out / "ins_seg" / f"{i}.npz")
        assert res.labels.shape == load_png(root / "SegmentationClass" / f"{i}.png").shape
        assert set(res.cls.tolist()) <= keys_of[i]
        assert ((0 <= res.score) & (res.score <= 1)).all()
    rec = records(out, "eval_ins_seg")[-1]
    assert rec["split"] == "train" and rec["n_images"] == len(ids)
    assert rec["map"] == rec["map@0.5"]
    for t in ("0.5", "0.25", "0.75"):
        assert rec[f"map@{t}"] is None or 0 <= rec[f"map@{t}"] <= 1
        assert len(rec[f"ap@{t}"]) == 3
    report = (out / "report.md").read_text()
    assert "instance mAP@0.5" in report and "| make_cocoann |" in report

    again = run_sample.main(flags(root, out, weights) + ["--make_ins_seg_pass", "True"])
    assert again["results"]["make_ins_seg_labels"]["written"] == 0  # finished images skipped


def gt_as_predictions(root: Path, folder: Path) -> int:
    """The GT instances of the train ids as instance files (score 1); returns their count."""
    n = 0
    for i in ids_of(root, "train"):
        gt = load_gt_instances(root / "SegmentationObject" / f"{i}.png",
                               root / "SegmentationClass" / f"{i}.png")
        save_instances(folder / f"{i}.npz", InstanceResult(
            gt.labels.astype(np.uint16), np.ones(gt.cls.size, np.float32), gt.cls))
        n += gt.cls.size
    return n


def test_ground_truth_scores_one_and_exports_to_coco(chain, tmp_path):
    """GT instances as predictions: eval_ins_seg gives mAP 1 at every threshold; make_cocoann's
    file loads with pycocotools and COCOeval of it against itself gives AP 1."""
    root, _, weights, _ = chain
    n_gt = gt_as_predictions(root, tmp_path / "ins_seg")
    result = run_sample.main(flags(root, tmp_path, weights) + [
        "--eval_ins_seg_pass", "True", "--make_cocoann_pass", "True"])
    rec = result["results"]["eval_ins_seg"]
    assert rec["map@0.5"] == rec["map@0.25"] == rec["map@0.75"] == pytest.approx(1.0)

    path = tmp_path / "instances_train_pseudo.json"
    assert result["results"]["make_cocoann"]["file"] == str(path)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        ev = COCOeval(coco, coco.loadRes(coco_results(json.loads(path.read_text()))), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert len(coco.getImgIds()) == len(ids_of(root, "train")) and len(coco.getAnnIds()) == n_gt
    assert ev.stats[0] == pytest.approx(1.0)
    first = coco.loadImgs(1)[0]
    assert first["name"] == ids_of(root, "train")[0] and first["file_name"].endswith(".jpg")
    gt = load_gt_instances(root / "SegmentationObject" / f"{first['name']}.png",
                           root / "SegmentationClass" / f"{first['name']}.png")
    masks = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=1))]
    assert [m.sum() for m in masks] == [(gt.labels == k + 1).sum() for k in range(gt.cls.size)]


def test_export_from_semantic_masks(chain, tmp_path):
    root, out, weights, _ = chain
    result = run_sample.main(flags(root, tmp_path, weights) + [
        "--make_cocoann_pass", "True", "--cocoann_from_sem_seg", "True",
        "--sem_seg_out_dir", str(out / "sem_seg")])
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "instances_train_pseudo.json"))
    assert result["results"]["make_cocoann"]["annotations"] == len(coco.getAnnIds()) > 0
    assert {a["score"] for a in coco.loadAnns(coco.getAnnIds())} == {1.0}


def test_no_instance_ground_truth_skips_the_evaluation(chain, tmp_path):
    root, out, weights, _ = chain
    bare = shutil.copytree(root, tmp_path / "toy",
                           ignore=shutil.ignore_patterns("SegmentationObject"))
    result = run_sample.main(flags(bare, tmp_path, weights) + [
        "--eval_ins_seg_pass", "True", "--ins_seg_out_dir", str(out / "ins_seg")])
    assert result["results"]["eval_ins_seg"] == {}
    assert not (tmp_path / "metrics.jsonl").is_file() or not records(tmp_path, "eval_ins_seg")


def test_ppmg_final_masks_record_their_rule_and_the_comparison(chain, tmp_path):
    """Plug point (iii) through make_sem_seg_labels (docs/pmm.md §8): PPMG masks, the record
    of PPMG against the constant sweep on the evaluation split, a rerun that keeps them, and a
    changed alpha that remakes them."""
    root, out, weights, _ = chain
    sem = tmp_path / "sem_seg"
    argv = flags(root, out, weights) + [
        "--make_sem_seg_pass", "True", "--sem_seg_ppmg", "True", "--sem_seg_out_dir", str(sem),
        "--metrics_file", str(tmp_path / "metrics.jsonl"), "--log_name", str(tmp_path / "run")]
    run_sample.main(argv)
    (rec,) = records(tmp_path, "make_sem_seg")
    ids = ids_of(root, "train")
    assert rec["images"] == len(ids) and rec["split"] == "train"
    best = rec["sweep"][f"{rec['best_threshold']:.2f}"]  # rounded to 5 digits in the record
    assert best == max(rec["sweep"].values()) and rec["best_miou"] == pytest.approx(best, abs=1e-5)
    masks = {i: load_png(sem / f"{i}.png") for i in ids}
    assert any(m.any() for m in masks.values())
    stamp = {i: (sem / f"{i}.png").stat().st_mtime_ns for i in ids}
    run_sample.main(argv)  # same flags: every mask kept, nothing made, no comparison
    assert {i: (sem / f"{i}.png").stat().st_mtime_ns for i in ids} == stamp
    assert len(records(tmp_path, "make_sem_seg")) == 1
    run_sample.main(argv + ["--sem_seg_ppmg_alpha", "58.4"])  # crossing 0.05: more foreground
    assert all((sem / f"{i}.png").stat().st_mtime_ns != stamp[i] for i in ids)
    assert sum((load_png(sem / f"{i}.png") > 0).sum() for i in ids) >= \
        sum((m > 0).sum() for m in masks.values())
    assert len(records(tmp_path, "make_sem_seg")) == 2
