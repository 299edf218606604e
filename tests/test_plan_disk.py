"""The plan's disk estimate (step/driver/plan.py) against the bytes of real files: map folders
written with misc/io/maps.save_maps, label PNGs and instance files as the steps write them,
checkpoints of the networks the steps train, and a training run's resumable state. Each
estimate must fall inside a stated factor band of the real bytes, with a lower and an upper
bound, so that a constant off by one (a byte per pixel more, one channel more, one training
copy more) moves it out. Fast: tiny images, networks built on the meta device."""
from __future__ import annotations

import os
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import binary_dilation, binary_erosion, gaussian_filter

import run_sample
from misc.engine.train import state_path, train
from misc.io.checkpoints import save_checkpoint
from misc.io.maps import save_maps
from misc.irn.ins_seg import InstanceResult, save_instances
from step.driver import plan
from tests.tiny import REPO, flags, write_fake_voc

# The bands. Maps: bilinear-upsampled smooth fields, 16-bit delta-coded and deflated, measured
# at 0.87-1.17 of the estimate; one channel or one byte per channel-pixel more gives >= 1.7.
MAP_BAND = (0.7, 1.5)
# Labels and instances: two-region PNGs (and npz) compress better than a real scene's labels,
# so the estimate is an upper bound (measured 1.3-8.6x); a byte per pixel more gives >= 19x.
LABEL_BAND = (1.0, 12.0)
# channels beyond the classes (AMN and BAO: the background), CAM-like, with a label plane
MAPS = {"cam": (0, True, False), "transcam": (0, True, False), "amn_cam": (1, False, False),
        "bao_cam": (1, False, True), "bao_amn_cam": (1, False, True)}
LABELS = ("ir_label", "amn_ir_label", "sem_seg", "seg_pred", "seg_test", "seg_gt_pred",
          "bao_label", "bao_amn_label")
STEPS = ["make_cam", "make_amn_cam", "make_transcam", "make_bao", "make_bao_amn",
         "cam_to_ir_label", "amn_cam_to_ir_label", "make_sem_seg", "make_ins_seg", "eval_seg",
         "eval_seg_gt"]


def _make_run(base: Path, classes: int) -> types.SimpleNamespace:
    """Six 96x128 images of `classes` classes each (of 3), every output folder under `out`."""
    root, out = base / "VOC2012", base / "out"
    ids = write_fake_voc(root, [(96, 128)] * 6, n_classes=3)
    (root / "cls_labels.csv").write_text("image_id,class0,class1,class2\n" + "".join(
        f"{i}," + ",".join(["1"] * classes + ["0"] * (3 - classes)) + "\n" for i in ids))
    folders = {"transcam": "transcam_out_dir", "bao_cam": "bao_cam_out_dir",
               "bao_label": "bao_out_dir", "bao_amn_cam": "bao_amn_cam_out_dir",
               "bao_amn_label": "bao_amn_out_dir", "seg_test": "seg_test_out_dir",
               "seg_gt_pred": "seg_gt_pred_out_dir"}
    extra = [a for name, flag in folders.items() for a in (f"--{flag}", str(out / name))]
    extra += ["--seg_test_list", str(root / "ImageSets/Segmentation/val.txt")]
    args = run_sample.resolved(flags(root, out, base / "r50.pth") + extra)
    return types.SimpleNamespace(root=root, out=out, ids=ids, args=args, classes=classes)


@pytest.fixture(scope="module", params=[1, 2], ids=["1 class", "2 classes"])
def run(tmp_path_factory, request):
    """One class an image tells a channel more or less from the per-channel bytes (x2); two
    tell a map folder with one channel per class from one with a single channel."""
    return _make_run(tmp_path_factory.mktemp("disk"), request.param)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("plain"), 1)


def _smooth_maps(rng, k: int, height: int, width: int, cam: bool):
    """(stride-4 maps, full-size maps) in [0, 1] as the seed passes make them: a smooth field
    at stride 4 (ReLU'd and max-normalised for a CAM, a sigmoid for AMN's softmax-like maps),
    bilinearly upsampled."""
    low = np.stack([gaussian_filter(rng.normal(size=((height + 3) // 4, (width + 3) // 4)), 2.0)
                    for _ in range(k)])
    if cam:
        low = np.maximum(low, 0) / np.maximum(low, 0).max(axis=(1, 2), keepdims=True)
    else:
        low = 1 / (1 + np.exp(-low / low.std()))
    high = F.interpolate(torch.from_numpy(low)[None].float(), size=(height, width),
                         mode="bilinear", align_corners=False)[0].numpy()
    return low.astype(np.float32), np.clip(high, 0, 1)


def _write_outputs(root: Path, out: Path, ids: list[str], classes: int) -> None:
    """Every per-image output of the make/eval passes, for each id, in the steps' formats."""
    rng = np.random.default_rng(0)
    for name in (*MAPS, *LABELS, "ins_seg"):
        (out / name).mkdir(parents=True, exist_ok=True)
    for i in ids:
        gt = np.array(Image.open(root / "SegmentationClass" / f"{i}.png"))
        band = binary_dilation(gt, iterations=3) & ~binary_erosion(gt, iterations=3)
        ir = np.where(band, 255, gt).astype(np.uint8)  # IR labels: an ignored band between
        for name, (extra, cam, with_label) in MAPS.items():
            low, high = _smooth_maps(rng, classes + extra, *gt.shape, cam)
            label = high.argmax(0).astype(np.uint8) if with_label else None
            save_maps(out / name / f"{i}.npz", np.arange(classes), low, high, label=label)
        for name in LABELS:
            Image.fromarray(ir if "ir_label" in name else gt).save(out / name / f"{i}.png")
        save_instances(out / "ins_seg" / f"{i}.npz", InstanceResult(
            gt.astype(np.uint16), np.array([0.9], np.float32), np.array([0])))


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


def test_each_output_folder_estimate_is_within_its_band_of_the_real_files(run):
    checker = plan._Checker(run_sample.PIPELINE, run.args)
    need = checker.output_bytes(STEPS)
    _write_outputs(run.root, run.out, run.ids, run.classes)
    for name in (*MAPS, *LABELS, "ins_seg"):
        low, high = MAP_BAND if name in MAPS else LABEL_BAND
        ratio = need[str(run.out / name)] / _folder_bytes(run.out / name)
        assert low <= ratio <= high, (name, ratio)
    # with every file there (the steps skip them), nothing is needed any more
    after = plan._Checker(run_sample.PIPELINE, run.args).output_bytes(STEPS)
    assert all(after[str(run.out / name)] == 0 for name in (*MAPS, *LABELS, "ins_seg")), after


def _network_bytes(args, n_classes: int, flag: str) -> int:
    """The bytes of the tensors of the network a checkpoint flag's step saves (each shared
    tensor once, as torch.save stores it); BAO's checkpoints hold it twice (student and
    teacher). Built on the meta device (no memory, no time), AMN's on the CPU (the meta
    device's normal_ goes through torch._dynamo, seconds to import)."""
    device = "cpu" if flag in ("amn_weights_name", "bao_amn_weights_name") else "meta"
    with torch.device(device):
        net = plan._network(args, n_classes, flag)
    tensors = list(net.parameters()) + list(net.buffers())  # shared modules counted once
    copies = 2 if flag in plan.BAO_CHECKPOINTS else 1
    return copies * sum(t.numel() * t.element_size() for t in tensors)


def _checkpoint_estimate(args, n_classes: int, flag: str) -> float:
    checker = plan._Checker(run_sample.PIPELINE, args)
    checker.data = types.SimpleNamespace(n_classes=n_classes)  # VOC's 20, COCO's 80
    return checker.checkpoint_bytes(flag)


@pytest.mark.parametrize("flag, backbone", [
    ("cam_weights_name", None), ("amn_weights_name", None), ("irn_weights_name", None),
    ("transcam_weights_name", None), ("bao_weights_name", None),
    ("bao_amn_weights_name", None), ("seg_weights_name", "resnet101"),
    ("seg_weights_name", "resnet50")])
def test_a_checkpoint_estimate_is_its_networks_bytes_at_20_and_at_80_classes(plain, flag,
                                                                             backbone):
    args = types.SimpleNamespace(**{**vars(plain.args), "seg_backbone": backbone or "resnet50"})
    real = {n: _network_bytes(args, n, flag) for n in (20, 80)}
    est = {n: _checkpoint_estimate(args, n, flag) for n in (20, 80)}
    assert 0.98 <= est[20] / real[20] <= 1.02  # within 2%: the base of every network
    if real[80] != real[20]:  # the per-class part (heads): the slope within 10%
        assert 0.9 <= (est[80] - est[20]) / (real[80] - real[20]) <= 1.1
    else:  # IRN has no class head
        assert est[80] - est[20] < 1e3


def test_a_saved_checkpoint_file_is_the_size_the_plan_estimates(plain, tmp_path):
    """The meta-device count above is what torch.save writes: one real AMN checkpoint."""
    torch.manual_seed(0)
    net = plan._network(plain.args, 20, "amn_weights_name")
    save_checkpoint(tmp_path / "amn.pth", net.state_dict())
    ratio = _checkpoint_estimate(plain.args, 20, "amn_weights_name") / (tmp_path / "amn.pth").stat().st_size
    assert 0.98 <= ratio <= 1.02


class _Stop(Exception):
    pass


def test_training_needs_its_checkpoint_and_the_resumable_state_beside_it(plain, tmp_path):
    """A run with momentum SGD (train_cam's, train_irn's, train_seg's) stopped after a state:
    on disk the state (weights and momentum) and then the final checkpoint, three copies of
    the weights; the plan counts a training pass's checkpoint that many times."""
    model = torch.nn.Linear(256, 256)
    data = [{"x": torch.randn(256)} for _ in range(8)]
    dataset = _Points(data)
    calls = []

    def loss_fn(forward, batch):
        if len(calls) == 1:
            raise _Stop
        calls.append(1)
        return forward(batch["x"]).square().mean()
    out = tmp_path / "net.pth"
    with pytest.raises(_Stop):
        train(model, loss_fn, dataset, 4, 2, lambda _: torch.optim.SGD(
            model.parameters(), lr=0.1, momentum=0.9), torch.device("cpu"), out,
            checkpoint_every=1)
    save_checkpoint(out, model.state_dict())
    real = (state_path(out).stat().st_size + out.stat().st_size) / out.stat().st_size
    checker = plan._Checker(run_sample.PIPELINE, plain.args)
    path = plain.args.cam_weights_name
    copies = checker.output_bytes(["train_cam"])[path] / checker.checkpoint_bytes("cam_weights_name")
    assert 0.9 <= copies / real <= 1.1, (copies, real)


class _Points(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def test_without_image_labels_a_map_estimate_takes_vocs_classes_per_image(plain):
    """VOC's train_aug holds 1.56 classes per image (worked out here from voc12/cls_labels.csv);
    the estimate's assumption for a list without labels is within 10% of it."""
    rows = (REPO / "voc12" / "cls_labels.csv").read_text().splitlines()[1:]
    train_aug = set((REPO / "voc12" / "train_aug.txt").read_text().split())
    counts = [sum(map(int, r.split(",")[1:])) for r in rows if r.split(",")[0] in train_aug]
    voc = sum(counts) / len(counts)
    assumed = plan._Checker(run_sample.PIPELINE, plain.args).mean_classes(["not_a_labelled_id"])
    assert 0.9 <= assumed / voc <= 1.1, (assumed, voc)


def test_the_mean_image_size_reads_20_evenly_spaced_headers(tmp_path):
    """40 ids alternating 32x32 and 64x64 images: every second header is read (40 // 20), all
    of them 32x32."""
    small, big = tmp_path / "small.png", tmp_path / "big.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(small)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(big)
    data = types.SimpleNamespace(image_path=lambda i: small if int(i) % 2 == 0 else big)
    assert plan._mean_pixels(data, tuple(str(i) for i in range(40))) == 32 * 32
    assert plan._mean_pixels(data, tuple(str(i) for i in range(3))) == (2 * 32 * 32 + 64 * 64) / 3


def test_unreadable_images_leave_the_mean_size_of_the_others_and_none_gives_zero(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((10, 30), np.uint8)).save(image)
    data = types.SimpleNamespace(image_path=lambda i: image if i == "a" else tmp_path / "gone.png")
    assert plan._mean_pixels(data, ("gone", "a", "a")) == 300.0
    assert plan._mean_pixels(data, ("gone", "gone")) == 0.0  # nothing to estimate from


def test_sizes_read_in_gb_from_a_tenth_of_a_gb_and_in_mb_below():
    assert plan._gb(2.5e9) == "2.5 GB" and plan._gb(1e8) == "0.1 GB"
    assert plan._gb(1.5e8) == "0.1 GB" and plan._gb(99.9e6) == "99.9 MB"


def test_the_outputs_of_one_filesystem_are_summed_against_its_free_space(tmp_path, monkeypatch):
    """Four folders on the filesystem of tmp_path (not yet made): the total against the free
    space; above it, one problem naming the three biggest, biggest first."""
    mount = plan._mount(tmp_path / "a" / "b")
    assert os.path.ismount(mount) and tmp_path.is_relative_to(mount)
    assert not any(os.path.ismount(p) for p in tmp_path.parents if p != mount and
                   p.is_relative_to(mount))
    needs = {str(tmp_path / name): n for name, n in
             (("small", 1e8), ("big", 4e8), ("mid", 2e8), ("mid2", 3e8))}
    monkeypatch.setattr(plan.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=1e9))
    lines, problems = plan._disk_report(needs)
    assert lines == [f"plan: outputs need ~1.0 GB, 1.0 GB free on {mount}"] and problems == []
    monkeypatch.setattr(plan.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=9e8))
    lines, problems = plan._disk_report(needs)
    assert problems == [f"{mount}: the outputs need ~1.0 GB ({tmp_path / 'big'} ~0.4 GB, "
                        f"{tmp_path / 'mid2'} ~0.3 GB, {tmp_path / 'mid'} ~0.2 GB) and only "
                        f"0.9 GB are free: free space or point the output flags at another disk"]
