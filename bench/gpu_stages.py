"""The stages of bench/gpu_check.py: each measures one group of GPU claims and returns a JSON-able
dict (docs/gpu_check.md). The step runners are bench/bench_voc_scale.py's (configured as the
step modules configure them), the reference-style loops those of bench/bench_make_cam.py and
bench/bench_random_walk.py; this module only sweeps their settings and collects the figures.

A stage gets a `StageEnv`: the work folder (the synthetic VOC-size dataset written once by the
parent), the device, whether this is the CPU smoke run, a deadline, and `save`, which writes the
result so far (a stage killed at its budget still leaves its finished rows).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from bench import bench_voc_scale as voc
from bench.bench_random_walk import labels as walk_labels
from bench.bench_random_walk import make_inputs
from misc.engine.precision import Amp, native_bf16, strict_float32
from misc.irn.random_walk import random_walk

REPO = Path(__file__).resolve().parents[1]
# the precisions measured: float32, then --amp's two dtypes forced (a GPU's choice is one of them)
PRECISIONS: dict[str, Amp] = {"float32": False, "bfloat16": torch.bfloat16,
                              "float16": torch.float16}
TRAIN_STEPS = ("train_cam", "train_amn", "train_irn", "train_seg")
# later methods (train_transcam, train_bao) join here once their steps exist
TRAIN_RUNNERS: dict[str, Callable[[voc.Ctx], dict]] = {
    "train_cam": voc.run_train_cam, "train_amn": voc.run_train_amn,
    "train_irn": voc.run_train_irn, "train_seg": voc.run_train_seg}
# the rest of the chain to pseudo-masks (CPU CRFs, the seed sweeps, IRN + walk), for the total
CHAIN_RUNNERS: dict[str, Callable[[voc.Ctx], dict]] = {
    "cam_to_ir_label": voc.run_cam_to_ir_label, "eval": voc.run_eval,
    "amn_cam_to_ir_label": voc.run_amn_cam_to_ir_label, "make_sem_seg": voc.run_make_sem_seg}


@dataclass
class Sizes:
    """How big a run is: images, training iterations and batch, the (precision, channels_last)
    pairs of training and of the map steps' default batch, inference batches (float32), the
    eval_seg (precision, CRF) pairs, the walk's map."""
    n_images: int
    image_size: tuple[int, int]
    train_iters: int
    train_batch: int | None  # None: each step's reference batch
    configs: tuple[tuple[str, bool], ...]
    infer_batches: tuple[int, ...]
    seg_configs: tuple[tuple[str, bool], ...]
    walk_size: tuple[int, int]
    walk_exp_times: int


EVERY_CONFIG = tuple((p, layout) for p in PRECISIONS for layout in (False, True))
GPU_SIZES = Sizes(16, voc.VOC_SIZES[0], 5, None, EVERY_CONFIG, (1, 4, 8, 16),
                  (("float32", False), ("float32", True), ("bfloat16", False)), (94, 125), 8)
# the smoke run: each code path once, one timed iteration: training in float32 and
# channels_last (CPUs emulate fp16 and bf16 slowly; the fp16 scaler's training path is
# tests/test_gpu_paths.py's), the map steps in float32 at two batches and in bf16 +
# channels_last, eval_seg with its CRF
SMOKE_SIZES = Sizes(2, (48, 64), 1, 1, (("float32", True),), (1, 2), (("float32", True),),
                    (24, 32), 3)
# the smoke run's network settings (bench_voc_scale.SETTINGS overridden while it runs)
SMOKE_SETTINGS = dict(cam_crop_size=32, cam_resize_long=(32, 48), cam_scales=(1.0, 0.5),
                      amn_crop_size=32, irn_crop_size=80, seg_backbone="resnet50",
                      seg_crop_size=32, seg_scales=(1.0,), exp_times=3, infer_batch_size=2)


@dataclass
class StageEnv:
    work: Path
    device: torch.device
    smoke: bool
    deadline: float  # time.monotonic() by which the stage must end
    result_path: Path | None = None
    num_workers: int = 0

    @property
    def sizes(self) -> Sizes:
        return SMOKE_SIZES if self.smoke else GPU_SIZES

    def ctx(self, amp: Amp = False, channels_last: bool = False, infer_batch: int | None = None,
            inference_dropout: bool = True) -> voc.Ctx:
        s = self.sizes
        return voc.Ctx(self.work, self.device, amp, self.num_workers, s.train_batch,
                       s.train_iters, channels_last, infer_batch, inference_dropout)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self, result: dict) -> dict:
        if self.result_path is not None:
            self.result_path.write_text(json.dumps(result, default=str))
        return result


@contextlib.contextmanager
def network_settings(smoke: bool) -> Iterator[None]:
    """bench_voc_scale's settings (the voc12 profile) as this run uses them: the smoke sizes
    while a smoke run lasts, restored after it."""
    saved = dict(voc.S)
    if smoke:
        voc.S.update(SMOKE_SETTINGS)
    try:
        yield
    finally:
        voc.S.clear()
        voc.S.update(saved)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


def _measured(env: StageEnv, fn: Callable[[], dict], last_seconds: float) -> dict:
    """fn() in strict float32 (as the driver's passes), with its wall time and peak GPU memory;
    skipped when the stage's budget cannot take another run as long as the last one, and
    recorded as failed (not raised) when it fails, so the stage's other rows still run."""
    if env.left() < 1.2 * last_seconds:
        return {"skipped": f"stage budget: {env.left():.0f} s left, the last run took "
                           f"{last_seconds:.0f} s"}
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(env.device)
    start = time.perf_counter()
    try:
        with strict_float32():
            out = fn()
    except Exception as err:  # e.g. out of memory in one precision: the others still run
        out = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    return {**out, "wall_s": time.perf_counter() - start, "peak_gpu_mib": _peak_mib(env.device)}


# ---------------------------------------- stages --------------------------------------------

def stage_device(env: StageEnv) -> dict:
    """What ran the check: the GPU, its count, memory, capability, native bf16, versions."""
    out = {"device": str(env.device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpu_count": os.cpu_count(), "native_bf16": native_bf16(env.device)}
    if env.device.type == "cuda":
        props = torch.cuda.get_device_properties(env.device)
        out.update(gpu=props.name, gpus=torch.cuda.device_count(),
                   memory_gib=props.total_memory / 2 ** 30,
                   capability=f"{props.major}.{props.minor}",
                   cudnn=torch.backends.cudnn.version(),
                   nccl=str(torch.cuda.nccl.version()))
    return env.save(out)


def cuda_test_files() -> list[str]:
    """The test files that hold tests marked `cuda` (they skip without CUDA)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "pytest.mark.cuda" in p.read_text())


def stage_cuda_tests(env: StageEnv) -> dict:
    """The tests marked `cuda`, run here: each test's outcome."""
    files, xml = cuda_test_files(), env.work / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
           f"--junitxml={xml}", *files]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          timeout=max(5.0, env.left() - 2))
    outcomes = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else \
            "skipped" if "skipped" in kinds else "passed"
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = outcome
    counts = {k: sum(v == k for v in outcomes.values()) for k in ("passed", "failed", "skipped")}
    return env.save({"files": files, "counts": counts, "tests": outcomes,
                     "exit_code": proc.returncode, "tail": proc.stdout[-1500:]})


def train_stage(step: str) -> Callable[[StageEnv], dict]:
    """A training step at VOC sizes in every precision, channels_last off and on: images/s and
    peak GPU memory, the iteration time at the reference batch."""
    def run(env: StageEnv) -> dict:
        rows, last = [], 0.0
        for name, layout in env.sizes.configs:
            ctx = env.ctx(PRECISIONS[name], layout)
            got = _measured(env, lambda: TRAIN_RUNNERS[step](ctx), last)
            last = got.get("wall_s", last)
            row = {"precision": name, "channels_last": layout, **got}
            if "seconds_per_unit" in got:
                row["images_per_s"] = got["reference_batch"] / got["seconds_per_unit"]
            rows.append(row)
            env.save({"rows": rows})
        return env.save({"rows": rows})
    run.__name__ = f"stage_{step}"
    return run


def _amn_reference(ctx: voc.Ctx) -> dict:
    """make_amn_cam's per-image loop: the mechanism at batch 1 (one image and its mirror per
    forward and scale, as the reference), its maps kept as the reference folder."""
    one = dataclasses.replace(ctx, infer_batch=1)
    out = voc.run_make_amn_cam(one)
    ref = ctx.work / "ref" / "make_amn_cam"
    shutil.rmtree(ref, ignore_errors=True)
    shutil.copytree(ctx.work / "ours" / "make_amn_cam", ref)
    return out


def inference_stage(step: str, ours: Callable[[voc.Ctx], dict],
                    reference: Callable[[voc.Ctx], dict]) -> Callable[[StageEnv], dict]:
    """make_cam / make_amn_cam: the reference-style per-image loop, then ours at every batch
    size (float32) and at the default batch in the other precisions and layouts; images/s,
    the ratio to the loop, and whether each run's maps equal the loop's (bench_voc_scale's
    tolerance: 1e-4 in float32, 3e-2 under autocast). make_amn_cam runs with its inference
    dropout off: the quirk's draws depend on the batch and layout, and would hide every
    other difference (its cost is one elementwise mask)."""
    def run(env: StageEnv) -> dict:
        ids = env.ctx().ids
        ref = _measured(env, lambda: reference(env.ctx(inference_dropout=False)), 0.0)
        ref.pop("check", None)  # bench_voc_scale's comparison with ours, not yet made
        rows, last = [], ref.get("wall_s", 0.0)
        default = voc.S["infer_batch_size"]
        variants = [(b, "float32", False) for b in env.sizes.infer_batches] + [
            (default, p, layout) for p, layout in env.sizes.configs + (("bfloat16", True),)
            if (p, layout) != ("float32", False)]
        for batch, name, layout in variants:
            ctx = env.ctx(PRECISIONS[name], layout, batch, inference_dropout=False)

            def one() -> dict:
                got = ours(ctx)
                got["check"] = voc.compare_maps(env.work / "ours" / step, env.work / "ref" / step,
                                                ids, voc.check_tolerance(ctx))
                return got
            got = _measured(env, one, last)
            last = got.get("wall_s", last)
            rows.append({"batch": batch, "precision": name, "channels_last": layout, **got})
            env.save({"reference": ref, "rows": rows})
        for row in rows:
            if "seconds_per_unit" in row and "seconds_per_unit" in ref:
                row["ratio_to_reference"] = ref["seconds_per_unit"] / row["seconds_per_unit"]
        return env.save({"reference": ref, "rows": rows})
    run.__name__ = f"stage_{step}"
    return run


def _best_time(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int
               ) -> tuple[torch.Tensor, float]:
    """fn()'s result and its best wall time over `repeats` runs after one warm-up (the cached
    path index, CUDA kernels)."""
    fn()
    times = []
    for _ in range(repeats):
        start = voc.now(device)
        out = fn()
        times.append(voc.now(device) - start)
    return out, min(times)


def stage_random_walk(env: StageEnv) -> dict:
    """make_sem_seg's sparse random walk at a VOC-size stride-4 map, on the CPU and on the GPU:
    seconds (best of 3) and the share of labels that agree."""
    (h, w), k = env.sizes.walk_size, 3
    kw = dict(beta=voc.S["beta"], exp_times=env.sizes.walk_exp_times, radius=5)
    seeds, boundary = make_inputs(h, w, k)
    cpu, t_cpu = _best_time(lambda: random_walk(seeds, boundary, **kw), torch.device("cpu"), 2)
    out = {"map": [h, w], "classes": k, "steps": 2 ** kw["exp_times"], "cpu_s": t_cpu,
           "cpu_threads": torch.get_num_threads()}
    if env.device.type != "cuda":
        return env.save({**out, "skipped": "no CUDA device: the CPU time only"})
    s, b = seeds.to(env.device), boundary.to(env.device)
    with strict_float32():
        gpu, t_gpu = _best_time(lambda: random_walk(s, b, **kw), env.device, 3)
    same = (walk_labels(gpu.cpu()) == walk_labels(cpu)).float().mean().item()
    return env.save({**out, "gpu_s": t_gpu, "speedup": t_cpu / t_gpu, "labels_equal": same,
                     "max_abs_diff": (gpu.cpu() - cpu).abs().max().item()})


def stage_eval_seg(env: StageEnv) -> dict:
    """eval_seg per image (DeepLab-V2 MSC, scale 1) without and with the dense CRF, float32 and
    bf16."""
    rows, last = [], 0.0
    for name, crf in env.sizes.seg_configs:
        got = _measured(env, lambda: voc.run_eval_seg(env.ctx(PRECISIONS[name]), crf=crf), last)
        last = got.get("wall_s", last)
        rows.append({"precision": name, "crf": crf, **got})
        env.save({"rows": rows})
    return env.save({"rows": rows})


def stage_chain_rest(env: StageEnv) -> dict:
    """The other steps of the chain to pseudo-masks (IR labels with their CRF, the seed sweeps,
    make_sem_seg: IRN + walk), float32, for the chain's total."""
    rows, last = {}, 0.0
    for step, runner in CHAIN_RUNNERS.items():
        rows[step] = _measured(env, lambda: runner(env.ctx()), last)
        last = rows[step].get("wall_s", last)
        env.save({"rows": rows})
    return env.save({"rows": rows})


# ------------------------------------- torchrun -------------------------------------------

TINY_CHAIN = ["--train_cam_pass", "True", "--make_cam_pass", "True", "--eval_cam_pass", "True",
              "--cam_crop_size", "64", "--cam_resize_long", "56", "72", "--cam_batch_size", "4",
              "--cam_num_epoches", "2", "--cam_scales", "1.0", "0.5", "--infer_batch_size", "2",
              "--num_workers", "0", "--checkpoint_every", "0"]


def _tiny_chain(root: Path, weights: Path, out: Path, nproc: int, device: str) -> dict:
    """run_sample.py's tiny chain (train_cam, make_cam, eval_cam) in `nproc` processes; the
    train_cam loss curve and eval_cam's mIoU."""
    lst = str(root / "ImageSets" / "Segmentation" / "train.txt")
    flags = ["--voc12_root", str(root), "--train_list", lst, "--val_list", lst,
             "--infer_list", lst, "--backbone_weights", str(weights), "--device", device,
             "--cam_weights_name", str(out / "cam.pth"), "--cam_out_dir", str(out / "cam"),
             "--metrics_file", str(out / "metrics.jsonl"), "--log_name", str(out / "run"),
             *TINY_CHAIN]
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(launcher + ["run_sample.py", *flags], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"{nproc} processes: exit {proc.returncode}: {proc.stderr[-1500:]}")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    curve = (out / "cam.losses.csv").read_text().split()[1:]
    return {"losses": [float(x.split(",")[1]) for x in curve],
            "miou": next(r["miou"] for r in lines if r.get("step") == "eval_cam")}


def stage_torchrun(env: StageEnv) -> dict:
    """The tiny chain under torchrun with every GPU (NCCL) against one process: the loss curve
    (rtol 1e-4) and eval_cam's mIoU (within 1e-3) equal, as tests/test_distributed.py asks of
    gloo. On a CPU (gloo, 2 processes) only when GPU_CHECK_TORCHRUN_CPU=1: minutes on 2 cores."""
    from net.resnet50 import ResNet50

    gpus = torch.cuda.device_count() if env.device.type == "cuda" else 0
    if gpus == 0 and os.environ.get("GPU_CHECK_TORCHRUN_CPU") != "1":
        return env.save({"skipped": "no GPU: the gloo chain is tests/test_distributed.py's "
                                    "(set GPU_CHECK_TORCHRUN_CPU=1 to run it here)"})
    nproc, device = (gpus, "cuda") if gpus else (2, "cpu")
    work = env.work / "torchrun"
    root = work / "voc"
    voc.write_voc(root, [(64, 80)] * 6 + [(80, 64)] * 2, seed=1)
    torch.manual_seed(0)
    torch.save(ResNet50().state_dict(), work / "r50.pth")
    one = _tiny_chain(root, work / "r50.pth", work / "one", 1, device)
    out = {"processes": nproc, "backend": "nccl" if gpus else "gloo", "one_process": one}
    if nproc == 1:
        return env.save({**out, "skipped": "1 GPU: NCCL needs 2 ranks on 2 GPUs (one process "
                                           "per GPU); the one-process chain ran"})
    many = _tiny_chain(root, work / "r50.pth", work / "many", nproc, device)
    close = len(one["losses"]) == len(many["losses"]) and all(
        abs(a - b) <= 1e-4 * abs(a) + 1e-6 for a, b in zip(one["losses"], many["losses"]))
    return env.save({**out, "many_processes": many,
                     "equal": close and abs(one["miou"] - many["miou"]) <= 1e-3})


STAGES: dict[str, Callable[[StageEnv], dict]] = {
    "device": stage_device, "cuda_tests": stage_cuda_tests,
    **{step: train_stage(step) for step in TRAIN_STEPS},
    "make_cam": inference_stage("make_cam", voc.run_make_cam, voc.run_make_cam_ref),
    "make_amn_cam": inference_stage("make_amn_cam", voc.run_make_amn_cam, _amn_reference),
    "random_walk": stage_random_walk, "eval_seg": stage_eval_seg,
    "chain_rest": stage_chain_rest, "torchrun": stage_torchrun,
}
# seconds each stage may take on one H100 (a hard limit on its process, imports included):
# 410 s in all, within the 8 minutes with the parent's data preparation and the processes' exits
BUDGETS = {"device": 10, "cuda_tests": 40, "train_cam": 45, "train_amn": 45, "train_irn": 40,
           "train_seg": 55, "make_cam": 35, "make_amn_cam": 30, "random_walk": 15,
           "eval_seg": 30, "chain_rest": 25, "torchrun": 40}
assert BUDGETS.keys() == STAGES.keys()

