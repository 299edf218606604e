"""Output records: a rerun remakes outputs whose inputs or flags changed, keeps those that match
(resume), and evaluation refuses a folder made from other inputs."""
import json
import shutil

import numpy as np
import pytest
import torch

import run_sample
from misc.io.maps import load_maps
from misc.io.png import load_png
from misc.io.records import begin_output, end_output, is_done, make_record, mismatch, read_record
from net import resnet50_cam
from net.resnet50 import ResNet50
from step.driver.workspace import already_trained
from tests.tiny import flags


def _cam_checkpoint(path, seed: int) -> None:
    """A CAM checkpoint with random weights (as a retrain with another seed gives)."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet50_cam.Net(3).state_dict(), path)


def _maps(folder) -> dict:
    return {p.stem: load_maps(p)["high_res"] for p in sorted(folder.glob("*.npz"))}


def test_begin_output_keeps_matching_files_and_remakes_stale_ones_in_place(tmp_path):
    folder = tmp_path / "cam"
    a = make_record("make_cam", {"w": {"path": "w.pth", "sha256": "1"}}, {"scales": (1.0, 0.5)})
    assert begin_output(folder, a, ".npz", overwrite=False) is None  # new folder
    (folder / "x.npz").write_bytes(b"x")
    end_output(folder, a)
    assert read_record(folder)["complete"] and read_record(folder)["settings"] == {"scales": [1.0, 0.5]}
    assert begin_output(folder, a, ".npz", overwrite=False) is None and is_done(folder / "x.npz")
    assert mismatch(folder, a) == f"{folder} is unfinished (its step was interrupted)"
    b = make_record("make_cam", {"w": {"path": "w.pth", "sha256": "2"}}, {"scales": (1.0,)})
    reason = begin_output(folder, b, ".npz", overwrite=False)
    assert reason == f"w.pth changed, --scales 1.0 0.5 -> 1.0 since {folder} was made"
    # stale but still there (a failure half-way loses nothing); a rewritten file is done
    assert (folder / "x.npz").exists() and not is_done(folder / "x.npz")
    assert read_record(folder)["id"] == b["id"]
    (folder / "y.npz").write_bytes(b"y")
    assert is_done(folder / "y.npz")
    # killed here and rerun with the same flags: x is still stale, y stays done
    assert begin_output(folder, b, ".npz", overwrite=False) is None
    assert not is_done(folder / "x.npz") and is_done(folder / "y.npz")
    (folder / "x.npz").write_bytes(b"x2")
    end_output(folder, b)
    assert is_done(folder / "x.npz") and not (folder / ".remake").exists()
    assert begin_output(folder, b, ".npz", overwrite=True) == "--overwrite True"
    assert not is_done(folder / "y.npz")
    # the id depends on the inputs' content, not their paths
    moved = make_record("make_cam", {"w": {"path": "elsewhere.pth", "sha256": "2"}}, {"scales": [1.0]})
    assert moved["id"] == b["id"]


def test_retrained_cam_checkpoint_remakes_the_maps(fake_voc, tmp_path, r50):
    argv = flags(fake_voc, tmp_path, r50) + ["--make_cam_pass", "True"]
    checkpoint = tmp_path / "sess" / "res50_cam.pth"
    _cam_checkpoint(checkpoint, seed=0)
    run_sample.main(argv)
    first = _maps(tmp_path / "cam")
    _cam_checkpoint(checkpoint, seed=1)  # train_cam again
    run_sample.main(argv)
    log = (tmp_path / "run.log").read_text()
    assert f"make_cam: {checkpoint} changed since {tmp_path / 'cam'} was made: remaking" in log
    second = _maps(tmp_path / "cam")
    assert first.keys() == second.keys()
    assert all(not np.array_equal(first[k], second[k]) for k in first)
    record = json.loads((tmp_path / "cam" / ".record.json").read_text())
    assert record["complete"] and record["settings"]["cam_scales"] == [1.0, 0.5]

    # the same command again keeps every map
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cam").glob("*.npz")}
    run_sample.main(argv)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert "made with the same inputs and flags: keeping its" in (tmp_path / "run.log").read_text()

    # evaluating maps of an older checkpoint is refused, naming the pass that remakes them
    _cam_checkpoint(checkpoint, seed=2)
    with pytest.raises(ValueError, match=r"changed since .*rerun --make_cam_pass True"):
        run_sample.main(flags(fake_voc, tmp_path, r50) + ["--eval_cam_pass", "True"])


def test_threshold_change_remakes_the_ir_labels(fake_voc, tmp_path, r50):
    _cam_checkpoint(tmp_path / "sess" / "res50_cam.pth", seed=0)
    base = flags(fake_voc, tmp_path, r50)
    run_sample.main(base + ["--make_cam_pass", "True", "--cam_to_ir_label_pass", "True"])
    run_sample.main(base + ["--cam_to_ir_label_pass", "True", "--conf_fg_thres", "0.05",
                            "--conf_bg_thres", "0.01"])
    log = (tmp_path / "run.log").read_text()
    assert "--cam_conf_fg_thres 0.3 -> 0.05, --cam_conf_bg_thres 0.05 -> 0.01 since" in log
    # the same labels as a fresh run at the new thresholds
    fresh = tmp_path / "fresh"
    run_sample.main(base + ["--cam_to_ir_label_pass", "True", "--conf_fg_thres", "0.05",
                            "--conf_bg_thres", "0.01", "--ir_label_out_dir", str(fresh)])
    labels = sorted(fresh.glob("*.png"))
    assert labels
    for path in labels:
        np.testing.assert_array_equal(load_png(path), load_png(tmp_path / "ir_label" / path.name))


def test_whole_chain_retrains_a_checkpoint_made_from_other_inputs(fake_voc, tmp_path, r50):
    weights = tmp_path / "r50.pth"  # a copy: this test replaces the backbone file
    shutil.copy(r50, weights)
    args = run_sample.resolved(flags(fake_voc, tmp_path, weights))
    assert args.resume_chain
    _cam_checkpoint(tmp_path / "sess" / "res50_cam.pth", seed=0)
    assert already_trained(run_sample.PIPELINE, args, "train_cam")  # no record: made elsewhere, kept
    end_output(tmp_path / "sess" / "res50_cam.pth",
               run_sample.PIPELINE.expected_record(args, "train_cam"))
    assert already_trained(run_sample.PIPELINE, args, "train_cam")
    torch.manual_seed(1)
    torch.save(ResNet50().state_dict(), weights)  # another backbone
    assert not already_trained(run_sample.PIPELINE, args, "train_cam")


def test_records_under_torchrun(fake_voc, tmp_path, r50):
    """Two gloo processes: rank 0 decides and deletes before any rank writes; a retrained
    checkpoint remakes every map, each rank its half."""
    import os
    import subprocess
    import sys

    from tests.tiny import REPO
    checkpoint = tmp_path / "sess" / "res50_cam.pth"
    argv = flags(fake_voc, tmp_path, r50) + ["--make_cam_pass", "True"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                str(REPO / "run_sample.py")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    maps = []
    for seed in (0, 1):
        _cam_checkpoint(checkpoint, seed)
        proc = subprocess.run(launcher + argv, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        maps.append(_maps(tmp_path / "cam"))
    assert maps[0].keys() == maps[1].keys() and len(maps[0]) > 1
    assert all(not np.array_equal(maps[0][k], maps[1][k]) for k in maps[0])
    assert read_record(tmp_path / "cam")["complete"]
    assert "changed since" in (tmp_path / "run.log").read_text()
