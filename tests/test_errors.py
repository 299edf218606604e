"""Errors a user can make, through run_sample.py: each names the problem and the fix, and what
was already written stays intact."""
import errno
import shutil

import numpy as np
import pytest
import torch

import run_sample
from misc.io.maps import load_maps
from net import resnet50_cam, resnet50_irn
from tests.tiny import flags


def _cam_checkpoint(path, n_classes: int):
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet50_cam.Net(n_classes).state_dict(), path)


def test_a_missing_root_and_a_root_without_jpegimages(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist: pass --voc12_root"):
        run_sample.main(["--voc12_root", str(tmp_path / "nowhere"), "--eval_cam_pass", "True"])
    with pytest.raises(FileNotFoundError, match="no JPEGImages.*--voc12_root"):
        run_sample.main(["--voc12_root", str(tmp_path), "--eval_cam_pass", "True"])


def test_list_naming_a_missing_image(tiny_toy, tmp_path, r50):
    ids = (tiny_toy / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    bad_list = tmp_path / "mine.txt"
    bad_list.write_text("\n".join(ids[:3] + ["2007_999999"]) + "\n")
    with pytest.raises(FileNotFoundError, match="1 images of .*mine.txt are missing.*2007_999999"):
        run_sample.main(flags(tiny_toy, tmp_path, r50)
                        + ["--train_list", str(bad_list), "--train_cam_pass", "True"])


def test_corrupt_image(tiny_toy, tmp_path, r50):
    root = shutil.copytree(tiny_toy, tmp_path / "toy")
    victim = sorted((root / "JPEGImages").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated download
    with pytest.raises(ValueError, match=f"1 images of .* cannot be read .{victim}: not a "
                                         f"readable image"):
        run_sample.main(flags(root, tmp_path, r50) + ["--train_cam_pass", "True"])
    victim.write_bytes(b"not an image")
    _cam_checkpoint(tmp_path / "sess" / "res50_cam.pth", 3)
    with pytest.raises(ValueError, match=f"cannot be read .{victim}: not a readable image"):
        run_sample.main(flags(root, tmp_path, r50) + ["--make_cam_pass", "True"])


def test_step_before_its_input(tiny_toy, tmp_path, r50):
    with pytest.raises(FileNotFoundError, match="res50_cam.pth not found: run train_cam"):
        run_sample.main(flags(tiny_toy, tmp_path, r50) + ["--make_cam_pass", "True"])
    _cam_checkpoint(tmp_path / "sess" / "res50_cam.pth", 3)
    with pytest.raises(FileNotFoundError, match="no CAM for 8 of 8 ids.*--make_cam_pass True "
                                                "first"):
        run_sample.main(flags(tiny_toy, tmp_path, r50) + ["--eval_cam_pass", "True"])


@pytest.mark.parametrize("made_by", ["cam_of_5_classes", "irn"])
def test_checkpoint_of_another_network_or_class_count(tiny_toy, tmp_path, r50, made_by):
    cam = tmp_path / "sess" / "res50_cam.pth"
    if made_by == "irn":
        cam.parent.mkdir(parents=True)
        torch.save(resnet50_irn.Net().state_dict(), cam)
    else:
        _cam_checkpoint(cam, 5)  # the tiny toy has 3 classes
    with pytest.raises(ValueError, match="does not fit net.resnet50_cam.Net.*another network or "
                                         "class count.*Rerun train_cam"):
        run_sample.main(flags(tiny_toy, tmp_path, r50) + ["--make_cam_pass", "True"])
    assert cam.is_file()  # the user's file is left alone


def test_missing_backbone_weights(tiny_toy, tmp_path):
    with pytest.raises(FileNotFoundError, match="--backbone_weights"):
        run_sample.main(flags(tiny_toy, tmp_path, tmp_path / "missing.pth")
                        + ["--train_cam_pass", "True"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_request_without_cuda(tiny_toy, tmp_path, r50):
    with pytest.raises(ValueError, match="--device cuda was requested.*--device cpu"):
        run_sample.main(flags(tiny_toy, tmp_path, r50)
                        + ["--device", "cuda", "--train_cam_pass", "True"])
    assert not (tmp_path / "sess").exists()  # failed before writing anything


def test_full_disk_while_writing_maps(tiny_toy, tmp_path, r50, monkeypatch):
    _cam_checkpoint(tmp_path / "sess" / "res50_cam.pth", 3)
    argv = flags(tiny_toy, tmp_path, r50) + ["--make_cam_pass", "True"]
    run_sample.main(argv)
    written = sorted((tmp_path / "cam").glob("*.npz"))
    before = {p.name: load_maps(p) for p in written}
    calls = []
    real_savez = np.savez_compressed

    def savez_until_full(f, **arrays):
        calls.append(1)
        if len(calls) > 3:
            f.write(b"partial")  # the disk fills up half-way through a file
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(f, **arrays)

    monkeypatch.setattr(np, "savez_compressed", savez_until_full)
    with pytest.raises(OSError, match=r"could not write .*\.npz.*No space left on device.*"
                                      r"earlier outputs are intact"):
        run_sample.main(argv + ["--overwrite", "True"])
    # no temporary files left behind (the folder's record and remake marker are dotfiles)
    assert not list((tmp_path / "cam").glob(".*.tmp"))
    assert sorted(p for p in (tmp_path / "cam").iterdir() if not p.name.startswith(".")) == written
    for p in written:  # every map, rewritten or not, is whole
        for key, value in before[p.name].items():
            np.testing.assert_array_equal(load_maps(p)[key], value)
