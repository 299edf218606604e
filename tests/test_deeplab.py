"""The segmentation stage: DeepLab-V2 network, weights, schedule, loss, CRF, train/eval steps."""
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import misc.engine.train
import run_sample
from misc import imutils
from misc.data.samples import SegTrainDataset
from misc.engine.losses import pixel_ce
from misc.engine.optim import PolyOptimizer
from misc.engine.train import state_path, train
from misc.imutils import voc_palette
from misc.io.checkpoints import load_checkpoint
from misc.io.png import load_png, save_png
from misc.seeds.crf import crf_inference_prob
from net.deeplabv2 import DeepLabV2, convert_deeplab_pytorch, convert_file, deeplab_v2_msc
from net.resnet50 import ResNet50
from step.train_seg import param_groups
from tests import reference_ops
from tests.tiny import write_fake_voc
from voc12.dataloader import VOCDataset


@pytest.fixture(scope="module")
def r50_deeplab():
    torch.manual_seed(0)
    return deeplab_v2_msc(3, "resnet50")


def conv_out(n: int, caffe: bool) -> int:
    """Logit size of DeepLab-V2 for an input side n (conv1 s2, pool s2, layer2 s2)."""
    n = (n + 6 - 7) // 2 + 1
    n = -(-(n - 1) // 2) + 1 if caffe else (n - 1) // 2 + 1  # 3x3 s2 p1 pool, ceil in Caffe
    return (n - 1) // 2 + 1


def test_output_stride_8_dilations_and_msc_fusion(r50_deeplab):
    model = r50_deeplab.train()
    bb = model.base.backbone
    assert bb.layer3[0].conv2.dilation == (2, 2) and bb.layer3[5].conv2.dilation == (2, 2)
    assert bb.layer4[0].conv2.dilation == (4, 4) and bb.layer3[0].conv2.stride == (1, 1)
    assert bb.layer2[0].conv2.stride == (2, 2) and bb.layer2[0].conv1.stride == (1, 1)
    x = torch.randn(1, 3, 65, 57)
    with torch.no_grad():
        full, half, three_q, fused = model(x)
        assert full.shape == (1, 3, conv_out(65, False), conv_out(57, False)) == (1, 3, 9, 8)
        expect = [model.base.single_scale(F.interpolate(x, scale_factor=s, mode="bilinear",
                                                   align_corners=False)) for s in (0.5, 0.75)]
        assert half.shape[-2:] == (conv_out(32, False), conv_out(28, False))  # floor(65 * 0.5)
        torch.testing.assert_close(half, expect[0])
        torch.testing.assert_close(three_q, expect[1])
        up = [F.interpolate(t, (9, 8), mode="bilinear", align_corners=False) for t in expect]
        torch.testing.assert_close(fused, torch.maximum(full, torch.maximum(*up)))
        model.eval()
        torch.testing.assert_close(model(x), fused)
    model.train()


def test_msc_wraps_the_single_scale_network_with_its_keys(r50_deeplab, tmp_path):
    """MSC by composition keeps the single-scale network's state_dict keys (no `base.`), so
    checkpoints written before the wrapper existed, and by either class, load strictly."""
    base_keys = list(r50_deeplab.base.state_dict())
    assert list(r50_deeplab.state_dict()) == base_keys and base_keys[0] == "backbone.conv1.weight"
    torch.save(r50_deeplab.base.state_dict(), tmp_path / "single.pth")
    other = deeplab_v2_msc(3, "resnet50")
    load_checkpoint(other, tmp_path / "single.pth", made_by="train_seg")
    assert torch.equal(other.base.aspp.c0.weight, r50_deeplab.base.aspp.c0.weight)
    single = DeepLabV2(3, "resnet50")
    torch.save(other.state_dict(), tmp_path / "msc.pth")
    load_checkpoint(single, tmp_path / "msc.pth", made_by="train_seg")
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        torch.testing.assert_close(single.eval()(x), other.base.eval()(x))


def test_resnet101_and_caffe_style_layout():
    model = DeepLabV2(21, "resnet101", style="caffe")
    bb = model.backbone
    assert len(bb.layer3) == 23 and bb.maxpool.ceil_mode
    assert bb.layer2[0].conv1.stride == (2, 2) and bb.layer2[0].conv2.stride == (1, 1)
    assert sorted(k for k in model.state_dict() if k.startswith("aspp")) == [
        f"aspp.c{i}.{p}" for i in range(4) for p in ("bias", "weight")]
    conv = model.aspp.c3
    assert conv.dilation == (24, 24) and conv.padding == (24, 24) and conv.out_channels == 21
    # the sizes of docs/deeplab.md §1.3 for a 321 crop in the Caffe layout: 41 / 31 / 21
    assert [conv_out(n, True) for n in (321, 240, 160)] == [41, 31, 21]
    # normalised RGB -> BGR 0-255 minus the Caffe mean, exactly
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = torch.from_numpy(imutils.hwc_to_chw(imutils.normalize(img)))[None]
    want = img[..., ::-1].astype(np.float64) - np.array([104.008, 116.669, 122.675])
    np.testing.assert_allclose(model.prepare(x)[0].permute(1, 2, 0).numpy(), want, atol=2e-4)


def test_frozen_bn_and_param_groups(r50_deeplab):
    model = r50_deeplab
    groups = param_groups(model, 1e-3, 5e-4)
    listed = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(listed) == sorted(trainable) and len(set(listed)) == len(listed)
    assert not model.base.backbone.bn1.weight.requires_grad
    assert [g["lr"] for g in groups] == [1e-3, 1e-2, 2e-2]
    assert [g["weight_decay"] for g in groups] == [5e-4, 5e-4, 0.0]
    assert all(p.ndim == 1 for p in groups[2]["params"]) and len(groups[2]["params"]) == 4


def test_poly_schedule_every_10_iterations():
    w = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(1))
    opt = PolyOptimizer([{"params": [w], "lr": 1.0, "weight_decay": 5e-4},
                         {"params": [b], "lr": 20.0, "weight_decay": 0.0}],
                        1.0, 5e-4, max_step=100, momentum=0.9, update_every=10)
    assert opt.param_groups[0]["momentum"] == 0.9
    seen = []
    for _ in range(100):
        opt.step()
        seen.append([g["lr"] for g in opt.param_groups])
    seen = np.array(seen)
    assert np.all(seen[:10] == [1.0, 20.0])  # iterations 1-10 use the base lr
    np.testing.assert_allclose(seen[10:20, 0], 0.9 ** 0.9)
    np.testing.assert_allclose(seen[95, 0], 0.1 ** 0.9)
    np.testing.assert_allclose(seen[:, 1], 20 * seen[:, 0])


def test_init_weights_keys_and_mismatch(tmp_path, r50):
    src = ResNet50(num_classes=1000, layers=(3, 4, 23, 3))
    torch.nn.init.normal_(src.layer3[22].conv2.weight)
    state = {k: v for k, v in src.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "r101.pth")  # pre-2018 torchvision files lack the counters
    model = DeepLabV2(21, "resnet101")
    model.load_init(tmp_path / "r101.pth")
    assert torch.equal(model.backbone.layer3[22].conv2.weight, src.layer3[22].conv2.weight)
    with pytest.raises(ValueError,
                       match=r"ResNet-101.*missing keys.*layer3\.10.*--seg_backbone_weights"):
        model.load_init(r50)
    with pytest.raises(FileNotFoundError, match="--seg_backbone_weights"):
        model.load_init(tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match="--seg_backbone_weights"):
        model.load_init(None)


def deeplab_pytorch_names(state: dict) -> dict:
    """Our DeepLab state_dict under deeplab-pytorch's MSC names (docs/deeplab.md §1.1, §2.1)."""
    unit = {"1": "reduce", "2": "conv3x3", "3": "increase"}
    out = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        k = re.sub(r"^backbone\.(conv|bn)1\.", lambda m: f"layer1.conv1.{m[1]}.", k)
        k = re.sub(r"^backbone\.layer(\d)\.(\d+)\.(conv|bn)(\d)\.",
                   lambda m: f"layer{int(m[1]) + 1}.block{int(m[2]) + 1}.{unit[m[4]]}.{m[3]}.", k)
        k = re.sub(r"^backbone\.layer(\d)\.(\d+)\.downsample\.(\d)\.",
                   lambda m: f"layer{int(m[1]) + 1}.block{int(m[2]) + 1}.shortcut."
                             f"{'conv' if m[3] == '0' else 'bn'}.", k)
        out["base." + k] = v
    return out


def test_convert_deeplab_pytorch_checkpoint(r50_deeplab, tmp_path):
    ours = r50_deeplab.state_dict()
    theirs = deeplab_pytorch_names(ours)
    assert "base.layer2.block1.shortcut.conv.weight" in theirs
    assert "base.layer5.block3.conv3x3.bn.running_var" in theirs
    converted, dropped = convert_deeplab_pytorch({**theirs, "base.fc.weight": torch.zeros(1)})
    assert dropped == ["base.fc.weight"] and set(converted) == set(ours)
    torch.save(theirs, tmp_path / "theirs.pth")
    assert "whole DeepLab" in convert_file(tmp_path / "theirs.pth", tmp_path / "ours.pth")
    model = DeepLabV2(3, "resnet50")
    load_checkpoint(model, tmp_path / "ours.pth", made_by="convert")
    assert torch.equal(model.backbone.layer4[2].conv3.weight,
                       r50_deeplab.base.backbone.layer4[2].conv3.weight)
    init = {k[5:]: v for k, v in theirs.items() if not k.startswith("base.aspp")}
    torch.save(init, tmp_path / "init.pth")  # an init file: backbone only, no base. prefix
    assert "backbone state_dict" in convert_file(tmp_path / "init.pth", tmp_path / "bb.pth")
    DeepLabV2(3, "resnet50", style="caffe").load_init(tmp_path / "bb.pth")


def test_balanced_ce_formula_and_empty_terms():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    label = torch.randint(0, 3, (2, 4, 5))
    label[0, 0] = 255
    ce = F.cross_entropy(logits, label.clamp(max=2), reduction="none")
    bg, fg = label == 0, (label > 0) & (label != 255)
    want = 0.5 * (ce[bg].mean() + ce[fg].mean())
    torch.testing.assert_close(pixel_ce(logits, label, balanced=True), want)
    torch.testing.assert_close(pixel_ce(logits, label, balanced=False),
                               F.cross_entropy(logits, label, ignore_index=255))
    only_bg = torch.zeros(2, 4, 5, dtype=torch.long)
    assert torch.isfinite(pixel_ce(logits, only_bg, balanced=True))
    assert pixel_ce(logits, torch.full_like(only_bg, 255), balanced=True) == 0


def test_train_dataset_pads_crops_and_is_reproducible(tmp_path):
    root = tmp_path / "voc"
    ids = write_fake_voc(root, [(20, 30), (48, 64)])
    voc = VOCDataset(root)
    ds = SegTrainDataset(ids, voc, "list", voc.gt_dir(), 40, (0.5, 2.0), 4, seed=3)
    for i in range(2):
        a, b = ds[i], ds[i]
        assert a["img"].shape == (3, 40, 40) and a["label"].shape == (40, 40)
        assert torch.equal(a["img"], b["img"]) and torch.equal(a["label"], b["label"])
        assert set(np.unique(a["label"].numpy())) <= {0, 1, 255}
    small = SegTrainDataset(ids[:1], voc, "list", voc.gt_dir(), 40, (1.0,), 4)[0]
    lab = small["label"].numpy()  # 20x30 image padded bottom/right with 255 (maybe mirrored)
    assert (lab[20:] == 255).all() and (lab[:20] != 255).sum() == 20 * 30
    assert (small["img"][:, 20:] == 0).all()


def test_palette_png_round_trip(tmp_path):
    label = np.array([[0, 1, 2], [15, 20, 255]], np.uint8)
    save_png(tmp_path / "p.png", label, voc_palette())
    with Image.open(tmp_path / "p.png") as img:
        assert img.mode == "P"
        pal = img.getpalette()
        assert pal[3:6] == [128, 0, 0] and pal[6:9] == [0, 128, 0]
        assert pal[3 * 255:3 * 256] == [224, 224, 192]
    np.testing.assert_array_equal(load_png(tmp_path / "p.png"), label)


def test_crf_moves_a_misplaced_boundary_to_the_image_edge():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, 20:] = 255  # the true edge is at column 20
    prob = np.empty((2, 40, 40), np.float32)
    prob[1] = np.where(np.arange(40) >= 14, 0.6, 0.4)[None]  # the logits put it at 14
    prob[0] = 1 - prob[1]
    raw = prob.argmax(0)
    crf = crf_inference_prob(img, prob)
    truth = np.broadcast_to(np.arange(40) >= 20, (40, 40))
    assert (raw == truth).mean() < 0.86
    assert (crf == truth).mean() > 0.98


def seg_flags(root, out, weights):
    lst = str(root / "ImageSets/Segmentation/train_aug.txt")
    return ["--voc12_root", str(root), "--train_list", lst, "--val_list", lst,
            "--device", "cpu", "--num_workers", "0", "--log_name", str(out / "run"),
            "--metrics_file", str(out / "metrics.jsonl"), "--seg_backbone", "resnet50",
            "--seg_backbone_weights", str(weights), "--seg_label_dir", "gt",
            "--seg_crop_size", "32", "--seg_batch_size", "2", "--seg_num_iters", "3",
            "--seg_learning_rate", "1e-4", "--seg_weights_name", str(out / "sess" / "dl.pth"),
            "--seg_pred_out_dir", str(out / "seg_pred"), "--seg_crf_params",
            "2", "3", "1", "4", "67", "3"]


def test_train_and_eval_seg_end_to_end(tmp_path, r50, monkeypatch):
    root = tmp_path / "voc"
    ids = write_fake_voc(root, [(40, 48), (48, 40), (36, 52), (48, 48)])
    (root / "test.txt").write_text("\n".join(ids[:2]) + "\n")
    saved_states = []

    def recording_save_state(path, *args):
        misc_train_save_state(path, *args)
        saved_states.append((args[2], path.is_file()))  # (step, written)

    misc_train_save_state = misc.engine.train._save_state
    monkeypatch.setattr(misc.engine.train, "_save_state", recording_save_state)
    flags = seg_flags(root, tmp_path, r50) + [
        "--train_seg_pass", "True", "--eval_seg_pass", "True", "--seg_infer_flip", "True",
        "--seg_checkpoint_every", "1",
        "--seg_test_list", str(root / "test.txt"), "--seg_test_out_dir", str(tmp_path / "comp6")]
    out = run_sample.main(flags)
    assert list(out["timings"]) == ["train_seg", "eval_seg"]
    assert len(out["results"]["train_seg"]["losses"]) == 3
    assert (tmp_path / "sess" / "dl.pth").is_file()
    # a state was written after steps 1 and 2 (not after the last) and is gone at the end
    assert saved_states == [(1, True), (2, True)]
    assert not state_path(tmp_path / "sess" / "dl.pth").exists()
    for folder, names in ((tmp_path / "seg_pred", ids), (tmp_path / "comp6", ids[:2])):
        for i in names:
            with Image.open(folder / f"{i}.png") as png:
                assert png.mode == "P"
                assert png.size == Image.open(root / "JPEGImages" / f"{i}.jpg").size
            assert set(np.unique(load_png(folder / f"{i}.png"))) <= {0, 1, 2, 3}
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    ev = next(r for r in records if r["step"] == "eval_seg")
    assert ev["crf"] and 0 <= ev["miou"] <= 1 and 0 <= ev["miou_no_crf"] <= 1
    # the recorded mIoU is that of the written predictions against the ground truth
    miou, iou = reference_ops.miou([(load_png(tmp_path / "seg_pred" / f"{i}.png"),
                                     load_png(root / "SegmentationClass" / f"{i}.png"))
                                    for i in ids], 4)
    assert ev["miou"] == pytest.approx(miou, abs=1e-12)
    assert [v if v is not None else float("nan") for v in ev["iou"].values()] == \
        pytest.approx(iou, abs=1e-12, nan_ok=True)
    assert len(ev["iou"]) == 4 and ev["split"] == "train_aug"
    # a rerun with the same checkpoint and settings re-scores without inference
    before = (tmp_path / "seg_pred" / f"{ids[0]}.png").stat().st_mtime_ns
    again = run_sample.main(seg_flags(root, tmp_path, r50) + [
        "--eval_seg_pass", "True", "--seg_infer_flip", "True"])
    assert again["results"]["eval_seg"]["miou"] == ev["miou"]
    assert (tmp_path / "seg_pred" / f"{ids[0]}.png").stat().st_mtime_ns == before
    # other settings redo the predictions
    run_sample.main(seg_flags(root, tmp_path, r50) + ["--eval_seg_pass", "True",
                                                     "--seg_crf", "False"])
    assert (tmp_path / "seg_pred" / f"{ids[0]}.png").stat().st_mtime_ns != before


def test_missing_pseudo_masks_name_the_infer_list(tmp_path):
    root = tmp_path / "voc"
    write_fake_voc(root, [(40, 48)] * 2)
    flags = seg_flags(root, tmp_path, tmp_path / "unused.pth")
    flags[flags.index("--seg_label_dir") + 1] = str(tmp_path / "sem_seg")
    with pytest.raises(FileNotFoundError, match="--infer_list"):
        run_sample.main(flags + ["--train_seg_pass", "True"])


class _Toy(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(6, 3, generator=g), torch.randn(6, 1, generator=g)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return {"x": self.x[i] * (1 + self.epoch), "y": self.y[i]}


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    def run(out, fail_at=None):
        torch.manual_seed(0)
        # dropout draws from the global RNG, which the resumed run must continue exactly
        model = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(3, 1))
        calls = []

        def loss_fn(m, batch):
            calls.append(1)
            if fail_at is not None and len(calls) == fail_at:
                raise KeyboardInterrupt  # the run is killed here
            return F.mse_loss(m(batch["x"]), batch["y"])

        make = lambda n: PolyOptimizer(model.parameters(), 0.1, 1e-4, n, momentum=0.9,
                                       update_every=2)
        result = train(model, loss_fn, _Toy(), 2, 1, make, torch.device("cpu"), out,
                       num_workers=1, max_steps=7, checkpoint_every=2, resume=True)
        return result, model

    full, model_full = run(tmp_path / "a.pth")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.pth", fail_at=6)  # killed in step 6; state saved after step 4 (mid-epoch)
    assert state_path(tmp_path / "b.pth").is_file()
    resumed, model_resumed = run(tmp_path / "b.pth")
    assert len(full.losses) == len(resumed.losses) == 7
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-6)
    assert torch.equal(model_resumed[1].weight, model_full[1].weight)
    assert not state_path(tmp_path / "b.pth").exists()
