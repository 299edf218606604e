"""The plan check's list, batch, ground-truth, read and weight checks (step/driver/plan.py), pinned
where its mutation run (docs/mutation.md) found them untested: each message worked out from the
flags given, on the tiny toy root (tests/test_plan.py builds plans the same way)."""
from __future__ import annotations

import os
import re
import types
import warnings

import pytest
import torch

import run_sample
from misc.errors import MissingInput
from net import conformer
from net.deeplabv2 import SEG_WEIGHTS_HELP
from net.resnet50 import WEIGHTS_HELP
from step.driver import context, plan
from step.driver.plan import PlanError, check_plan, verify
from tests.tiny import bao_flags, flags, transcam_flags, write_fake_voc


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


# ---- ground-truth labels (--seg_label_dir gt), label folders of their own, coverage ----------
def test_ground_truth_training_labels_are_the_datasets_pngs_and_no_pass_makes_them(r50,
                                                                                    tmp_path):
    """--seg_label_dir gt: train_seg reads SegmentationClass/<id>.png. All there: no problem.
    One missing: named as a ground-truth label, with the fix of a folder no pass writes (never
    make_sem_seg writing pseudo-masks into the dataset's ground-truth folder)."""
    root, lists = _root(tmp_path)
    argv = flags(root, tmp_path / "out", r50) + ["--train_seg_pass", "True", "--seg_label_dir",
                                                 "gt", "--seg_batch_size", "2"]
    assert _problems(argv) == []
    (root / "SegmentationClass" / "img_002.png").unlink()
    assert _problems(argv) == [
        f"{root / 'SegmentationClass'}: no ground-truth label for 1 of 4 ids of --seg_train_list "
        f"{lists / 'train.txt'} (e.g. img_002), which train_seg reads; fix --seg_label_dir or "
        f"the list"]


def test_ground_truth_training_labels_the_dataset_cannot_give_name_the_pass(r50, tmp_path,
                                                                            monkeypatch):
    """--seg_label_dir gt when the dataset has no ground-truth folder (COCO before prepare):
    the dataset's message, prefixed with the pass that reads the labels."""
    root, _ = _root(tmp_path)
    args = run_sample.resolved(flags(root, tmp_path / "out", r50) + [
        "--train_seg_pass", "True", "--seg_label_dir", "gt", "--seg_batch_size", "2"])

    def no_gt(self):
        raise MissingInput("ground-truth folder G not found: run prepare")
    monkeypatch.setattr(type(context.dataset(args)), "gt_dir", no_gt)
    assert check_plan(run_sample.PIPELINE, args) == [
        "train_seg: ground-truth folder G not found: run prepare"]


def test_irn_labels_in_a_folder_of_their_own_are_read_as_pngs(tiny_toy, r50, tmp_path):
    """--irn_label_dir of a folder no pass writes, holding <id>.png for every id of
    --train_list: train_irn can run."""
    labels = tmp_path / "labels"
    labels.mkdir()
    for i in (tiny_toy / "ImageSets/Segmentation/train_aug.txt").read_text().split():
        (labels / f"{i}.png").touch()
    assert _problems(flags(tiny_toy, tmp_path, r50) + [
        "--train_irn_pass", "True", "--irn_label_dir", str(labels)]) == []


def test_train_irn_labels_of_the_amn_pass_name_no_folder_flag_to_add(tiny_toy, r50, tmp_path):
    """--irn_label_dir unset reads --amn_ir_label_out_dir, which amn_cam_to_ir_label writes
    already: the fix is that pass alone (no `--amn_ir_label_out_dir` to add), and the files are
    the AMN pass's (AMN IR labels)."""
    train_list = tiny_toy / "ImageSets/Segmentation/train_aug.txt"
    assert _problems(flags(tiny_toy, tmp_path, r50) + ["--train_irn_pass", "True"]) == [
        f"{tmp_path / 'amn_ir_label'}: no AMN IR label for 24 of 24 ids of --train_list "
        f"{train_list} (e.g. toy_000000), which train_irn reads: run --amn_cam_to_ir_label_pass "
        f"True (after --train_cam_pass True, --make_cam_pass True, --cam_to_ir_label_pass True, "
        f"--train_amn_pass True, --make_amn_cam_pass True) first, or point --irn_label_dir at "
        f"existing AMN IR labels"]


def test_the_coco_export_names_the_folder_flag_of_its_instance_labels(r50, tmp_path):
    """make_cocoann reads the instance labels (a read flag of its own, cocoann_source, that is
    no parser flag): the fix points --ins_seg_out_dir, the flag of the pass that writes them.
    With the AMN IR labels already there, train_irn needs nothing first, and make_ins_seg's
    other input, the CAMs, needs train_cam and make_cam: both branches are listed."""
    root, lists = _root(tmp_path)
    out = tmp_path / "out"
    (out / "amn_ir_label").mkdir(parents=True)
    for i in ("img_000", "img_001", "img_002", "img_003"):
        (out / "amn_ir_label" / f"{i}.png").touch()
    assert _problems(flags(root, out, r50) + ["--make_cocoann_pass", "True"]) == [
        f"{out / 'ins_seg'}: no instance label for 4 of 4 ids of --infer_list "
        f"{lists / 'train.txt'} (e.g. img_000), which make_cocoann reads: run --make_ins_seg_pass "
        f"True (after --train_cam_pass True, --make_cam_pass True, --train_irn_pass True) first, "
        f"or point --ins_seg_out_dir at existing instance labels"]


def test_an_evaluation_list_not_covered_by_this_calls_maps_names_the_list_to_run_on(r50,
                                                                                   tmp_path):
    """eval_cam scores train.txt (4 ids); make_cam runs in this call on --train_list (2 of
    them): 2 ids have none, the first img_002; the one fix is make_cam's list (the evaluation
    list is --chainer_eval_set's split, no list flag to pass)."""
    root, lists = _root(tmp_path)
    mine = tmp_path / "mine.txt"
    mine.write_text("img_000\nimg_001\n")
    out = tmp_path / "out"
    assert _problems(flags(root, out, r50) + [
        "--train_cam_pass", "True", "--make_cam_pass", "True", "--eval_cam_pass", "True",
        "--train_list", str(mine), "--cam_batch_size", "2"]) == [
        f"{out / 'cam'}: eval_cam reads a CAM per id of --chainer_eval_set train "
        f"({lists / 'train.txt'}) (4 ids), but make_cam makes them in this call for --train_list "
        f"{mine} only: 2 ids have none (e.g. img_002); pass `--train_list {lists / 'train.txt'}`"]


# ---- the passes a missing input needs first (upstream) --------------------------------------
def test_a_pass_made_in_this_call_is_skipped_and_the_next_input_still_traced(tiny_toy, r50,
                                                                             tmp_path):
    """amn_cam_to_ir_label's AMN maps are missing; make_amn_cam's checkpoint is made in this
    call (train_amn runs), its IR labels are not: the fix lists the passes that make those."""
    train_list = tiny_toy / "ImageSets/Segmentation/train_aug.txt"
    problems = _problems(flags(tiny_toy, tmp_path, r50) + [
        "--train_amn_pass", "True", "--amn_cam_to_ir_label_pass", "True"])
    assert problems[-1] == (
        f"{tmp_path / 'amn_cam'}: no AMN map for 24 of 24 ids of --train_list {train_list} "
        f"(e.g. toy_000000), which amn_cam_to_ir_label reads: run --make_amn_cam_pass True "
        f"(after --train_cam_pass True, --make_cam_pass True, --cam_to_ir_label_pass True) "
        f"first, or point --amn_cam_out_dir at existing AMN maps")


def test_a_checkpoints_trainer_whose_labels_are_there_needs_no_pass_first(tiny_toy, r50,
                                                                          tmp_path):
    """make_amn_cam with the IR labels on disk (<id>.png for every id) and no AMN checkpoint:
    train_amn alone is the fix, nothing before it."""
    labels = tmp_path / "ir_label"
    labels.mkdir()
    for i in (tiny_toy / "ImageSets/Segmentation/train_aug.txt").read_text().split():
        (labels / f"{i}.png").touch()
    assert _problems(flags(tiny_toy, tmp_path, r50) + ["--make_amn_cam_pass", "True"]) == [
        f"--amn_weights_name: checkpoint {tmp_path / 'sess/res50_amn.pth'} not found: run "
        f"train_amn (--train_amn_pass True) first"]


def test_labels_read_from_a_folder_a_later_pass_writes_are_reported_not_traced_forever(
        tiny_toy, r50, tmp_path):
    """--seg_label_dir at eval_seg's predictions: eval_seg needs train_seg's checkpoint, which
    needs those labels, a cycle: the check still ends with one problem about the labels."""
    preds = tmp_path / "seg_pred"
    problems = _problems(flags(tiny_toy, tmp_path, r50) + [
        "--train_seg_pass", "True", "--seg_label_dir", str(preds)])
    assert len(problems) == 1
    assert problems[0].startswith(f"{preds}: no prediction for 8 of 8 ids of --seg_train_list "
                                  f"{tiny_toy / 'ImageSets/Segmentation/train.txt'}")


def test_a_folder_flag_naming_a_checkpoint_file_calls_its_files_files(r50, tmp_path):
    """--cam_out_dir pointed at the CAM checkpoint's path (a user's slip): the pass that writes
    that path declares no noun for it, so the problem speaks of files."""
    root, lists = _root(tmp_path)
    out = tmp_path / "out"
    problems = _problems(flags(root, out, r50) + [
        "--eval_cam_pass", "True", "--cam_out_dir", str(out / "sess/res50_cam.pth")])
    assert problems[0].startswith(
        f"{out / 'sess/res50_cam.pth'}: no file for 4 of 4 ids of --chainer_eval_set train "
        f"({lists / 'train.txt'}) (e.g. img_000), which eval_cam reads")


# ---- weights --------------------------------------------------------------------------------
def test_a_missing_backbone_read_by_three_trainers_is_one_problem(r50, tmp_path):
    """train_cam, train_amn and train_irn all start from --backbone_weights: a missing file is
    reported once (by the first of them), not once per pass."""
    root, _ = _root(tmp_path)
    missing = tmp_path / "none.pth"
    problems = _problems(flags(root, tmp_path / "out", missing) + [
        "--train_cam_pass", "True", "--train_amn_pass", "True", "--train_irn_pass", "True",
        "--cam_batch_size", "4", "--amn_batch_size", "4", "--irn_batch_size", "4"])
    assert [p for p in problems if p.startswith("--backbone_weights")] == [
        f"--backbone_weights: backbone weights not found: {missing}. {WEIGHTS_HELP}"]


def test_the_backbone_and_a_resnet50_deeplabs_backbone_are_loaded_once(r50, tmp_path,
                                                                        monkeypatch):
    """The ResNet-50 DeepLab's backbone defaults to --backbone_weights: the same file into the
    same network, so the four trainers that read it (train_cam, train_amn, train_irn,
    train_seg_gt) cost one load."""
    root, _ = _root(tmp_path)
    loads = []
    real = plan.load_backbone_weights
    monkeypatch.setattr(plan, "load_backbone_weights",
                        lambda *a, **k: (loads.append(a[1]), real(*a, **k)))
    problems = _problems(flags(root, tmp_path / "out", r50) + [
        "--train_cam_pass", "True", "--train_amn_pass", "True", "--train_irn_pass", "True",
        "--train_seg_gt_pass", "True", "--cam_batch_size", "4", "--amn_batch_size", "4",
        "--irn_batch_size", "4"])
    assert [p for p in problems if "weights" in p] == []  # the labels are missing: not checked here
    assert loads == [str(r50)]


def test_the_deeplab_backbone_file_is_checked_as_a_torchvision_resnet(r50, tmp_path):
    """--seg_backbone_weights: a torchvision ResNet-50 file fits the ResNet-50 DeepLab; a
    missing one is named with the DeepLab's help (not as a checkpoint some pass makes)."""
    root, _ = _root(tmp_path)
    argv = flags(root, tmp_path / "out", r50) + ["--train_seg_gt_pass", "True",
                                                 "--train_cam_pass", "False"]
    assert _problems(argv + ["--seg_backbone_weights", str(r50)]) == []
    missing = tmp_path / "r101.pth"
    assert _problems(argv + ["--seg_backbone_weights", str(missing)]) == [
        f"--seg_backbone_weights: backbone weights not found: {missing}. {SEG_WEIGHTS_HELP}"]


def test_checking_starting_weights_on_the_meta_device_warns_of_nothing(r50, tmp_path):
    """The backbone and Conformer starting weights load into networks built on the meta
    device (a no-op copy, which torch warns about): a valid file passes, silently."""
    root, _ = _root(tmp_path)
    conformer_file = tmp_path / "conformer.pth"
    torch.save(conformer.Net(3, depth=3).state_dict(), conformer_file)
    argv = flags(root, tmp_path / "out", r50) + transcam_flags(tmp_path / "out")[:-4] + [
        "--conformer_weights", str(conformer_file), "--train_cam_pass", "True",
        "--train_transcam_pass", "True", "--cam_batch_size", "4"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _problems(argv) == []
    assert [str(w.message) for w in caught if "meta" in str(w.message)] == []


def test_an_unimportable_network_module_names_its_flag(r50, tmp_path):
    """--cam_network / --amn_network / --irn_network naming no module: each checkpoint's
    problem names the network flag and the module."""
    root, _ = _root(tmp_path)
    out = tmp_path / "out"
    (out / "sess").mkdir(parents=True)
    for name in ("res50_cam.pth", "res50_amn.pth", "res50_irn.pth"):
        (out / "sess" / name).touch()
    problems = _problems(flags(root, out, r50) + [
        "--make_cam_pass", "True", "--cam_network", "net.no_cam", "--make_amn_cam_pass", "True",
        "--amn_network", "net.no_amn", "--make_ins_seg_pass", "True", "--irn_network",
        "net.no_irn"])
    assert [p for p in problems if p.startswith("--") and "_weights_name" in p] == [
        f"--{net}_weights_name: --{net}_network net.no_{net}: cannot import it (No module named "
        f"'net.no_{net}'); pass a module path such as net.resnet50_cam"
        for net in ("cam", "amn", "irn")]


def test_each_checkpoint_is_loaded_into_the_network_of_the_pass_that_reads_it(r50, tmp_path,
                                                                              monkeypatch):
    """Every checkpoint flag a pass reads, as an (empty) file, with the loaders recorded: the
    network it goes into (its module, class and the traits that differ), the pass named as
    its maker, IRN's reference loss buffers dropped, BAO files through the BAO loader with
    --bao_infer_model. DeepLab predicts the background and the 3 classes: 4 outputs."""
    root, _ = _root(tmp_path)
    out, sess = tmp_path / "out", tmp_path / "out" / "sess"
    names = {"cam": "res50_cam.pth", "amn": "res50_amn.pth", "irn": "res50_irn.pth",
             "seg": "deeplabv2.pth", "seg_gt": "seg_gt.pth", "seg_cp": "seg_cp.pth",
             "transcam": "transcam.pth", "bao": "bao.pth", "bao_amn": "bao_amn.pth"}
    sess.mkdir(parents=True)
    for name in names.values():
        (sess / name).touch()
    loads = {}

    def kind(model) -> str:
        out = f"{type(model).__module__}.{type(model).__name__}"
        if hasattr(model, "with_bao_layers"):
            out += f"(bao={model.with_bao_layers}, depth={model.depth})"
        if "aspp.c1.bias" in model.state_dict():
            out += f"({model.state_dict()['aspp.c1.bias'].shape[0]} outputs)"
        return out

    monkeypatch.setattr(plan, "load_checkpoint", lambda model, path, made_by, ignore_prefixes:
                        loads.setdefault(os.path.basename(path),
                                         (kind(model), made_by, ignore_prefixes)))
    monkeypatch.setattr(plan, "load_bao_checkpoint", lambda model, path, which, made_by:
                        loads.setdefault(os.path.basename(path), (kind(model), made_by, which)))
    passes = ["make_cam", "make_amn_cam", "make_ins_seg", "eval_seg", "eval_seg_gt",
              "eval_seg_cp", "make_transcam", "make_bao", "make_bao_amn"]
    _problems(flags(root, out, r50) + transcam_flags(out)[:-2] + bao_flags(out) + sum(
        ([f"--{p}_pass", "True"] for p in passes), []) + sum(
        ([f"--{net}_weights_name", str(sess / name)] for net, name in names.items()), []) + [
        "--bao_infer_model", "teacher"])
    resnet = ("net.resnet50_cam.Net", "net.resnet50_amn.Net", "net.resnet50_irn.Net")
    deeplab = "net.deeplabv2.MSC(4 outputs)"
    assert loads == {
        "res50_cam.pth": (resnet[0], "train_cam (--train_cam_pass True)", ()),
        "res50_amn.pth": (resnet[1], "train_amn (--train_amn_pass True)", ()),
        "res50_irn.pth": (resnet[2], "train_irn (--train_irn_pass True)",
                          ("path_indices", "ind_from", "ind_to", "disp_target")),
        "deeplabv2.pth": (deeplab, "train_seg (--train_seg_pass True)", ()),
        "seg_gt.pth": (deeplab, "train_seg_gt (--train_seg_gt_pass True)", ()),
        "seg_cp.pth": (deeplab, "train_seg_cp (--train_seg_cp_pass True)", ()),
        "transcam.pth": ("net.conformer.Net(bao=False, depth=3)",
                         "train_transcam (--train_transcam_pass True)", ()),
        "bao.pth": ("net.conformer.Net(bao=True, depth=3)", "train_bao (--train_bao_pass True)",
                    "teacher"),
        "bao_amn.pth": (resnet[1], "train_bao_amn (--train_bao_amn_pass True)", "teacher")}
