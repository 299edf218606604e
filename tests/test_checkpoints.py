"""Checkpoints: the reference's files (its keys, shapes and dtypes, random values) and this
project's own files load strictly into the networks through misc.io.checkpoints.load_checkpoint, the
function the steps use; IRN's displacement mean is set by train_irn's eval-mode pass only; bad
files give clear messages that name the file, what it holds and the fix (docs/pipeline.md §2.9)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import run_sample
from misc import imutils
from misc.engine.train import state_path
from misc.io.checkpoints import load_checkpoint, save_checkpoint
from misc.io.png import load_png, save_png
from net import deeplabv2, resnet50_amn, resnet50_cam, resnet50_irn
from net.resnet50 import ResNet50
from step import train_irn
from tests.tiny import flags

MANIFESTS = Path(__file__).resolve().parent / "data" / "reference_checkpoints"
N_CLASSES = 20
# what step/*.py pass to load_checkpoint for each network
LOAD_ARGS = {"cam": dict(made_by="train_cam"), "amn": dict(made_by="train_amn"),
             "irn": dict(made_by="train_irn", ignore_prefixes=resnet50_irn.REFERENCE_LOSS_BUFFERS)}
# The reference CAM's alias module lists, written out from its module tree (backbone =
# ModuleList([stage1..4]), newly_added = ModuleList([classifier])): the same tensors.
REFERENCE_CAM_ALIASES = {"backbone.0.": "stage1.", "backbone.1.": "stage2.",
                         "backbone.2.": "stage3.", "backbone.3.": "stage4.",
                         "newly_added.0.": "classifier."}
# one alias key per network whose value must equal another key's (see test below)
ALTERED_ALIAS = {"cam": "newly_added.0.weight", "amn": "newly_added.1.weight",
                 "irn": "dp_layers.6.4.running_mean"}


def make_net(name: str) -> torch.nn.Module:
    return {"cam": lambda: resnet50_cam.Net(N_CLASSES), "amn": lambda: resnet50_amn.Net(N_CLASSES),
            "irn": resnet50_irn.Net}[name]()


def manifest(name: str) -> dict[str, dict]:
    return json.loads((MANIFESTS / f"res50_{name}.keys.json").read_text())


def random_tensor(shape: list[int], dtype: str, gen: torch.Generator) -> torch.Tensor:
    if dtype == "int64":
        return torch.randint(0, 100, shape, generator=gen, dtype=torch.int64)
    return torch.randn(shape, generator=gen, dtype=getattr(torch, dtype))


def reference_state(name: str, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict with every key, shape and dtype of the reference's file, random values, the
    keys that name one tensor in the reference holding one value (as torch.save writes them)."""
    gen = torch.Generator().manual_seed(0)
    state = {k: random_tensor(v["shape"], v["dtype"], gen) for k, v in manifest(name).items()}
    first: dict[tuple, str] = {}  # tensors the project's net shares are shared in the reference
    for key, tensor in net.state_dict().items():
        owner = first.setdefault((tensor.data_ptr(), tuple(tensor.shape)), key)
        if key in state and owner in state:
            state[key] = state[owner]
    if name == "cam":
        for key in [k for k in state if k.startswith(tuple(REFERENCE_CAM_ALIASES))]:
            alias = next(a for a in REFERENCE_CAM_ALIASES if key.startswith(a))
            state[key] = state[REFERENCE_CAM_ALIASES[alias] + key[len(alias):]]
    return state


@pytest.mark.parametrize("name", ["cam", "amn", "irn"])
def test_reference_checkpoint_loads_strictly(name, tmp_path):
    """The reference's file loads with the documented mapping and every value lands; a file
    whose alias keys disagree is refused (load_state_dict would keep one silently)."""
    net = make_net(name)
    state = reference_state(name, net)
    torch.save(state, tmp_path / "ref.pth")
    load_checkpoint(net, tmp_path / "ref.pth", **LOAD_ARGS[name])
    loaded = net.state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    if name == "irn":
        assert torch.equal(net.mean_shift.running_mean, state["mean_shift.running_mean"])

    key = ALTERED_ALIAS[name]
    torch.save({**state, key: state[key] + 1}, tmp_path / "altered.pth")
    other = make_net(name)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match=rf"altered.pth: .*{key}.* the same tensor .*differ"):
        load_checkpoint(other, tmp_path / "altered.pth", **LOAD_ARGS[name])
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())


def test_own_checkpoints_load_and_irn_keeps_the_reference_keys(tmp_path):
    """Files the project writes load back; IRN's has exactly the reference's keys (less the
    loss buffers), CAM's the reference's less its alias lists."""
    for name in ("cam", "amn", "irn"):
        torch.manual_seed(1)
        net = make_net(name)
        state = net.state_dict()
        save_checkpoint(tmp_path / f"{name}.pth", state)
        other = make_net(name)
        load_checkpoint(other, tmp_path / f"{name}.pth", **LOAD_ARGS[name])
        for key, value in other.state_dict().items():
            assert torch.equal(value, state[key]), key
    ref = set(manifest("irn"))
    saved = set(torch.load(tmp_path / "irn.pth", weights_only=True))
    assert saved == {k for k in ref if not k.startswith(resnet50_irn.REFERENCE_LOSS_BUFFERS)}
    saved_cam = set(torch.load(tmp_path / "cam.pth", weights_only=True))
    assert saved_cam == {k for k in manifest("cam")
                         if not k.startswith(tuple(REFERENCE_CAM_ALIASES))}


def test_a_training_forward_leaves_the_displacement_mean_alone():
    """Training returns the raw displacement and never updates the stored mean; eval mode
    subtracts it."""
    torch.manual_seed(0)
    net = resnet50_irn.Net()
    net.mean_shift.running_mean.copy_(torch.tensor([0.3, -0.2]))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _, raw = net.train()(x)
        _, shifted = net.eval()(x)
    assert net.mean_shift.running_mean.tolist() == pytest.approx([0.3, -0.2])
    torch.testing.assert_close(shifted, raw - torch.tensor([0.3, -0.2]).view(1, 2, 1, 1))
    assert set(net.mean_shift.state_dict()) == {"running_mean"}


def top_left_crops(root: Path, ids: list[str], size: int) -> torch.Tensor:
    """(N, 3, size, size): the normalised images, top-left crops padded with zeros."""
    crops = []
    for i in ids:
        img = imutils.normalize(imutils.read_image(root / "JPEGImages" / f"{i}.jpg"))
        (img,) = imutils.crop_arrays([img], [0.0], size, None)
        crops.append(torch.from_numpy(imutils.hwc_to_chw(img)))
    return torch.stack(crops)


def test_train_irn_stores_the_eval_mode_mean_of_the_inference_images(tiny_toy, tmp_path, r50):
    """train_irn's checkpoint: the reference's keys, and mean_shift.running_mean = the mean raw
    displacement (eval mode) over the top-left crops of --infer_list (one batch of 8 here)."""
    lists = tiny_toy / "ImageSets" / "Segmentation"
    ids = (lists / "train.txt").read_text().split()
    for i in ids:  # IR labels: the ground truth
        save_png(tmp_path / "amn_ir_label" / f"{i}.png",
                 load_png(tiny_toy / "SegmentationClass" / f"{i}.png"))
    args = run_sample.resolved(  # one step on 8 images
        flags(tiny_toy, tmp_path, r50)
        + ["--irn_num_epoches", "1", "--train_list", str(lists / "train.txt")])
    train_irn.run(args)

    net = resnet50_irn.Net()
    load_checkpoint(net, args.irn_weights_name, **LOAD_ARGS["irn"])
    stored = net.mean_shift.running_mean.clone()
    net.mean_shift.running_mean.zero_()
    crops = top_left_crops(tiny_toy, ids, args.irn_crop_size)
    with torch.no_grad():
        want = net.eval()(crops)[1].mean(dim=(0, 2, 3))
    assert stored.abs().sum() > 0
    torch.testing.assert_close(stored, want, rtol=1e-4, atol=1e-6)
    saved = set(torch.load(args.irn_weights_name, weights_only=True))
    assert "mean_shift.running_var" not in saved and "mean_shift.running_mean" in saved


# ------------------------------------ bad files ------------------------------------


def write_truncated(path: Path) -> None:
    torch.save({"classifier.weight": torch.zeros(3, 2048, 1, 1)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def write_training_state(path: Path) -> None:
    net = resnet50_cam.Net(3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": 10,
                "max_step": 30, "batch_size": 8, "losses": [1.0], "rng": torch.get_rng_state()},
               path)


def write_optimizer(path: Path) -> None:
    net = torch.nn.Linear(2, 2)
    torch.save(torch.optim.SGD(net.parameters(), lr=0.1).state_dict(), path)


BAD_FILES = {
    "truncated": (write_truncated, r"cannot read checkpoint .*res50_cam.pth: it is truncated "
                                   r"\(\d+ bytes.*Rerun train_cam to write it again"),
    "empty": (lambda p: p.write_bytes(b""), r"res50_cam.pth: it is empty \(0 bytes\)"),
    "tensor": (lambda p: torch.save(torch.zeros(4, 5), p),
               r"res50_cam.pth holds a single tensor of shape \(4, 5\), not a state_dict; "
               r"net.resnet50_cam.Net needs network weights: pass the weights file that "
               r"train_cam writes"),
    "list": (lambda p: torch.save([torch.zeros(1)], p),
             r"res50_cam.pth holds a list, not a state_dict .*pass the weights file"),
    "optimizer": (write_optimizer, r"res50_cam.pth holds an optimizer state_dict "
                                   r"\(state, param_groups\), not network weights"),
    "training_state": (write_training_state,
                       r"res50_cam.state.pth is a resumable training state at step 10 of 30 "
                       r"\(model, optimizer, RNG\) of CAM .*not the final weights.*pass the "
                       r"final checkpoint \(res50_cam.pth\) that train_cam writes"),
    "deeplab": (lambda p: torch.save(deeplabv2.DeepLabV2(4, "resnet50").state_dict(), p),
                r"res50_cam.pth does not fit net.resnet50_cam.Net: its keys look like "
                r"DeepLab-V2 \(backbone.\*, aspp.\*: written by train_seg.*Rerun train_cam"),
    "backbone": (lambda p: torch.save(ResNet50().state_dict(), p),
                 r"its keys look like a bare ResNet backbone .*--backbone_weights"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_messages(case, tmp_path):
    """Each bad file gets a message naming it, what it holds and the fix; the file and the
    network are left as they were."""
    write, message = BAD_FILES[case]
    path = tmp_path / "res50_cam.pth"
    if case == "training_state":
        path = state_path(path)  # where misc.engine.train writes it
    write(path)
    before = path.read_bytes()
    net = resnet50_cam.Net(3)
    weight = net.classifier.weight.clone()
    with pytest.raises(ValueError, match=message):
        load_checkpoint(net, path, made_by="train_cam")
    assert path.read_bytes() == before and torch.equal(net.classifier.weight, weight)
