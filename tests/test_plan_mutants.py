"""The plan check's list, batch, ground-truth, read and weight checks (step/driver/plan.py), pinned
where its mutation run (docs/mutation.md) found them untested: each message worked out from the
flags given, on the tiny toy root (tests/test_plan.py builds plans the same way)."""
from __future__ import annotations

import re
import types

import pytest

import run_sample
from misc.errors import MissingInput
from net.resnet50 import WEIGHTS_HELP
from step.driver import context, plan
from step.driver.plan import PlanError, check_plan, verify
from tests.tiny import flags, write_fake_voc


def _problems(argv: list[str]) -> list[str]:
    return check_plan(run_sample.PIPELINE, run_sample.resolved(argv))


def test_train_irn_labels_in_a_folder_of_their_own_are_made_by_the_amn_label_pass(
        tiny_toy, r50, tmp_path):
    """--irn_label_dir names a folder no pass writes: the fix is the AMN IR-label pass
    writing there (--amn_ir_label_out_dir), after the passes it needs."""
    labels = tmp_path / "labels"
    train_list = tiny_toy / "ImageSets/Segmentation/train_aug.txt"
    problems = _problems(flags(tiny_toy, tmp_path, r50)
                         + ["--train_irn_pass", "True", "--irn_label_dir", str(labels)])
    assert problems == [
        f"{labels}: no IR label for 24 of 24 ids of --train_list {train_list} (e.g. toy_000000), "
        f"which train_irn reads: run --amn_cam_to_ir_label_pass True --amn_ir_label_out_dir "
        f"{labels} (after --train_cam_pass True, --make_cam_pass True, --cam_to_ir_label_pass "
        f"True, --train_amn_pass True, --make_amn_cam_pass True) first, or point --irn_label_dir "
        f"at existing IR labels"]


def test_verify_raises_and_logs_every_problem_with_their_count(tiny_toy, tmp_path, capsys,
                                                               monkeypatch):
    """Two problems (a missing backbone file, a batch larger than the list): the log line and
    the error both say "2 problems", and the error lists each on its own "  - " line."""
    argv = flags(tiny_toy, tmp_path, tmp_path / "none.pth") + [
        "--train_cam_pass", "True", "--cam_batch_size", "32"]
    with pytest.raises(PlanError) as info:
        verify(run_sample.PIPELINE, run_sample.resolved(argv))
    train_list = tiny_toy / "ImageSets/Segmentation/train_aug.txt"
    first, *rest = str(info.value).split("\n")
    assert re.fullmatch(r"this call cannot run as given \(2 problems, found in \d+\.\d\d s before "
                        r"the first step; no step ran\):", first)
    assert rest == [
        f"  - train_cam: --train_list {train_list} has 24 images, fewer than one batch of "
        f"--cam_batch_size 32; lower it",
        f"  - --backbone_weights: backbone weights not found: {tmp_path / 'none.pth'}. "
        f"{WEIGHTS_HELP}"]
    assert re.fullmatch(r"plan: 2 problems found in \d+\.\d\d s; no step ran\n",
                        capsys.readouterr().out)


def test_missing_ground_truth_is_reported_once_per_list_with_its_count(r50, tmp_path):
    """Two evaluations score the same list (eval_cam, eval_amn_cam): one problem for it, with
    the count of ids lacking a PNG, the first of them, and the list as its flag names it."""
    root = tmp_path / "voc"
    write_fake_voc(root, [(16, 20)] * 4)
    (root / "SegmentationClass" / "img_002.png").unlink()
    problems = _problems(flags(root, tmp_path / "out", r50)
                         + ["--eval_cam_pass", "True", "--eval_amn_cam_pass", "True"])
    gt = [p for p in problems if "ground truth" in p]
    assert gt == [f"{root / 'SegmentationClass'}: no ground truth for 1 of 4 ids of "
                  f"--chainer_eval_set train ({root / 'ImageSets/Segmentation/train.txt'}) "
                  f"(e.g. img_002), which eval_cam scores against; fix the list or the root"]


def test_a_batch_that_does_not_split_over_the_processes(tiny_toy, r50, tmp_path, monkeypatch):
    """Under 3 processes a global batch of 8 is refused, one of 6 is not (8 % 3 = 2)."""
    monkeypatch.setattr(plan.dist, "world", lambda: (0, 3))
    argv = flags(tiny_toy, tmp_path, r50) + ["--train_cam_pass", "True"]
    assert _problems(argv + ["--cam_batch_size", "8"]) == [
        "train_cam: --cam_batch_size 8 does not split over the 3 processes; pick a multiple of 3"]
    assert _problems(argv + ["--cam_batch_size", "6"]) == []


def test_problems_of_every_check_are_collected_in_order(r50, tmp_path, monkeypatch):
    """One call with a problem of each kind: the device, a list, a batch, the ground truth, a
    read and the disk, each kept (none replaces the ones found before it), in that order."""
    root = tmp_path / "voc"
    write_fake_voc(root, [(16, 20)] * 4)
    (root / "SegmentationClass" / "img_002.png").unlink()
    monkeypatch.setattr(plan.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=1))
    out, lists = tmp_path / "out", root / "ImageSets/Segmentation"
    problems = _problems(flags(root, out, r50) + [
        "--train_cam_pass", "True", "--eval_cam_pass", "True", "--device", "cuda",
        "--val_list", str(tmp_path / "nowhere.txt")])
    assert len(problems) == 6
    assert [p.split(":")[0] for p in problems[:5]] == [
        "--device cuda", "--val_list", "train_cam", str(root / "SegmentationClass"),
        str(out / "cam")]
    assert f"({out / 'sess/res50_cam.pth'} ~0.3 GB) and only 0.0 MB are free" in problems[5]
    assert problems[0] == ("--device cuda: this machine has no usable CUDA device; pass "
                           "--device cpu (or auto)")
    assert problems[2] == (f"train_cam: --train_list {lists / 'train_aug.txt'} has 4 images, "
                           f"fewer than one batch of --cam_batch_size 8; lower it")
    assert problems[4] == (f"{out / 'cam'}: no CAM for 4 of 4 ids of --chainer_eval_set train "
                           f"({lists / 'train.txt'}) (e.g. img_000), which eval_cam reads: run "
                           f"--make_cam_pass True first, or point --cam_out_dir at existing CAMs")


def test_verify_logs_the_steps_it_checked(r50, tmp_path, capsys):
    """A plan that can run: the last log line counts its passes (train_cam alone: 1)."""
    root = tmp_path / "voc"
    write_fake_voc(root, [(16, 20)] * 4)
    argv = flags(root, tmp_path / "out", r50) + ["--train_cam_pass", "True",
                                                 "--cam_batch_size", "4"]
    assert verify(run_sample.PIPELINE, run_sample.resolved(argv)).steps == ["train_cam"]
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(r"plan: 1 steps, inputs checked in \d+\.\d\d s", last)


def _root(tmp_path, n: int = 4):
    root = tmp_path / "voc"
    write_fake_voc(root, [(16, 20)] * n)
    return root, root / "ImageSets/Segmentation"


def test_ids_without_image_labels_are_named_without_the_key_errors_quotes(r50, tmp_path):
    """An id with an image but no row in cls_labels.csv, on a list train_cam reads labels of:
    the labels' own message (a KeyError's args[0], not its quoted str())."""
    root, lists = _root(tmp_path)
    (root / "JPEGImages" / "extra.jpg").hardlink_to(root / "JPEGImages" / "img_000.jpg")
    mine = tmp_path / "mine.txt"
    mine.write_text("img_000\nextra\nimg_001\nimg_002\n")
    problems = _problems(flags(root, tmp_path / "out", r50) + [
        "--train_cam_pass", "True", "--train_list", str(mine), "--cam_batch_size", "4"])
    assert problems == [f"--train_list: 1 ids of {mine} have no image-level label (first: "
                        f"['extra']); the list and the class-label file do not match"]


def test_an_undecodable_list_is_reported_with_the_decoders_whole_message(r50, tmp_path):
    """A list that is not UTF-8: the ValueError's str(), not its first argument."""
    root, _ = _root(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfeimg_000\n")
    problems = _problems(flags(root, tmp_path / "out", r50) + [
        "--train_cam_pass", "True", "--train_list", str(bad), "--cam_batch_size", "4"])
    assert problems == ["--train_list: 'utf-8' codec can't decode byte 0xff in position 0: "
                        "invalid start byte"]


def test_an_unreadable_scored_list_is_reported_by_the_list_check_alone(r50, tmp_path):
    """eval_seg scores --seg_eval_list; when that list is missing, the list check reports it
    and the ground-truth check skips it (no crash, no second problem about it)."""
    root, _ = _root(tmp_path)
    problems = _problems(flags(root, tmp_path / "out", r50) + [
        "--eval_seg_pass", "True", "--seg_eval_list", str(tmp_path / "nowhere.txt")])
    assert f"--seg_eval_list: list file {tmp_path / 'nowhere.txt'} not found: pass an existing " \
           f"file (e.g. voc12/train_aug.txt)" in problems
    assert not [p for p in problems if "ground truth" in p]


def test_a_ground_truth_folder_the_dataset_cannot_give_names_the_evaluation(r50, tmp_path,
                                                                           monkeypatch):
    """The dataset's gt_dir raising (COCO's before prepare: MissingInput) becomes one problem
    per list, prefixed with the pass that scores against it."""
    root, _ = _root(tmp_path)
    args = run_sample.resolved(flags(root, tmp_path / "out", r50) + ["--eval_cam_pass", "True"])

    def no_gt(self):
        raise MissingInput("ground-truth folder G not found: run prepare")
    monkeypatch.setattr(type(context.dataset(args)), "gt_dir", no_gt)
    problems = check_plan(run_sample.PIPELINE, args)
    assert problems[0] == "eval_cam: ground-truth folder G not found: run prepare"


def test_a_partial_read_is_not_required_to_cover_its_list(r50, tmp_path):
    """eval_ins_seg scores the instance files there are (its read is partial): with none on
    disk and no pass making them, the plan has no problem; eval_cam's full read has one."""
    root, _ = _root(tmp_path)
    argv = flags(root, tmp_path / "out", r50)
    assert _problems(argv + ["--eval_ins_seg_pass", "True"]) == []
    (problem,) = _problems(argv + ["--eval_cam_pass", "True"])
    assert problem.startswith(f"{tmp_path / 'out/cam'}: no CAM for 4 of 4 ids")


def test_ids_off_the_writers_list_name_the_list_to_make_them_on(r50, tmp_path):
    """eval_cam scores train.txt's 4 ids, but make_cam runs on --train_list (2 of them here):
    the fix names the list to run make_cam on, after the pass its weights need."""
    root, lists = _root(tmp_path)
    mine = tmp_path / "mine.txt"
    mine.write_text("img_000\nimg_001\n")
    out = tmp_path / "out"
    problems = _problems(flags(root, out, r50) + ["--eval_cam_pass", "True",
                                                  "--train_list", str(mine)])
    assert problems == [
        f"{out / 'cam'}: no CAM for 4 of 4 ids of --chainer_eval_set train "
        f"({lists / 'train.txt'}) (e.g. img_000), which eval_cam reads: run --make_cam_pass True "
        f"--train_list {lists / 'train.txt'} (after --train_cam_pass True) first, or point "
        f"--cam_out_dir at existing CAMs"]


def test_a_missing_checkpoint_names_the_passes_its_trainer_needs_first(r50, tmp_path):
    """make_sem_seg alone: IRN's checkpoint is missing and train_irn's labels too, so the
    fix lists the six passes before train_irn, in pipeline order."""
    root, _ = _root(tmp_path)
    out = tmp_path / "out"
    problems = _problems(flags(root, out, r50) + ["--make_sem_seg_pass", "True"])
    assert problems[0] == (
        f"--irn_weights_name: checkpoint {out / 'sess/res50_irn.pth'} not found: run train_irn "
        f"(--train_irn_pass True) first; train_irn needs --train_cam_pass True, --make_cam_pass "
        f"True, --cam_to_ir_label_pass True, --train_amn_pass True, --make_amn_cam_pass True, "
        f"--amn_cam_to_ir_label_pass True first")
