"""Faults handled: a non-finite loss or weights stop training with the last good state kept
(misc/engine/train.py), and a second run on the same output folders is refused (misc/io/lock.py)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import run_sample
from misc.engine.train import NonFiniteLoss, state_path, train
from misc.io import lock
from tests.ddp_tiny_train import Points, network
from tests.tiny import REPO, flags, write_fake_voc

# 16 points at batch 4: 4 steps per epoch, 3 epochs
STEPS, EVERY = 12, 3


def _train(out: Path, loss_fn, lr: float = 0.01, checkpoint_every: int = EVERY) -> list:
    """The tiny network trained with Adam into out/net.pth, resuming; returns [optimizer]."""
    model, made = network(), []

    def make_optimizer(_steps: int) -> torch.optim.Optimizer:
        made.append(torch.optim.Adam(model.parameters(), lr=lr))
        return made[-1]

    train(model, loss_fn, Points(), 4, 3, make_optimizer, torch.device("cpu"), out / "net.pth",
          desc="train_tiny", checkpoint_every=checkpoint_every, resume=True)
    return made


def _mse(nan_at: int | None = None, blow_up_at: int | None = None):
    """The loss, NaN at its `nan_at`-th call (0-based); at its `blow_up_at`-th call finite but
    with an infinite gradient (d sqrt(x)/dx at 0), so that the weights become inf/NaN."""
    calls = []

    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        calls.append(1)
        loss = ((model(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
        if len(calls) - 1 == nan_at:
            loss = loss * float("nan")
        if len(calls) - 1 == blow_up_at:
            w = next(model.parameters())
            loss = loss + torch.sqrt(w - w.detach()).sum()
        return loss
    return loss_fn


def _finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values())


def test_nan_loss_stops_with_the_last_good_state(tmp_path, capsys):
    ref, out = tmp_path / "ref", tmp_path / "out"
    _train(ref, _mse())
    with pytest.raises(NonFiniteLoss) as err:
        _train(out, _mse(nan_at=7))  # iteration 8, in epoch 2
    assert str(err.value) == (
        f"train_tiny: the loss is nan at iteration 8 of 12 (epoch 2); training stopped and "
        f"{out / 'net.pth'} was not written. The last good resumable state, after iteration 6, "
        f"is kept in {out / 'net.state.pth'}: lower the learning rate (or check the labels and "
        f"the input data) and rerun the same command; it continues from that state.")
    state = torch.load(state_path(out / "net.pth"), weights_only=True)
    assert state["step"] == 6 and _finite(state["model"]) and not (out / "net.pth").exists()

    capsys.readouterr()
    _train(out, _mse())  # the fixed rerun resumes and ends where an uninterrupted run does
    assert "resumed from" in capsys.readouterr().out
    a, b = (torch.load(p / "net.pth", weights_only=True) for p in (ref, out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (ref / "net.losses.csv").read_text() == (out / "net.losses.csv").read_text()


def test_a_lowered_learning_rate_applies_on_resume(tmp_path):
    with pytest.raises(NonFiniteLoss):
        _train(tmp_path, _mse(nan_at=7))
    (optimizer,) = _train(tmp_path, _mse(), lr=0.001)
    assert optimizer.param_groups[0]["lr"] == 0.001
    assert len((tmp_path / "net.losses.csv").read_text().split()) == STEPS + 1


def test_non_finite_weights_are_never_saved(tmp_path):
    with pytest.raises(NonFiniteLoss, match="train_tiny: the weights are no longer finite after "
                                            "iteration 5 of 12 .*after iteration 4, is kept"):
        _train(tmp_path, _mse(blow_up_at=4), checkpoint_every=1)
    state = torch.load(state_path(tmp_path / "net.pth"), weights_only=True)
    assert state["step"] == 4 and _finite(state["model"])


def test_nan_before_any_state(tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"iteration 2 of 12 .*No resumable state was "
                                            r"written before it \(one is written every 3 steps\)"
                                            r".*it starts afresh"):
        _train(tmp_path, _mse(nan_at=1))


# holds the lock and forks a child that outlives it, as a killed run's loader workers do
HOLD = """import os, sys, time
from misc.io.lock import lock_folders
lock_folders([sys.argv[1]], "python run_sample.py --first")
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print("held", child, flush=True)
time.sleep(120)
"""
TRY = """import sys
from misc.io.lock import FolderInUse, lock_folders
try:
    lock_folders([sys.argv[1]], "python run_sample.py --second")
except FolderInUse as err:
    print(err)
    sys.exit(1)
"""


def _python(code: str, folder: Path, **kwargs):
    return [sys.executable, "-c", code, str(folder)], dict(cwd=REPO, text=True, **kwargs,
                                                          env={**os.environ, "PYTHONPATH": str(REPO)})


def _holder(folder: Path) -> tuple[subprocess.Popen, int]:
    """A process holding the lock of `folder`, and the pid of the child it forked."""
    argv, kwargs = _python(HOLD, folder, stdout=subprocess.PIPE)
    proc = subprocess.Popen(argv, **kwargs)
    word, child = proc.stdout.readline().split()
    assert word == "held"
    return proc, int(child)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_second_process_is_refused_until_the_first_dies(tmp_path):
    first, child = _holder(tmp_path)
    try:
        argv, kwargs = _python(TRY, tmp_path, capture_output=True, timeout=60)
        second = subprocess.run(argv, **kwargs)
        assert second.returncode == 1
        message = second.stdout.strip()
        assert message.startswith(f"{tmp_path} is in use by another run: pid {first.pid} on host ")
        assert ", command: python run_sample.py --first (lock file " in message
        assert str(tmp_path / lock.LOCK_NAME) in message and "Wait for that run to end" in message
        _kill(first)
        # the kernel released the dead process's lock, though its forked child still runs
        assert subprocess.run(argv, **kwargs).returncode == 0
    finally:
        _kill(first)
        os.kill(child, signal.SIGKILL)
    assert lock.lock_folders([tmp_path], "me") == [tmp_path.resolve() / lock.LOCK_NAME]
    lock.lock_folders([tmp_path, tmp_path / "sub"], "me again")  # re-entrant in a process
    assert subprocess.run(argv, **kwargs).returncode == 1
    lock.release()
    assert subprocess.run(argv, **kwargs).returncode == 0


def test_run_sample_refuses_folders_in_use(tmp_path):
    root = tmp_path / "voc"
    write_fake_voc(root, [(40, 48)] * 4)
    out = tmp_path / "out"
    argv = flags(root, out, tmp_path / "r50.pth") + ["--make_cam_pass", "True"]
    holder, child = _holder(out)  # the folder of --metrics_file
    try:
        with pytest.raises(lock.FolderInUse, match=f"pid {holder.pid} .*Or give this run another "
                                                   f"--metrics_file"):
            run_sample.main(argv)
        assert not (out / "run_config.json").exists()  # refused before writing anything
    finally:
        _kill(holder)
        os.kill(child, signal.SIGKILL)
    try:
        for _ in range(2):  # a failed call keeps its lock; the same process may call again
            with pytest.raises(FileNotFoundError, match="res50_cam.pth not found"):
                run_sample.main(argv)
        assert (out / "run_config.json").is_file()
        assert not (out / "sess").exists()  # no training pass: its folder is not locked
    finally:
        lock.release()
