"""On a GPU only (marked `cuda`, skipped without one; bench/gpu_check.py runs them): the paths
that tests/test_gpu_paths.py checks on a CPU with fakes, against the real CUDA and NCCL."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as tdist

from misc.engine import dist, precision
from tests.test_gpu_paths import fp16_resume_is_bit_identical

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_a_host_tensor_is_reduced_by_nccl():
    """The eval_seg confusion's path: an int64 CPU tensor through a (one-rank) NCCL group."""
    torch.cuda.set_device(0)
    tdist.init_process_group("nccl", store=tdist.HashStore(), rank=0, world_size=1)
    try:
        conf = torch.arange(9, dtype=torch.int64).view(3, 3) + 2 ** 40
        out = dist._all_reduce(conf, tdist.ReduceOp.SUM)
        assert out.device.type == "cpu" and torch.equal(out, conf)
        assert dist.collective_device() == torch.device("cuda", 0)
    finally:
        tdist.destroy_process_group()


def test_amp_takes_bf16_only_where_native():
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    want = torch.bfloat16 if native else torch.float16
    assert precision.amp_dtype(torch.device("cuda")) == want
    assert precision.grad_scaler(torch.device("cuda"), True).is_enabled() is (not native)


def test_explicit_gpu_number(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    last = torch.cuda.device_count() - 1
    assert dist.init_distributed(f"cuda:{last}") == torch.device("cuda", last)
    assert torch.cuda.current_device() == last
    torch.cuda.set_device(0)


def test_fp16_resume_on_cuda_is_bit_identical(tmp_path):
    fp16_resume_is_bit_identical(tmp_path, "cuda")


def test_strict_float32_is_float32_on_cuda():
    """Inside strict_float32 a float32 matmul is float32-accurate (TF32 would be ~1e-3 off)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    a, b = (torch.randn(512, 512, device="cuda", generator=g) for _ in range(2))
    with precision.strict_float32():
        assert not torch.backends.cudnn.allow_tf32
        err = ((a @ b).double() - a.double() @ b.double()).abs().max().item()
    assert err < 1e-3


def test_maps_on_cuda_equal_the_cpu_maps(tmp_path):
    """make_cam's batched, padded mechanism (collated, pinned batches) on the GPU gives the
    CPU's maps."""
    from misc.data.samples import MultiScaleDataset
    from misc.io.maps import load_maps
    from misc.seeds.multiscale import cam_merge, run_multiscale_inference
    from net.resnet50_cam import Net
    from tests.tiny import write_fake_voc
    from voc12.dataloader import VOCDataset

    root = tmp_path / "voc"
    ids = write_fake_voc(root, [(64, 80), (64, 80), (64, 72), (80, 64)])
    data = MultiScaleDataset(ids, VOCDataset(root, root / "cls_labels.csv"), "x", (1.0, 0.5))
    torch.manual_seed(0)
    model = Net(3).eval()
    for device in ("cpu", "cuda"):
        net = model.to(device)
        with precision.strict_float32():
            run_multiscale_inference(data, lambda x, _l: net.cam(x), cam_merge, tmp_path / device,
                                     torch.device(device), reduce="sum", batch_size=2,
                                     num_workers=1, overwrite=True)
    for i in ids:
        a, b = load_maps(tmp_path / "cpu" / f"{i}.npz"), load_maps(tmp_path / "cuda" / f"{i}.npz")
        assert (a["keys"] == b["keys"]).all()
        for key in ("cam", "high_res"):
            assert abs(a[key].astype("float32") - b[key].astype("float32")).max() < 1e-3
