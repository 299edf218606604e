"""The CUDA / NCCL paths, checked on a CPU (docs/gpu_check.md, "Defects found by reading"):
collectives on the backend's device, the AMP decision, the process group's timeout and device
binding, the fp16 loss scaler in the resumable state, pinned batches reaching the copy, and
strict float32 at the start of every pass. What only a GPU can show is a stage of
bench/gpu_check.py."""
from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as tdist

from misc.engine import dist, precision
from misc.engine.train import state_path, train


class _Collected(Exception):
    """Raised by the fake all_reduce once it has seen its tensor."""


def _fake_group(monkeypatch, backend: str, seen: list) -> None:
    """Two ranks of `backend`, whose all_reduce records the device of its tensor."""
    monkeypatch.setattr(dist, "world", lambda: (0, 2))
    monkeypatch.setattr(tdist, "get_backend", lambda *a: backend)

    def all_reduce(tensor, op=None, **_):
        seen.append(tensor.device)
        raise _Collected
    monkeypatch.setattr(tdist, "all_reduce", all_reduce)


def test_collective_device_under_nccl_is_this_ranks_gpu(monkeypatch):
    _fake_group(monkeypatch, "nccl", [])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert dist.collective_device() == torch.device("cuda", 3)
    monkeypatch.setattr(tdist, "get_backend", lambda *a: "gloo")
    assert dist.collective_device() == torch.device("cpu")


def test_eval_seg_confusion_is_reduced_on_the_collective_device(monkeypatch):
    """eval_seg's confusion is a host array: under NCCL it must travel to the GPU for the
    all-reduce (NCCL rejects CPU tensors). The meta device stands in for the GPU."""
    from misc.eval import seg_inference

    seen: list = []
    _fake_group(monkeypatch, "nccl", seen)
    monkeypatch.setattr(dist, "collective_device", lambda: torch.device("meta"))
    with pytest.raises(_Collected):
        seg_inference._global_sum(np.ones((3, 3), np.int64))
    assert seen == [torch.device("meta")]
    for collective in (lambda: dist.agree(True), lambda: dist.all_reduce_mean(torch.ones(2))):
        with pytest.raises(_Collected):
            collective()
    assert seen == [torch.device("meta")] * 3


def test_eval_seg_confusion_sum_is_exact_in_one_process():
    conf = np.array([[2 ** 40 + 1, 3], [0, 7]], np.int64)  # beyond float32's integers
    from misc.eval.seg_inference import _global_sum
    assert np.array_equal(_global_sum(conf), conf)


@pytest.mark.parametrize("native, emulated, want", [
    (True, True, torch.bfloat16),    # Ampere and later
    (False, True, torch.float16),    # V100 / T4: bf16 only by emulation
    (False, False, torch.float16),   # older GPUs
])
def test_amp_decision_on_cuda(monkeypatch, native, emulated, want):
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return emulated if including_emulation else native
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda = torch.device("cuda", 0)
    assert precision.amp_dtype(cuda) == want
    assert precision.native_bf16("cuda") is native  # the auto rule asks the same question
    assert precision.amp_dtype(cuda, torch.bfloat16) == torch.bfloat16  # a forced dtype wins


def test_amp_decision_on_cpu_and_the_scaler():
    cpu = torch.device("cpu")
    assert precision.amp_dtype(cpu) == torch.bfloat16
    assert not precision.grad_scaler(cpu, True).is_enabled()
    assert precision.grad_scaler(cpu, torch.float16).is_enabled()
    assert not precision.grad_scaler(cpu, False).is_enabled()


def _launch(monkeypatch, env: dict, gpus: int) -> list:
    """init_distributed's calls into torch, in order, with CUDA and a process group faked."""
    calls: list = []
    for key in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(tdist, "is_initialized", lambda: False)
    monkeypatch.setattr(tdist, "init_process_group",
                        lambda backend, **kw: calls.append(("init", backend, kw)))
    monkeypatch.setattr(dist.atexit, "register", lambda fn: None)
    return calls


def test_process_group_waits_longer_than_nccls_default(monkeypatch):
    calls = _launch(monkeypatch, {"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, gpus=0)
    assert dist.init_distributed("cpu", timeout_minutes=90) == torch.device("cpu")
    (_, backend, kw), = calls
    assert backend == "gloo" and kw["timeout"] == timedelta(minutes=90)
    calls.clear()
    dist.init_distributed("cpu")
    assert calls[0][2]["timeout"] >= timedelta(hours=2)  # torch's default is 10 minutes


def test_each_rank_sets_its_gpu_before_the_group(monkeypatch):
    """A launcher that shows each process one GPU: rank 1 uses that GPU (number 0), bound
    before NCCL starts."""
    calls = _launch(monkeypatch, {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, gpus=1)
    assert dist.init_distributed("cuda") == torch.device("cuda", 0)
    assert [c[0] for c in calls] == ["set_device", "init"] and calls[1][1] == "nccl"
    assert calls[0][1] == torch.device("cuda", 0)
    calls = _launch(monkeypatch, {"WORLD_SIZE": "4", "LOCAL_RANK": "3"}, gpus=4)
    assert dist.init_distributed("auto") == torch.device("cuda", 3)
    with pytest.raises(ValueError, match="only 2 GPUs"):
        _launch(monkeypatch, {"WORLD_SIZE": "4", "LOCAL_RANK": "3"}, gpus=2)
        dist.init_distributed("cuda")


def test_explicit_gpu_number_is_used(monkeypatch):
    calls = _launch(monkeypatch, {}, gpus=2)
    assert dist.init_distributed("cuda:1") == torch.device("cuda", 1)
    assert calls == [("set_device", torch.device("cuda", 1))]
    with pytest.raises(ValueError, match="under torchrun"):
        _launch(monkeypatch, {"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, gpus=2)
        dist.init_distributed("cuda:1")


class _Stop(Exception):
    pass


def _fp16_run(out: Path, stop_at: int | None = None, device: str = "cpu") -> None:
    """misc.engine.train.train in fp16 (on the CPU by default) with a loss scaler, a state
    every step; `stop_at`: raise at that call of the loss (a kill after the state of step
    stop_at)."""
    from tests.ddp_tiny_train import Points

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    calls = []

    def loss_fn(forward, batch):
        calls.append(1)
        if len(calls) == stop_at:
            raise _Stop
        # large targets: the first scaled backward passes overflow fp16, so the scaler skips
        # steps and lowers its scale, a state a fresh scaler does not have
        return ((forward(batch["x"])[:, 0] - 300 * batch["y"]) ** 2).mean()
    train(model, loss_fn, Points(), 4, 3, lambda _n: torch.optim.SGD(model.parameters(), 1e-6),
          torch.device(device), out / "net.pth", desc="fp16", checkpoint_every=1, resume=True,
          amp=torch.float16)


def fp16_resume_is_bit_identical(tmp_path: Path, device: str = "cpu") -> None:
    """Killed after step 6 and resumed, an fp16 run ends as the uninterrupted one (also run
    on CUDA by tests/test_cuda.py)."""
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ref.mkdir(), killed.mkdir()
    _fp16_run(ref, device=device)
    with pytest.raises(_Stop):
        _fp16_run(killed, stop_at=7, device=device)
    state = torch.load(state_path(killed / "net.pth"), weights_only=True)
    assert state["step"] == 6 and state["scaler"]["scale"] < 65536.0  # steps were skipped
    _fp16_run(killed, device=device)
    a, b = (torch.load(p / "net.pth", weights_only=True) for p in (ref, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (ref / "net.losses.csv").read_text() == (killed / "net.losses.csv").read_text()


def test_fp16_resume_restores_the_loss_scale_bit_identically(tmp_path):
    fp16_resume_is_bit_identical(tmp_path)


def test_the_copied_batch_is_the_collated_one(tmp_path, monkeypatch):
    """make_cam's forward receives the tensor the loader's collate built (the one DataLoader
    pins), for a same-size batch and for a padded one: no unpinned host copy in between."""
    from misc.data.samples import MultiScaleDataset
    from misc.seeds import multiscale
    from tests.tiny import write_fake_voc
    from voc12.dataloader import VOCDataset

    root = tmp_path / "voc"
    ids = write_fake_voc(root, [(32, 48), (32, 48), (32, 40)])
    data = MultiScaleDataset(ids, VOCDataset(root, root / "cls_labels.csv"), "x", (1.0, 0.5))
    collated, fed = set(), []
    collate = multiscale._collate

    def recording(samples, stride=16):
        batch = collate(samples, stride)
        collated.update(v.data_ptr() for v in batch["views"])
        return batch
    monkeypatch.setattr(multiscale, "_collate", recording)

    def forward(x, labels):
        fed.append(x.data_ptr())
        return torch.nn.functional.avg_pool2d(x[:, :1].repeat(1, 3, 1, 1), 16, ceil_mode=True)
    stats = multiscale.run_multiscale_inference(
        data, forward, multiscale.cam_merge, tmp_path / "out", torch.device("cpu"), reduce="sum",
        batch_size=2, overwrite=True)
    assert stats["written"] == 3 and len(fed) == 2 * 2  # a padded batch and a same-size one, two scales
    assert set(fed) <= collated


def test_every_pass_starts_in_strict_float32(monkeypatch, fake_voc, r50):
    """A pass that allows TF32 and cuDNN benchmarking (train_seg) leaves neither to the next
    (train_cam), which runs in strict float32; torch's settings come back after the passes."""
    import run_sample

    monkeypatch.setattr(type(run_sample.PIPELINE), "recorded_outputs",
                        lambda *a: contextlib.nullcontext())  # no records for fake passes
    seen = {}

    def settings() -> tuple:
        b = torch.backends
        return b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.benchmark

    def seg_run(args):
        precision.allow_tf32(True)
        torch.backends.cudnn.benchmark = True
        seen["train_seg"] = settings()
        return {}

    def cam_run(args):
        seen["train_cam"] = settings()
        return {}
    monkeypatch.setattr(run_sample.PIPELINE.modules["train_seg"], "run", seg_run)
    monkeypatch.setattr(run_sample.PIPELINE.modules["train_cam"], "run", cam_run)
    before = settings()
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # torch's own default
    args = run_sample.resolved(["--voc12_root", str(fake_voc), "--backbone_weights", str(r50),
                                "--device", "cpu"])  # a root: no toy dataset to build
    run_sample.run_pass(args, "train_seg")
    run_sample.run_pass(args, "train_cam")
    assert seen == {"train_seg": (True, True, True), "train_cam": (False, False, False)}
    assert settings()[1:] == before[1:] and settings()[0] is True
