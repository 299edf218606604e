"""Training under torchrun: two gloo processes give the one-process losses (same global batch),
each rank in a 2-process group feeding its loss its own half of every global batch."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tiny import REPO, write_fake_voc

STEP_FLAGS = {
    "cam": ["--train_cam_pass", "True", "--cam_crop_size", "32", "--cam_resize_long", "32", "48",
            "--cam_batch_size", "4", "--cam_num_epoches", "1"],
    # IR labels: the GT masks stand in; fg/bg pixel counts differ between the ranks' halves
    "amn": ["--train_amn_pass", "True", "--amn_crop_size", "32", "--amn_batch_size", "4",
            "--amn_num_epoches", "1", "--amn_head_learning_rate", "1e-2",
            "--amn_dropout", "0"],  # dropout masks depend on how the batch is split
    # and the displacement-mean pass after training: 2 batches of 4, one per rank
    "irn": ["--train_irn_pass", "True", "--irn_crop_size", "80", "--irn_batch_size", "4",
            "--irn_num_epoches", "1"],
}
HEADS = {"cam": "classifier.weight", "amn": "classifier.1.c0.weight", "irn": "fc_edge6.weight"}


def _run(tmp: Path, root: Path, weights: Path, step: str, nproc: int):
    out = tmp / f"{step}{nproc}"
    lst = str(root / "ImageSets/Segmentation/train_aug.txt")
    flags = ["run_sample.py", "--voc12_root", str(root), "--train_list", lst, "--val_list", lst,
             "--backbone_weights", str(weights), "--num_workers", "0", "--device", "cpu",
             "--ir_label_out_dir", str(root / "SegmentationClass"), "--infer_list", lst,
             "--amn_ir_label_out_dir", str(root / "SegmentationClass"),
             f"--{step}_weights_name", str(out / "net.pth"),
             "--metrics_file", str(out / "m.jsonl"),
             "--log_name", str(out / "run")] + STEP_FLAGS[step]
    flags[0] = "tests/ddp_record.py"  # run_sample.main, recording what each rank trains on
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    (out / "record").mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "RECORD_DIR": str(out / "record")}
    proc = subprocess.run(launcher + flags, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = np.loadtxt(out / "net.losses.csv", delimiter=",", skiprows=1)
    records = [json.loads((out / "record" / f"rank{r}.json").read_text()) for r in range(nproc)]
    return curve[:, 1], torch.load(out / "net.pth", weights_only=True), records


@pytest.mark.parametrize("step", ["cam", "amn", "irn"])
def test_two_process_gloo_matches_one_process(tmp_path, r50, step):
    root = tmp_path / "voc"
    write_fake_voc(root, [(40, 48)] * 4 + [(48, 40)] * 4)
    loss1, state1, (alone,) = _run(tmp_path, root, r50, step, 1)
    loss2, state2, ranks = _run(tmp_path, root, r50, step, 2)
    # each rank is one of a group of 2 and takes its half of every global batch of 4
    assert alone["world_size_env"] == 1 and all(s["world"] == [0, 1] for s in alone["steps"])
    for r, rec in enumerate(ranks):
        assert rec["world_size_env"] == 2 and all(s["world"] == [r, 2] for s in rec["steps"])
        assert len(rec["steps"]) == len(alone["steps"]) == 2
    for one, first, second in zip(alone["steps"], ranks[0]["steps"], ranks[1]["steps"]):
        assert len(set(one["names"])) == 4 and len(first["names"]) == len(second["names"]) == 2
        assert first["names"] + second["names"] == one["names"]  # disjoint halves, in order
    assert len(loss1) == len(loss2) == 2
    np.testing.assert_allclose(loss1, loss2, rtol=1e-5)
    torch.testing.assert_close(state1[HEADS[step]], state2[HEADS[step]], rtol=1e-4, atol=1e-6)
    init = torch.load(r50, weights_only=True)
    if step == "irn":  # the backbone is frozen; the mean over both ranks' batches is stored
        mean1, mean2 = state1["mean_shift.running_mean"], state2["mean_shift.running_mean"]
        assert mean1.abs().sum() > 0
        torch.testing.assert_close(mean1, mean2, rtol=1e-4, atol=1e-6)
        return
    assert not torch.allclose(state1["stage4.0.2.conv3.weight"], init["layer4.2.conv3.weight"])
    if step == "cam":  # stage 2 is detached in the CAM network: untouched
        assert torch.equal(state1["stage2.0.0.conv1.weight"], init["layer2.0.conv1.weight"])


def _tiny(out: Path, nproc: int = 2, **env) -> subprocess.CompletedProcess:
    """tests/ddp_tiny_train.py under torchrun (gloo) writing into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    return subprocess.run(launcher + ["tests/ddp_tiny_train.py", str(out)], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                               **env}, capture_output=True, text=True, timeout=120)


def test_two_process_resume_is_bit_identical(tmp_path, capsys):
    """Killed after step 6 (mid epoch 2, once the ranks' random streams differ) and rerun, two
    processes end with the uninterrupted run's weights and losses: each rank gets its own RNG
    back. A state of another process count resumes with a warning."""
    from misc.engine.train import state_path
    from tests import ddp_tiny_train

    ref, killed = tmp_path / "ref", tmp_path / "killed"
    proc = _tiny(ref)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _tiny(killed, STOP_AFTER="6").returncode != 0
    state = torch.load(state_path(killed / "net.pth"), weights_only=True)
    assert state["step"] == 6 and state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    assert not (killed / "net.pth").exists()
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(state_path(killed / "net.pth"), state_path(alone / "net.pth"))
    proc = _tiny(killed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (torch.load(p / "net.pth", weights_only=True) for p in (ref, killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (ref / "net.losses.csv").read_text() == (killed / "net.losses.csv").read_text()
    assert not state_path(killed / "net.pth").exists()

    ddp_tiny_train.run(alone)  # one process resuming the two-process state
    assert "written by 2 processes and this run has 1" in capsys.readouterr().out
    assert len((alone / "net.losses.csv").read_text().split()) == 13


def test_nan_on_one_rank_stops_both(tmp_path):
    """A NaN loss on rank 1 only: the mean is NaN on both ranks, both stop with the message
    (no rank left waiting in a collective) and the state on disk is the last good one."""
    from misc.engine.train import state_path

    proc = _tiny(tmp_path, NAN_AT="5:1")
    assert proc.returncode != 0
    for rank in (0, 1):
        text = (tmp_path / f"stopped{rank}.txt").read_text()
        assert "tiny: the loss is nan at iteration 6 of 12 (epoch 2)" in text
        assert f"after iteration 5, is kept in {state_path(tmp_path / 'net.pth')}" in text
    state = torch.load(state_path(tmp_path / "net.pth"), weights_only=True)
    assert state["step"] == 5
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def _bao(out: Path, nproc: int, **env) -> subprocess.CompletedProcess:
    """tests/ddp_bao_train.py alone or under torchrun (gloo) writing into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    return subprocess.run(launcher + ["tests/ddp_bao_train.py", str(out)], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                               **env}, capture_output=True, text=True, timeout=120)


def test_bao_teacher_is_the_same_on_every_rank_and_as_one_process(tmp_path):
    """BAO's self-training (step.train_bao.self_train) in two gloo processes: each rank's EMA
    teacher is bit-identical to the other's (the same all-reduced student, the same schedule)
    and equals the one-process teacher at the same global batch, up to float rounding of the
    gradient all-reduce; it has moved away from both the initial weights and the student."""
    for nproc in (1, 2):
        proc = _bao(tmp_path / f"bao{nproc}", nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
    alone = torch.load(tmp_path / "bao1" / "teacher0.pth", weights_only=True)
    ranks = [torch.load(tmp_path / "bao2" / f"teacher{r}.pth", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in alone)
    for k in alone:
        torch.testing.assert_close(ranks[0][k], alone[k], rtol=1e-5, atol=1e-6)
    final = torch.load(tmp_path / "bao2" / "bao.pth", weights_only=True)
    assert all(torch.equal(final[f"teacher.{k}"], ranks[0][k]) for k in alone)
    torch.manual_seed(0)
    from tests.ddp_bao_train import TinyAMN
    init = TinyAMN().state_dict()
    assert not torch.allclose(alone["head.weight"], init["head.weight"])
    assert not torch.allclose(alone["head.weight"], final["head.weight"])  # an EMA, not a copy
