"""Bad input, second round (docs/faults.md): what a call refuses before any step runs (flag
values outside their domains, unknown flags, unreadable images, outputs in use by another run),
what it says without a traceback, and what it reports without failing (pictures it could not
draw, flags no pass of the call reads)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import run_sample
from misc.imutils import image_problem
from misc.io import lock
from misc.io.maps import save_maps
from misc.io.records import REMAKE_NAME
from net import resnet50_cam
from step.driver.flags import declared
from step.driver.workspace import command_line
from tests.tiny import REPO, flags

NUMERIC = (int, float)


def test_every_numeric_flag_has_a_domain_and_every_profile_is_inside_them(fake_voc):
    flags_ = declared(run_sample.PIPELINE.steps.values())
    assert [n for n, f in flags_.items()
            if f.type in NUMERIC and f.domain is None and f.choices is None] == []
    for profile in ("voc12", "coco14", "toy"):  # parse checks every value it resolves
        run_sample.resolved(["--voc12_root", str(fake_voc), "--profile", profile])


@pytest.mark.parametrize("given, said", [
    (["--cam_eval_thres", "1.5"], r"--cam_eval_thres 1.5: outside its domain \[0, 1\]"),
    (["--cam_eval_thres", "-1"], r"--cam_eval_thres -1.0: outside its domain \[0, 1\]"),
    (["--sweep_thres", "0.2", "1.2"], r"--sweep_thres 0.2 1.2: outside its domain \[0, 1\]"),
    (["--cam_batch_size", "0"], r"--cam_batch_size 0: outside its domain >= 1"),
    (["--cam_learning_rate", "0"], r"--cam_learning_rate 0.0: outside its domain > 0"),
    (["--cam_resize_long", "640", "320"], r"--cam_resize_long 640 320: outside its domain "
                                          r">= 1, not decreasing"),
    (["--poly_momentum", "-0.5"], r"--poly_momentum -0.5: outside its domain \[0, 1\) or -1"),
])
def test_a_value_outside_its_flags_domain_stops_the_call_before_anything_is_written(
        fake_voc, tmp_path, r50, given, said):
    argv = flags(fake_voc, tmp_path / "out", r50) + ["--eval_cam_pass", "True"] + given
    with pytest.raises(ValueError, match=said):
        run_sample.main(argv)
    assert not (tmp_path / "out").exists()


def test_the_reference_quirk_value_of_poly_momentum_is_in_its_domain(fake_voc):
    args = run_sample.resolved(["--voc12_root", str(fake_voc), "--poly_momentum", "-1"])
    assert args.poly_momentum is None  # the reference's momentum = weight decay


def test_a_config_value_outside_its_domain_is_refused(fake_voc, tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text("amn_conf_fg_thres = 45\n")
    with pytest.raises(ValueError, match=r"--amn_conf_fg_thres 45.0: outside its domain \[0, 1\]"):
        run_sample.resolved(["--voc12_root", str(fake_voc), "--config", str(config)])


def _jpeg(path, size=(40, 30)) -> bytes:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path, quality=90)
    return path.read_bytes()


def test_image_problem_reads_the_header_and_the_end_marker(tmp_path):
    path = tmp_path / "a.jpg"
    whole = _jpeg(path)
    assert image_problem(path) is None
    path.write_bytes(whole + b"\0" * 100)  # some cameras append data after the end marker
    assert image_problem(path) is None
    path.write_bytes(whole[:len(whole) * 2 // 3])  # header intact, pixels cut off
    assert image_problem(path) == "a JPEG file cut short (no end marker)"
    path.write_bytes(b"<html>not found</html>")
    assert image_problem(path).startswith("not a readable image")
    assert image_problem(tmp_path / "none.jpg") == "missing"
    png = tmp_path / "b.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    assert image_problem(png) is None
    png.write_bytes(png.read_bytes()[:-12])  # without its IEND chunk
    assert image_problem(png) == "a PNG file cut short (no end marker)"


def _cam_checkpoint(path) -> None:
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet50_cam.Net(3).state_dict(), path)


def test_a_truncated_image_stops_an_overwrite_before_any_map_is_replaced(fake_voc, tmp_path, r50):
    out = tmp_path / "out"
    argv = flags(fake_voc, out, r50) + ["--make_cam_pass", "True"]
    _cam_checkpoint(out / "sess" / "res50_cam.pth")
    run_sample.main(argv)
    maps = {p: p.read_bytes() for p in (out / "cam").glob("*.npz")}
    victim = fake_voc / "JPEGImages" / "img_002.jpg"
    victim.write_bytes(victim.read_bytes()[:-300])
    with pytest.raises(ValueError, match=f"1 images of .*train_aug.txt cannot be read "
                                         f".{victim}: a JPEG file cut short"):
        run_sample.main(argv + ["--overwrite", "True"])
    assert maps and {p: p.read_bytes() for p in (out / "cam").glob("*.npz")} == maps


def test_a_remade_folders_message_counts_the_files_kept_and_made(fake_voc, tmp_path, r50, capsys):
    out = tmp_path / "out"
    argv = flags(fake_voc, out, r50) + ["--make_cam_pass", "True"]
    _cam_checkpoint(out / "sess" / "res50_cam.pth")
    run_sample.main(argv)
    (out / "cam" / "img_001.npz").unlink()  # as a killed run leaves it
    capsys.readouterr()
    run_sample.main(argv)
    said = capsys.readouterr().out
    assert "keeping its 3 files of the 4 of train_aug.txt, making the other 1" in said
    assert "1 maps written, 3 already done" in said
    # a remake (--overwrite True) killed after one file: the others are stale, and redone
    (out / "cam" / REMAKE_NAME).touch()
    os.utime(out / "cam" / "img_002.npz", ns=(time.time_ns() + 10**9,) * 2)
    run_sample.main(argv)
    said = capsys.readouterr().out
    assert "keeping its 1 files of the 4 of train_aug.txt, making the other 3" in said
    assert "3 maps written, 1 already done" in said


# holds the lock of one output, as a run of make_cam does, until killed
HOLD_OUTPUT = """import sys, time
from misc.io.lock import lock_folders
lock_folders([], "python run_sample.py --make_cam_pass True", outputs=[sys.argv[1]])
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_run_is_refused_an_output_in_use_whatever_its_metrics_file(fake_voc, tmp_path, r50):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_OUTPUT, str(out / "cam")], cwd=REPO,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = flags(fake_voc, out, r50) + ["--make_cam_pass", "True", "--overwrite", "True",
                                            "--metrics_file", str(tmp_path / "other" / "m.jsonl")]
        with pytest.raises(lock.FolderInUse, match=f"{out / 'cam'} is in use by another run: pid "
                                                   f"{holder.pid} .*Or give this run another "
                                                   f"--cam_out_dir"):
            run_sample.main(argv)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        lock.release()


def _fake_cams(root, folder) -> None:
    """A CAM file of class 0 (the fake VOC's) for each image of the train list, as make_cam
    writes them: the top half of the image active."""
    folder.mkdir(parents=True)
    for i in (root / "ImageSets/Segmentation/train.txt").read_text().split():
        w, h = Image.open(root / "JPEGImages" / f"{i}.jpg").size
        high = np.zeros((1, h, w), np.float32)
        high[0, : h // 2] = 1.0
        save_maps(folder / f"{i}.npz", np.array([0]), high[:, ::4, ::4], high)


def test_a_picture_that_cannot_be_drawn_leaves_the_call_successful(fake_voc, tmp_path, r50):
    out = tmp_path / "out"
    _fake_cams(fake_voc, out / "cam")
    (out / "amn_cam").mkdir()
    (out / "amn_cam" / "img_000.npz").write_bytes(b"garbage")  # read only by the picture
    argv = flags(fake_voc, out, r50) + ["--eval_cam_pass", "True"]
    assert command_line(run_sample.main, argv) == 0
    assert '"step": "eval_cam"' in (out / "metrics.jsonl").read_text()
    report = (out / "report.md").read_text()
    assert "- the example picture could not be drawn: BadInput: corrupt map file " in report


def test_user_errors_print_their_message_alone(tmp_path, capsys):
    argv = ["--voc12_root", str(tmp_path / "nowhere"), "--eval_cam_pass", "True"]
    assert command_line(run_sample.main, argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: dataset root {tmp_path / 'nowhere'} does not exist")
    assert "Traceback" not in err and "--debug True prints it" in err
    assert command_line(run_sample.main, argv + ["--debug", "True"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_a_fault_of_the_code_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(run_sample, "resolved", lambda argv: [][1])
    with pytest.raises(IndexError):
        command_line(run_sample.main, [])


def test_the_traceback_of_a_user_error_goes_to_the_log_file(fake_voc, tmp_path, r50):
    out = tmp_path / "out"
    argv = flags(fake_voc, out, r50) + ["--make_cam_pass", "True"]  # no CAM checkpoint yet
    assert command_line(run_sample.main, argv) == 1
    logged = (out / "run.log").read_text()
    assert "Traceback (most recent call last)" in logged and "res50_cam.pth not found" in logged


def test_a_flag_no_pass_of_the_call_reads_is_reported(fake_voc, tmp_path, r50, capsys):
    out = tmp_path / "out"
    _cam_checkpoint(out / "sess" / "res50_cam.pth")
    lists = fake_voc / "ImageSets" / "Segmentation"
    argv = ["--voc12_root", str(fake_voc), "--backbone_weights", str(r50), "--device", "cpu",
            "--cam_weights_name", str(out / "sess" / "res50_cam.pth"), "--cam_scales", "1.0",
            "--cam_out_dir", str(out / "cam"), "--metrics_file", str(out / "metrics.jsonl"),
            "--log_name", str(out / "run"), "--train_list", str(lists / "train_aug.txt"),
            "--make_cam_pass", "True", "--infer_list", str(lists / "train.txt")]
    run_sample.main(argv)
    note = ("2 flags given that no pass of this call reads, without effect: --backbone_weights "
            "(read by train_cam, train_amn, train_irn, train_seg, train_seg_gt, train_seg_cp), "
            "--infer_list "
            "(read by train_irn, make_ins_seg, make_sem_seg, make_cocoann)")
    assert f"note: {note}" in capsys.readouterr().out
    assert f"- {note}" in (out / "report.md").read_text()
