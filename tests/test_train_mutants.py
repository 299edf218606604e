"""The training loop's resume and bookkeeping (misc/engine/train.py), in process on a tiny
network: train() against a plain SGD loop written here, a run stopped at a state and resumed
against the uninterrupted one, what a state file holds and when one is written, and the checks
on a state of another run. Fast; the tests tools/mutate.py runs against train.py's mutants."""
from __future__ import annotations

import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from misc.engine import dist
from misc.engine import train as engine
from misc.engine.train import NonFiniteLoss, TrainResult, _SkipFirst, state_path, train
from misc.errors import BadInput
from misc.io.records import write_record


class Points(Dataset):
    """16 fixed points of a linear target, each with its name (a non-tensor field)."""

    def __init__(self, n: int = 16):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)
        self.epochs = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "name": f"p{i}"}


def _net(dropout: float = 0.5) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(8, 1))


class Stop(Exception):
    """A kill, as the process sees it: the run ends between two steps."""


def _loss(stop_at: int | None = None, seen: list | None = None, noisy: bool = True):
    """MSE (plus draws from numpy's and python's global streams, which a resume must give back);
    raises Stop at its `stop_at`-th call (0-based), once `stop_at` updates are done."""
    calls = []

    def loss_fn(forward, batch):
        if len(calls) == stop_at:
            raise Stop
        calls.append(1)
        if seen is not None:
            seen.append(batch["name"])
        loss = ((forward(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
        if noisy:
            loss = loss * (1 + 0.01 * float(np.random.rand()) + 0.01 * random.random())
        return loss
    return loss_fn


def _run(out: Path, loss_fn, model=None, epochs=3, every=1, resume=True, lr=0.02, **kwargs):
    model = _net() if model is None else model
    made = []

    def make_optimizer(_steps):
        made.append(torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
        return made[-1]
    result = train(model, loss_fn, kwargs.pop("dataset", Points()), 4, epochs, make_optimizer,
                   torch.device("cpu"), out / "net.pth", desc="tiny", checkpoint_every=every,
                   resume=resume, **kwargs)
    return model, result, made


def _draw_on_main(model, epoch):
    torch.rand(5)  # an end-of-epoch hook that draws (a monitor pass with dropout on)
    model.eval()


def _seeded():
    np.random.seed(0)
    random.seed(0)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_is_one_sgd_step_per_global_batch_in_the_samplers_order(tmp_path):
    model, result, _ = _run(tmp_path, _loss(noisy=False), model=_net(0.0), epochs=2, every=0,
                            seed=3)
    # the same by hand: a plain loop over the sampler's batches
    ref = _net(0.0)
    data = Points()
    opt = torch.optim.SGD(ref.parameters(), lr=0.02, momentum=0.9)
    sampler = dist.GlobalBatchSampler(16, 4, seed=3)
    losses = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for batch in sampler:
            x, y = data.x[batch], data.y[batch]
            loss = ((ref(x)[:, 0] - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert _same(model.state_dict(), ref.state_dict())
    assert result.losses == pytest.approx(losses, rel=1e-6) and len(result.losses) == 8
    saved = torch.load(tmp_path / "net.pth", weights_only=True)
    assert _same(saved, ref.state_dict())
    rows = (tmp_path / "net.losses.csv").read_text().splitlines()
    assert rows[0] == "step,loss" and len(rows) == 9
    assert [float(r.split(",")[1]) for r in rows[1:]] == result.losses  # exact (repr)
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(8))
    assert result.seconds > 0


@pytest.mark.parametrize("stop_at", [6, 4])  # mid epoch 2; at the end of epoch 1
def test_a_run_stopped_after_a_state_and_resumed_ends_as_the_uninterrupted_one(tmp_path, stop_at,
                                                                                capsys):
    _seeded()
    ref, ref_result, _ = _run(tmp_path / "ref", _loss(), end_of_epoch=_draw_on_main)
    _seeded()
    with pytest.raises(Stop):
        _run(tmp_path / "out", _loss(stop_at), end_of_epoch=_draw_on_main)
    state = torch.load(state_path(tmp_path / "out" / "net.pth"), weights_only=True)
    assert state["step"] == stop_at and len(state["losses"]) == stop_at
    torch.rand(3), np.random.rand(3), random.random()  # the process's streams move on
    capsys.readouterr()
    model, result, _ = _run(tmp_path / "out", _loss(), end_of_epoch=_draw_on_main)
    assert f"tiny: resumed from {state_path(tmp_path / 'out' / 'net.pth')} at step {stop_at}/12" \
        in capsys.readouterr().out.splitlines()
    assert _same(model.state_dict(), ref.state_dict())
    assert result.losses == ref_result.losses
    assert ((tmp_path / "ref" / "net.losses.csv").read_text()
            == (tmp_path / "out" / "net.losses.csv").read_text())
    assert not state_path(tmp_path / "out" / "net.pth").exists()  # removed with the checkpoint


def test_a_resumed_run_sees_the_batches_the_stopped_run_did_not(tmp_path):
    names_ref, names = [], []
    _run(tmp_path / "ref", _loss(seen=names_ref), every=1)
    with pytest.raises(Stop):
        _run(tmp_path / "out", _loss(stop_at=5, seen=names), every=1)
    data = Points()
    _run(tmp_path / "out", _loss(seen=names), every=1, dataset=data)
    assert names == names_ref and len(names) == 12
    assert data.epochs == [1, 2]  # resumed in epoch 2 (0-based 1)


def test_without_resume_a_state_on_disk_is_ignored_and_training_starts_afresh(tmp_path, capsys):
    with pytest.raises(Stop):
        _run(tmp_path, _loss(stop_at=5))
    capsys.readouterr()
    _, result, _ = _run(tmp_path, _loss(), resume=False)
    assert len(result.losses) == 12 and "resumed" not in capsys.readouterr().out


def test_a_state_is_written_every_k_steps_with_what_resuming_needs(tmp_path, monkeypatch):
    written = []
    save = engine._save_state

    def keep(path, model, optimizer, step, *args, **kwargs):
        save(path, model, optimizer, step, *args, **kwargs)
        written.append(torch.load(path, weights_only=True))
    monkeypatch.setattr(engine, "_save_state", keep)
    write_record(tmp_path / "net.pth", {"id": "rec1"}, complete=False)
    _run(tmp_path, _loss(), every=3)
    assert [s["step"] for s in written] == [3, 6, 9]  # none at the end: the checkpoint is
    s = written[1]
    assert (s["max_step"], s["batch_size"], s["world_size"], s["record"]) == (12, 4, 1, "rec1")
    assert len(s["losses"]) == 6 and len(s["rng"]) == 1
    assert set(s["rng"][0]) == {"torch", "python", "numpy"}
    assert s["extra"] == {} and s["scaler"] == {}
    assert set(s["model"]) == set(_net().state_dict()) and s["optimizer"]["state"]
    written.clear()
    _run(tmp_path / "none", _loss(), every=0)
    assert written == []


def test_a_state_of_other_inputs_or_flags_is_set_aside_and_training_starts_afresh(tmp_path,
                                                                                capsys):
    out = tmp_path / "net.pth"
    write_record(out, {"id": "old"}, complete=False)
    with pytest.raises(Stop):
        _run(tmp_path, _loss(stop_at=5))
    write_record(out, {"id": "new"}, complete=False)
    capsys.readouterr()
    _, result, _ = _run(tmp_path, _loss())
    text = capsys.readouterr().out
    assert (f"tiny: {state_path(out)} was written by a run with other inputs or flags than this "
            f"one's: set aside as net.state.set-aside.pth, training starts afresh") in text
    assert "resumed" not in text and len(result.losses) == 12
    aside = torch.load(tmp_path / "net.state.set-aside.pth", weights_only=True)
    assert aside["record"] == "old" and aside["step"] == 5


def test_a_state_of_another_length_or_batch_is_refused_with_the_fix(tmp_path):
    with pytest.raises(Stop):
        _run(tmp_path, _loss(stop_at=5))
    with pytest.raises(BadInput, match=r"net.state.pth is the state of a run with 12 steps at "
                                       r"batch 4, not 8 at batch 4; delete it \(or turn resuming off\)"):
        _run(tmp_path, _loss(), epochs=2)
    state = torch.load(state_path(tmp_path / "net.pth"), weights_only=True)
    state["batch_size"] = 8
    torch.save(state, state_path(tmp_path / "net.pth"))
    with pytest.raises(BadInput, match="12 steps at batch 8, not 12 at batch 4"):
        _run(tmp_path, _loss())


def test_the_module_trained_beside_the_model_is_saved_and_restored(tmp_path):
    teacher = torch.nn.Linear(2, 2)
    with torch.no_grad():
        teacher.weight.fill_(0.5)
    with pytest.raises(Stop):
        _run(tmp_path, _loss(stop_at=5), extra_state=teacher)
    state = torch.load(state_path(tmp_path / "net.pth"), weights_only=True)
    assert torch.equal(state["extra"]["weight"], torch.full((2, 2), 0.5))
    other = torch.nn.Linear(2, 2)
    resumed = []

    def after(epoch, k, per_epoch):
        resumed.append(other.weight.clone())
    _run(tmp_path, _loss(), extra_state=other, after_step=after)
    assert torch.equal(resumed[0], torch.full((2, 2), 0.5))
    # a state without it cannot resume such a run
    with pytest.raises(Stop):
        _run(tmp_path / "b", _loss(stop_at=5))
    with pytest.raises(BadInput, match=r"holds no state of the module trained beside the model "
                                       r"\(a teacher\); delete it \(or turn resuming off\) to "
                                       r"start afresh$"):
        _run(tmp_path / "b", _loss(), extra_state=torch.nn.Linear(2, 2))


def test_a_resumed_run_keeps_its_own_learning_rate_and_the_schedule_position(tmp_path):
    with pytest.raises(Stop):
        _run(tmp_path, _loss(stop_at=5))
    model = _net()
    made = []

    def make_optimizer(_steps):
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.5)
        opt.global_step = 0  # as PolyOptimizer keeps it
        made.append(opt)
        return opt
    train(model, _loss(), Points(), 4, 3, make_optimizer, torch.device("cpu"), tmp_path / "net.pth",
          desc="tiny", checkpoint_every=1, resume=True)
    (opt,) = made
    assert opt.param_groups[0]["lr"] == 0.001 and opt.param_groups[0]["momentum"] == 0.5
    assert opt.global_step == 5
    assert opt.state  # the momentum buffers came back from the state


def test_a_state_of_another_process_count_gives_rank_r_the_streams_of_rank_r_mod_n(tmp_path,
                                                                                 monkeypatch,
                                                                                 capsys):
    states = engine._StateFile(tmp_path / "s.pth", 1, 12, 4, torch.device("cpu"), "tiny",
                               tmp_path / "net.pth")
    rngs = [{"id": 0}, {"id": 1}]
    assert states._own_rng(rngs) == {"id": 0}
    assert (f"tiny: {tmp_path / 's.pth'} was written by 2 processes and this run has 1: training "
            f"continues from it, but its dropout draws differ from those of an uninterrupted run"
            in capsys.readouterr().out.splitlines())
    monkeypatch.setattr(dist, "world", lambda: (3, 4))
    assert states._own_rng(rngs) == {"id": 1}
    monkeypatch.setattr(dist, "world", lambda: (1, 2))
    assert states._own_rng(rngs) == {"id": 1}
    monkeypatch.setattr(dist, "world", lambda: (0, 2))
    assert states._own_rng(rngs) == {"id": 0}
    assert "processes" not in capsys.readouterr().out  # the same count: no message
    monkeypatch.setattr(dist, "world", lambda: (0, 3))
    assert states._own_rng(rngs) == {"id": 0}
    assert "written by 2 processes and this run has 3" in capsys.readouterr().out


def test_a_non_finite_loss_stops_before_the_update_and_names_the_kept_state(tmp_path):
    def nan_at(k):
        base = _loss(noisy=False)
        calls = []

        def loss_fn(forward, batch):
            calls.append(1)
            loss = base(forward, batch)
            return loss * float("nan") if len(calls) - 1 == k else loss
        return loss_fn
    with pytest.raises(NonFiniteLoss) as err:
        _run(tmp_path, nan_at(7), every=3)
    out = tmp_path / "net.pth"
    assert str(err.value) == (
        f"tiny: the loss is nan at iteration 8 of 12 (epoch 2); training stopped and {out} was "
        f"not written. The last good resumable state, after iteration 6, is kept in "
        f"{state_path(out)}: lower the learning rate (or check the labels and the input data) "
        f"and rerun the same command; it continues from that state.")
    assert not out.exists()
    with pytest.raises(NonFiniteLoss) as err:  # the rerun resumes at 6 and meets it again at 8
        _run(tmp_path, nan_at(1), every=3)
    assert "after iteration 6, is kept" in str(err.value)
    # a state on disk that this call did not write or load
    with pytest.raises(NonFiniteLoss) as err:
        _run(tmp_path, nan_at(0), every=3, resume=False)
    assert str(err.value).endswith(f"{state_path(out)} is an earlier run's state, not this one's: "
                                   f"delete it to start afresh, then lower the learning rate (or "
                                   f"check the labels and the input data) and rerun the same "
                                   f"command.")
    with pytest.raises(NonFiniteLoss) as err:
        _run(tmp_path / "fresh", nan_at(1), every=0)
    assert str(err.value).endswith("No resumable state was written before it: lower the learning "
                                   "rate (or check the labels and the input data) and rerun the "
                                   "same command; it starts afresh.")
    with pytest.raises(NonFiniteLoss, match=r"before it \(one is written every 5 steps\): lower"):
        _run(tmp_path / "fresh5", nan_at(1), every=5)


def test_weights_that_stop_being_finite_are_never_written_as_a_state(tmp_path):
    class Blow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3, 1))

        def forward(self, x):
            return x @ self.w
    calls = []

    def grad_inf(forward, batch):
        calls.append(1)
        w = forward.w
        loss = ((forward(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
        if len(calls) == 5:  # finite loss, infinite gradient: d sqrt(x)/dx at 0
            loss = loss + torch.sqrt(w - w.detach()).sum()
        return loss
    with pytest.raises(NonFiniteLoss, match=r"tiny: the weights are no longer finite after "
                                            r"iteration 5 of 12 \(the loss was still finite: an "
                                            r"exploding gradient\); training stopped .*after "
                                            r"iteration 4, is kept"):
        _run(tmp_path / "b", grad_inf, model=Blow(), every=1)
    state = torch.load(state_path(tmp_path / "b" / "net.pth"), weights_only=True)
    assert state["step"] == 4 and torch.isfinite(state["model"]["w"]).all()


def test_finite_weights_are_judged_on_floating_tensors_only():
    net = torch.nn.BatchNorm1d(2)  # an integer buffer (num_batches_tracked) besides floats
    assert engine._finite(net)
    with torch.no_grad():
        net.weight[0] = float("nan")
    assert not engine._finite(net)
    ints = torch.nn.Module()
    ints.register_buffer("count", torch.tensor([3]))
    assert engine._finite(ints) and engine._finite(torch.nn.Module())


def test_max_steps_cuts_the_last_epoch_short_and_hooks_see_each_update(tmp_path, capsys):
    seen, hooks = [], []
    model, result, _ = _run(tmp_path, _loss(), every=0, max_steps=6,
                            after_step=lambda e, k, n: seen.append((e, k, n)),
                            end_of_epoch=lambda m, e: hooks.append((e, m.training)))
    assert len(result.losses) == 6
    assert seen == [(0, 0, 4), (0, 1, 4), (0, 2, 4), (0, 3, 4), (1, 0, 4), (1, 1, 4)]
    assert hooks == [(0, True), (1, True)]
    log = capsys.readouterr().out
    first, second = sum(result.losses[:4]) / 4, sum(result.losses[4:]) / 2
    assert f"tiny: epoch 1/2 mean loss {first:.4f}" in log.splitlines()
    assert f"tiny: epoch 2/2 mean loss {second:.4f}" in log.splitlines()


def test_the_model_is_back_in_training_mode_after_an_end_of_epoch_hook(tmp_path):
    modes = []

    def loss_fn(forward, batch):
        modes.append(forward.training)
        return ((forward(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
    _run(tmp_path, loss_fn, every=0, end_of_epoch=lambda m, e: m.eval())
    assert modes == [True] * 12


def test_the_loss_sees_tensors_of_the_batch_and_its_other_fields_as_given(tmp_path):
    fields = []

    def loss_fn(forward, batch):
        fields.append((batch["x"].shape, list(batch["name"])))
        return ((forward(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
    _run(tmp_path, loss_fn, epochs=1, every=0)
    assert all(shape == (4, 3) and len(names) == 4 for shape, names in fields)
    assert sorted(n for _, names in fields for n in names) == sorted(f"p{i}" for i in range(16))


def test_a_parameter_the_loss_stops_using_keeps_its_value_under_adam(tmp_path):
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 1), "b": torch.nn.Linear(3, 1)})
    calls = []

    class Fwd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m["a"](x) + (self.m["b"](x) if not calls[1:] else 0)

    net = Fwd()
    after_first = []

    def loss_fn(forward, batch):
        calls.append(1)
        if len(calls) == 2:
            after_first.append(model["b"].weight.detach().clone())
        return ((forward(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
    train(net, loss_fn, Points(), 4, 1, lambda _: torch.optim.Adam(net.parameters(), lr=0.1),
          torch.device("cpu"), tmp_path / "net.pth")
    assert torch.equal(model["b"].weight, after_first[0])  # no gradient since: not moved


def test_the_final_loss_is_the_mean_of_the_last_tenth_of_the_steps():
    assert TrainResult(losses=[float(i) for i in range(1, 21)]).final_loss == 19.5
    assert TrainResult(losses=[4.0, 2.0, 6.0]).final_loss == 6.0  # at least one step
    assert np.isnan(TrainResult().final_loss)


def test_skipping_the_first_batches_of_an_epoch():
    skipped = _SkipFirst([[0], [1], [2], [3]], 3)
    assert len(skipped) == 1 and list(skipped) == [[3]]
    assert list(_SkipFirst([[0], [1]], 0)) == [[0], [1]]


def test_the_state_file_sits_beside_the_checkpoint():
    assert state_path("sess/res50_cam.pth") == Path("sess/res50_cam.state.pth")
    assert state_path(Path("/o/net")) == Path("/o/net.state.pth")


def test_the_cuda_stream_is_kept_and_restored_only_when_both_runs_are_on_cuda(monkeypatch):
    cuda, cpu = torch.device("cuda", 1), torch.device("cpu")
    saved = torch.tensor([7, 8], dtype=torch.uint8)  # stands for the GPU generator's state
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: saved if device == cuda else None)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append(
        (state is saved, device)))
    on_gpu, on_cpu = engine._rng_state(cuda), engine._rng_state(cpu)
    assert set(on_gpu) == {"torch", "python", "numpy", "cuda"} and on_gpu["cuda"] is saved
    assert set(on_cpu) == {"torch", "python", "numpy"}
    engine._set_rng_state(on_gpu, cuda)
    assert restored == [(True, cuda)]
    engine._set_rng_state(on_gpu, cpu)  # a GPU run's state resumed on the CPU: no GPU stream
    engine._set_rng_state(on_cpu, cuda)  # a CPU run's state on a GPU: none saved to restore
    assert restored == [(True, cuda)]


def test_batches_are_pinned_for_a_gpu_only():
    sampler = dist.GlobalBatchSampler(16, 4, seed=0)
    assert engine._epoch_loader(Points(), sampler, 0, torch.device("cuda", 0), 0, 0).pin_memory
    assert not engine._epoch_loader(Points(), sampler, 0, torch.device("cpu"), 0, 0).pin_memory


def test_several_processes_train_the_model_under_ddp_with_its_gpu_as_device_ids(monkeypatch):
    made = []
    monkeypatch.setattr(engine, "DistributedDataParallel",
                        lambda model, device_ids: made.append((model, device_ids)) or "ddp")
    net = _net()
    assert engine._distributed(net, torch.device("cpu"), 1) is net
    assert engine._distributed(net, torch.device("cuda", 0), 1) is net
    assert made == []  # one process: no wrapper
    assert engine._distributed(net, torch.device("cuda", 3), 2) == "ddp"
    assert engine._distributed(net, torch.device("cpu"), 4) == "ddp"
    assert made == [(net, [3]), (net, None)]


_unpickled = []


def _record_unpickling(tag: str) -> None:
    _unpickled.append(tag)


class _RunsOnLoad:
    """An object whose unpickling calls a function: what weights_only loading refuses."""

    def __reduce__(self):
        return (_record_unpickling, ("ran",))


def test_a_state_file_is_read_without_running_pickled_code(tmp_path):
    with pytest.raises(Stop):
        _run(tmp_path, _loss(stop_at=5))
    path = state_path(tmp_path / "net.pth")
    state = torch.load(path, weights_only=True)
    state["payload"] = _RunsOnLoad()
    torch.save(state, path)
    with pytest.raises(pickle.UnpicklingError):
        _run(tmp_path, _loss())
    assert _unpickled == []


def test_a_state_of_the_same_record_is_resumed(tmp_path, capsys):
    out = tmp_path / "net.pth"
    write_record(out, {"id": "rec1"}, complete=False)
    with pytest.raises(Stop):
        _run(tmp_path, _loss(stop_at=5))
    capsys.readouterr()
    _, result, _ = _run(tmp_path, _loss())
    assert f"tiny: resumed from {state_path(out)} at step 5/12" in capsys.readouterr().out.splitlines()
    assert len(result.losses) == 12 and not (tmp_path / "net.state.set-aside.pth").exists()


def test_the_fp16_loss_scale_is_restored_only_into_a_run_that_scales_too(tmp_path):
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "s.pth"
    states = engine._StateFile(path, 1, 12, 4, torch.device("cpu"), "tiny", tmp_path / "net.pth")
    rngs = [engine._rng_state(torch.device("cpu"))]

    def scaler(enabled: bool = True, scale: float = 2.0 ** 16) -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cpu", init_scale=scale, enabled=enabled)

    engine._save_state(path, model, opt, 3, 12, 4, [1.0, 2.0, 3.0], rngs, None, scaler(scale=1024.0))
    now = scaler()
    assert states.load(model, opt, now) == [1.0, 2.0, 3.0] and states.step == 3
    assert now.get_scale() == 1024.0
    off = scaler(enabled=False)
    states.load(model, opt, off)  # a float32 run now: no scale to take
    assert off.get_scale() == 1.0
    engine._save_state(path, model, opt, 3, 12, 4, [1.0], rngs, None, scaler(enabled=False))
    now = scaler()
    states.load(model, opt, now)  # a float32 run's state: the scaler keeps its initial scale
    assert now.get_scale() == 2.0 ** 16


def test_the_final_checkpoint_holds_the_module_beside_the_model_under_its_prefix():
    model, teacher = torch.nn.Linear(2, 1), torch.nn.Linear(3, 2)
    state = engine.final_state(model, teacher, "teacher.")
    assert set(state) == {"weight", "bias", "teacher.weight", "teacher.bias"}
    assert torch.equal(state["teacher.weight"], teacher.weight) and state["weight"].shape == (1, 2)
    assert set(engine.final_state(model, teacher, None)) == {"weight", "bias"}
    assert set(engine.final_state(model, None, "teacher.")) == {"weight", "bias"}


def test_by_default_train_uses_seed_0_and_neither_writes_nor_resumes_a_state(tmp_path,
                                                                            monkeypatch):
    ref, names = [], []
    _run(tmp_path / "ref", _loss(seen=ref), every=0, seed=0)
    with pytest.raises(Stop):  # a state of this very run on disk, after 5 steps
        _run(tmp_path, _loss(stop_at=5))
    written = []
    monkeypatch.setattr(engine, "_save_state", lambda *args, **kwargs: written.append(args[3]))
    model = _net()
    result = train(model, _loss(seen=names), Points(), 4, 3,
                   lambda _: torch.optim.SGD(model.parameters(), lr=0.02), torch.device("cpu"),
                   tmp_path / "net.pth")
    assert len(names) == 12 and len(result.losses) == 12  # not resumed: all 12 steps run here
    assert names == ref  # the batches of seed 0
    assert written == []


def test_a_state_due_at_an_epochs_end_is_written_once_after_the_end_of_epoch_hook(tmp_path,
                                                                                 monkeypatch):
    events = []
    monkeypatch.setattr(engine, "_save_state",
                        lambda path, model, opt, step, *a, **k: events.append(f"state {step}"))

    def hook(model, epoch):
        events.append(f"hook {epoch}")
    _run(tmp_path / "a", _loss(), every=4, end_of_epoch=hook)  # 4 steps an epoch, 12 in all
    assert events == ["hook 0", "state 4", "hook 1", "state 8", "hook 2"]
    events.clear()
    _run(tmp_path / "b", _loss(), every=3, end_of_epoch=hook)
    assert events == ["state 3", "hook 0", "state 6", "hook 1", "state 9", "hook 2"]


def test_the_result_holds_the_seconds_from_the_calls_start_to_its_end(tmp_path, monkeypatch):
    clock = iter([1000.0])  # the first reading at the start, 1002.5 from then on
    monkeypatch.setattr(engine, "time", SimpleNamespace(time=lambda: next(clock, 1002.5)))
    _, result, _ = _run(tmp_path, _loss(), epochs=1, every=0)
    assert result.seconds == 2.5
