"""The plan check before the first step (step/driver/plan.py, docs/README.md "Plan check"): a call
whose inputs are missing, uncovered or unloadable stops in well under a second with one message
naming every problem and the flags that fix it, having written no output."""
from __future__ import annotations

import os
import re
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import run_sample
from step.driver import plan
from step.driver.plan import PlanError, check_plan, verify
from step.driver.workspace import already_trained
from tests.tiny import REPO, flags, transcam_flags

# what start_run writes before the check: the run's record, log, dataset tags and locks
BOOKKEEPING = {"run_config.json", "runs.jsonl", "run.log", "sample_train_eval.log", ".dataset",
               ".run.lock"}


@pytest.fixture(scope="module")
def voc_like(tmp_path_factory) -> Path:
    """A VOC-layout root holding every id of voc12/train_aug, train and val (one small JPEG
    hard-linked 12,031 times), the GT of train and val, and VOC's split lists."""
    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    jpg, png = root / "one.jpg", root / "one.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(jpg)
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(png)
    lists = {name: (REPO / "voc12" / f"{name}.txt").read_text() for name in
             ("train_aug", "train", "val")}
    for i in set().union(*(text.split() for text in lists.values())):
        os.link(jpg, root / "JPEGImages" / f"{i}.jpg")
    for name in ("train", "val"):
        (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text(lists[name])
        for i in lists[name].split():
            os.link(png, root / "SegmentationClass" / f"{i}.png")
    return root


def _resolve(argv: list[str]):
    return run_sample.resolved(argv)


def _plan_error(argv: list[str]) -> tuple[str, float]:
    """run_sample.main's PlanError message and the seconds its check took (as it reports them:
    the call also resolves the flags and writes the run's record and log)."""
    start = time.perf_counter()
    with pytest.raises(PlanError) as info:
        run_sample.main(argv)
    seconds = float(re.search(r"found in ([0-9.]+) s", str(info.value)).group(1))
    assert seconds <= time.perf_counter() - start
    return str(info.value), seconds


def _written(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and p.name not in BOOKKEEPING
            and not p.name.endswith(".run.lock")]


def test_the_declarations_follow_the_pipeline_order():
    """Each pass reads only what an earlier pass (or the user) provides: no pass reads a path
    that a later pass writes."""
    steps = list(run_sample.PIPELINE.steps.values())
    for i, step in enumerate(steps):
        later = {f.flag for s in steps[i + 1:] for f in s.writes}
        assert not {f.flag for f in step.reads} & later, step.name


def test_train_amn_on_fresh_outputs_names_the_passes_that_make_its_labels(tiny_toy, r50,
                                                                          tmp_path):
    message, seconds = _plan_error(flags(tiny_toy, tmp_path, r50) + ["--train_amn_pass", "True"])
    assert seconds < 1.0
    assert "(1 problem," in message
    assert (f"{tmp_path / 'ir_label'}: no IR label for 24 of 24 ids of --train_list "
            f"{tiny_toy / 'ImageSets/Segmentation/train_aug.txt'} (e.g. toy_000000)") in message
    assert ("run --cam_to_ir_label_pass True (after --train_cam_pass True, --make_cam_pass "
            "True) first, or point --ir_label_out_dir at existing IR labels") in message
    assert _written(tmp_path) == []
    assert "plan: 1 problem found in" in (tmp_path / "run.log").read_text()


def test_voc_whole_chain_trap(voc_like, r50, tmp_path, monkeypatch):
    """VOC, no pass flags: make_sem_seg runs on --infer_list (train) but DeepLab trains on
    --seg_train_list (train_aug), and the ResNet-101 DeepLab has no initial weights: both are
    found over the 10,582 ids before any step (what the check costs: docs/measurements.md §9,
    a benchmark, not a timed test)."""
    monkeypatch.chdir(tmp_path)
    argv = ["--voc12_root", str(voc_like), "--backbone_weights", str(r50), "--device", "cpu"]
    message, _ = _plan_error(argv)
    assert "(2 problems," in message
    assert ("result/sem_seg: train_seg reads a pseudo-mask per id of --seg_train_list "
            f"{REPO / 'voc12/train_aug.txt'} (10582 ids), but make_sem_seg makes them in this "
            f"call for --infer_list {REPO / 'voc12/train.txt'} only: 9118 ids have none") in message
    assert (f"pass `--seg_train_list {REPO / 'voc12/train.txt'}` or "
            f"`--infer_list {REPO / 'voc12/train_aug.txt'}`") in message
    assert "no --seg_backbone_weights for the resnet101 DeepLab" in message
    assert "ImageNet ResNet-101" in message and "python -m net.deeplabv2 convert" in message
    assert _written(tmp_path) == []
    # masks of every train_aug id already on disk: the uncovered ids are there
    sem_seg = tmp_path / "result" / "sem_seg"
    sem_seg.mkdir()
    for i in (REPO / "voc12" / "train_aug.txt").read_text().split():
        (sem_seg / f"{i}.png").touch()
    (problem,) = check_plan(run_sample.PIPELINE, _resolve(argv))
    assert "--seg_backbone_weights" in problem


def test_labels_of_a_folder_no_pass_writes(tiny_toy, r50, tmp_path):
    """--seg_label_dir of its own: its masks come from make_sem_seg writing there."""
    message, seconds = _plan_error(flags(tiny_toy, tmp_path, r50) + [
        "--train_seg_pass", "True", "--seg_label_dir", str(tmp_path / "masks")])
    assert seconds < 1.0
    assert (f"{tmp_path / 'masks'}: no training label for 8 of 8 ids of --seg_train_list "
            f"{tiny_toy / 'ImageSets/Segmentation/train.txt'} (e.g. toy_000001), which train_seg "
            f"reads: run --make_sem_seg_pass True --sem_seg_out_dir {tmp_path / 'masks'} (after "
            f"--train_cam_pass True") in message


def test_missing_weight_files(tiny_toy, tmp_path):
    argv = flags(tiny_toy, tmp_path, tmp_path / "none.pth")
    message, seconds = _plan_error(argv + ["--train_cam_pass", "True", "--eval_seg_pass", "True"])
    assert seconds < 1.0
    assert f"--backbone_weights: backbone weights not found: {tmp_path / 'none.pth'}" in message
    assert (f"--seg_weights_name: checkpoint {tmp_path / 'sess/deeplabv2.pth'} not found: run "
            f"train_seg (--train_seg_pass True) first; train_seg needs --make_cam_pass True, "
            f"--cam_to_ir_label_pass True") in message  # train_cam runs in this call
    assert "--train_irn_pass True, --make_sem_seg_pass True first" in message
    assert _written(tmp_path) == []


def test_weight_files_with_wrong_keys(tiny_toy, tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(2)}, bad)
    message, seconds = _plan_error(flags(tiny_toy, tmp_path / "a", bad)
                                   + ["--train_cam_pass", "True"])
    assert seconds < 1.0
    assert f"--backbone_weights: {bad} is not a torchvision ResNet-50 state_dict" in message
    cam = tmp_path / "b" / "sess" / "res50_cam.pth"
    cam.parent.mkdir(parents=True)
    torch.save({"fc_edge1.0.weight": torch.zeros(2)}, cam)  # keys of another network
    message, seconds = _plan_error(flags(tiny_toy, tmp_path / "b", bad)
                                   + ["--make_cam_pass", "True"])
    assert seconds < 1.0
    assert f"--cam_weights_name: checkpoint {cam} does not fit net.resnet50_cam.Net" in message
    assert _written(tmp_path / "a") == [] and _written(tmp_path / "b") == [cam]


def test_a_consistent_whole_chain_passes(tiny_toy, r50, tmp_path, capsys):
    optional = [f"--{name}_pass True".split() for name, step in run_sample.PIPELINE.steps.items()
                if step.optional]
    transcam = transcam_flags(tmp_path)[:-2]  # without --train_cam_pass False
    args = _resolve(flags(tiny_toy, tmp_path, r50) + transcam + sum(optional, []))
    result = verify(run_sample.PIPELINE, args)
    assert result.problems == [] and result.steps == list(run_sample.PIPELINE.steps)
    out = capsys.readouterr().out
    assert f"plan: {len(run_sample.PIPELINE.steps)} steps, inputs checked in" in out
    assert "plan: outputs need ~" in out and " free on " in out
    assert list(tmp_path.iterdir()) == []


def test_a_whole_chain_rerun_checks_the_checkpoints_it_keeps(tiny_toy, r50, tmp_path):
    cam = tmp_path / "sess" / "res50_cam.pth"
    cam.parent.mkdir()
    torch.save({"fc_edge1.0.weight": torch.zeros(2)}, cam)
    args = _resolve(flags(tiny_toy, tmp_path, r50))
    assert already_trained(run_sample.PIPELINE, args, "train_cam")
    (problem,) = check_plan(run_sample.PIPELINE, args, kept=["train_cam"])  # make_cam reads the kept file
    assert problem.startswith(f"--cam_weights_name: checkpoint {cam} does not fit")
    assert check_plan(run_sample.PIPELINE, args) == []  # retrained in this call: not read


def test_missing_list_and_images(tiny_toy, r50, tmp_path):
    missing_images = tmp_path / "mine.txt"
    missing_images.write_text("toy_000000\n2007_999999\n")
    problems = check_plan(run_sample.PIPELINE, _resolve(
        flags(tiny_toy, tmp_path, r50) + ["--train_list", str(tmp_path / "nowhere.txt"),
                                          "--infer_list", str(missing_images),
                                          "--train_cam_pass", "True", "--make_sem_seg_pass",
                                          "True"]))
    assert problems[0] == (f"--train_list: list file {tmp_path / 'nowhere.txt'} not found: pass "
                           f"an existing file (e.g. voc12/train_aug.txt)")
    assert problems[1].startswith(f"--infer_list: 1 images of {missing_images} are missing")


def test_a_training_list_shorter_than_a_batch(tiny_toy, r50, tmp_path):
    problems = check_plan(run_sample.PIPELINE, _resolve(flags(tiny_toy, tmp_path, r50)
                                   + ["--train_cam_pass", "True", "--cam_batch_size", "32"]))
    assert problems == [f"train_cam: --train_list {tiny_toy / 'ImageSets/Segmentation/train_aug.txt'}"
                        f" has 24 images, fewer than one batch of --cam_batch_size 32; lower it"]


def test_outputs_larger_than_the_free_space(tiny_toy, r50, tmp_path, monkeypatch):
    monkeypatch.setattr(plan.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=10**6))
    (problem,) = check_plan(run_sample.PIPELINE, _resolve(flags(tiny_toy, tmp_path, r50)
                                     + ["--train_cam_pass", "True", "--make_cam_pass", "True"]))
    assert "the outputs need ~" in problem and "and only 1.0 MB are free" in problem
    assert f"{tmp_path / 'sess/res50_cam.pth'} ~" in problem


def test_the_size_estimate_scales_with_the_images(tiny_toy, r50, tmp_path):
    """CAM maps: images x mean pixels x classes x bytes per channel-pixel."""
    args = _resolve(flags(tiny_toy, tmp_path, r50) + ["--make_cam_pass", "True"])
    checker = plan._Checker(run_sample.PIPELINE, args)
    ids = (tiny_toy / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    pixels = np.mean([np.prod(Image.open(tiny_toy / "JPEGImages" / f"{i}.jpg").size)
                      for i in ids])
    classes = np.mean([checker.data.labels[i].sum() for i in ids])
    need = checker.output_bytes(["make_cam"])[str(tmp_path / "cam")]
    per_channel_pixel = plan.BYTES_PER_PIXEL["cam_out_dir"]
    assert need == pytest.approx(len(ids) * classes * per_channel_pixel * pixels, rel=0.1)
