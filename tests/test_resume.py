"""Kill-and-resume: a step killed (SIGKILL) mid-way and rerun ends with the same outputs as an
uninterrupted run, for a training step (resumable state) and a map-making step (per image)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from misc.engine.train import state_path
from misc.io.maps import load_maps
from tests.tiny import REPO, flags

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses SIGKILL")


def _command(argv: list[str]) -> list[str]:
    return [sys.executable, str(REPO / "run_sample.py"), *argv]


def _run(argv: list[str], log: Path) -> None:
    with open(log, "a") as f:
        subprocess.run(_command(argv), check=True, stdout=f, stderr=f, cwd=log.parent)


def _kill_once(argv: list[str], log: Path, ready, timeout: float = 300) -> None:
    """Start run_sample.py and SIGKILL it as soon as `ready()` holds."""
    with open(log, "a") as f:
        proc = subprocess.Popen(_command(argv), stdout=f, stderr=f, cwd=log.parent)
    deadline = time.time() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"the run ended before it could be killed: {log.read_text()}"
            assert time.time() < deadline, "timed out waiting for the run to get going"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_killed_steps_resume_to_the_same_outputs(tiny_toy, tmp_path, r50):
    extra = ["--cam_num_epoches", "3", "--checkpoint_every", "1", "--infer_batch_size", "2",
             "--cam_scales", "1.0", "0.5", "1.5", "2.0"]
    train, make = ["--train_cam_pass", "True"], ["--make_cam_pass", "True"]
    ref, out = tmp_path / "ref", tmp_path / "killed"
    ref.mkdir(), out.mkdir()
    _run(flags(tiny_toy, ref, r50) + extra + train + make, ref / "log.txt")

    # train_cam killed right after its first training state, then rerun
    argv = flags(tiny_toy, out, r50) + extra
    final = out / "sess" / "res50_cam.pth"
    _kill_once(argv + train, out / "log.txt", state_path(final).is_file)
    assert not final.exists() and state_path(final).is_file()
    (out / "sess" / ".res50_cam.pth.x1y2.tmp").write_bytes(b"half")  # as a kill mid-write leaves
    _run(argv + train, out / "log.txt")
    assert "resumed from" in (out / "log.txt").read_text()
    assert "removed 1 temporary files" in (out / "log.txt").read_text()
    assert not list((out / "sess").glob(".*.tmp"))
    assert not state_path(final).exists()
    a, b = (torch.load(p, weights_only=True) for p in (ref / "sess" / "res50_cam.pth", final))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ((ref / "sess" / "res50_cam.losses.csv").read_text()
            == final.with_suffix(".losses.csv").read_text())

    # make_cam killed once its first maps exist, then rerun: only the rest is computed
    ids = (tiny_toy / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    _kill_once(argv + make, out / "log.txt", lambda: any((out / "cam").glob("*.npz")))
    done = len(list((out / "cam").glob("*.npz")))
    assert 0 < done < len(ids)
    _run(argv + make, out / "log.txt")
    assert f"{len(ids) - done} maps written, {done} already done" in (out / "log.txt").read_text()
    for i in ids:
        x, y = load_maps(ref / "cam" / f"{i}.npz"), load_maps(out / "cam" / f"{i}.npz")
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_killed_bao_training_restores_its_teacher_bit_identically(tmp_path):
    """BAO's self-training (tests/ddp_bao_train.py) SIGKILLed in its first EMA epoch, after the
    state of step 3, and rerun: the teacher comes back from the state (not re-copied from the
    student), so student, teacher and losses equal the uninterrupted run's bit for bit."""
    ref, out = tmp_path / "ref", tmp_path / "killed"
    ref.mkdir(), out.mkdir()
    command = [sys.executable, "tests/ddp_bao_train.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(command + [str(ref)], cwd=REPO, env=env, check=True, capture_output=True)
    proc = subprocess.Popen(command + [str(out)], cwd=REPO, env={**env, "HOLD_AFTER": "3"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while not (out / "holding0").exists():
            assert proc.poll() is None and time.time() < deadline, "the run ended or hung"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = torch.load(state_path(out / "bao.pth"), weights_only=True)
    assert state["step"] == 3 and state["extra"] and not (out / "bao.pth").exists()
    subprocess.run(command + [str(out)], cwd=REPO, env=env, check=True, capture_output=True)
    a, b = (torch.load(p / "bao.pth", weights_only=True) for p in (ref, out))
    assert any(k.startswith("teacher.") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (ref / "bao.losses.csv").read_text() == (out / "bao.losses.csv").read_text()
