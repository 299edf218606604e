"""The tiny configurations every test builds on, in one place: a blocky VOC-layout root,
the toy profile shrunk to seconds, and the run_sample.py flags of a seconds-long chain."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# the toy profile shrunk to seconds (the no-argument run's sizes, on the tiny toy dataset)
TINY_PROFILE = dict(cam_crop_size=64, cam_resize_long=(56, 72), cam_batch_size=8,
                    cam_num_epoches=1, amn_crop_size=64, amn_batch_size=8, amn_num_epoches=1,
                    irn_crop_size=80, irn_batch_size=8, irn_num_epoches=1, exp_times=4,
                    seg_backbone="resnet50", seg_crop_size=32, seg_batch_size=4, seg_num_iters=2)


def tiny_profile_file(folder: Path, extends: str | Path, **more) -> Path:
    """A profile file (TOML) with the tiny sizes over `extends` (a profile name or file)."""
    def toml(v) -> str:
        if isinstance(v, tuple):
            return "[" + ", ".join(map(toml, v)) + "]"
        return f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    lines = [f'extends = "{extends}"'] + [f"{k} = {toml(v)}" for k, v in {**TINY_PROFILE, **more}.items()]
    path = folder / f"tiny_{Path(extends).stem}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def profile_flags(profile: dict) -> list[str]:
    """`--key value...` for every entry of a profile."""
    argv = []
    for key, value in profile.items():
        argv += [f"--{key}"] + [str(v) for v in (value if isinstance(value, tuple) else (value,))]
    return argv


def write_fake_voc(root: Path, sizes: list[tuple[int, int]], n_classes: int = 3) -> list[str]:
    """A VOC-layout root with blocky images whose GT is derived from the red channel
    (red block -> class 1), lists and cls_labels.csv. Returns the ids."""
    rng = np.random.default_rng(0)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids, rows = [], []
    for i, (h, w) in enumerate(sizes):
        img_id = f"img_{i:03d}"
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 2] = 80
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0:y0 + h // 2, x0:x0 + w // 3, 0] = 255
        gt = (img[..., 0] > 128).astype(np.uint8)
        Image.fromarray(img).save(root / "JPEGImages" / f"{img_id}.jpg", quality=100)
        Image.fromarray(gt).save(root / "SegmentationClass" / f"{img_id}.png")
        ids.append(img_id)
        rows.append(f"{img_id}," + ",".join(["1"] + ["0"] * (n_classes - 1)))
    names = [f"class{c}" for c in range(n_classes)]
    (root / "cls_labels.csv").write_text("image_id," + ",".join(names) + "\n" + "\n".join(rows) + "\n")
    for split in ("train_aug", "train", "val"):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return ids


def flags(root: Path, out: Path, weights: Path) -> list[str]:
    """run_sample.py flags for a seconds-long chain on the tiny toy dataset, outputs under `out`."""
    lists = root / "ImageSets" / "Segmentation"
    return ["--voc12_root", str(root), "--train_list", str(lists / "train_aug.txt"),
            "--val_list", str(lists / "val.txt"), "--infer_list", str(lists / "train.txt"),
            "--backbone_weights", str(weights), "--device", "cpu", "--num_workers", "1",
            "--cam_scales", "1.0", "0.5", "--seg_train_list", str(lists / "train.txt"),
            "--metrics_file", str(out / "metrics.jsonl"), "--log_name", str(out / "run"),
            "--cam_weights_name", str(out / "sess" / "res50_cam.pth"),
            "--amn_weights_name", str(out / "sess" / "res50_amn.pth"),
            "--irn_weights_name", str(out / "sess" / "res50_irn.pth"),
            "--seg_weights_name", str(out / "sess" / "deeplabv2.pth"),
            "--cam_out_dir", str(out / "cam"), "--ir_label_out_dir", str(out / "ir_label"),
            "--amn_cam_out_dir", str(out / "amn_cam"),
            "--amn_ir_label_out_dir", str(out / "amn_ir_label"),
            "--sem_seg_out_dir", str(out / "sem_seg"), "--ins_seg_out_dir", str(out / "ins_seg"),
            "--cocoann_out_dir", str(out),
            "--seg_pred_out_dir", str(out / "seg_pred")] + profile_flags(TINY_PROFILE)


def transcam_flags(out: Path) -> list[str]:
    """The TransCAM passes of a seconds-long chain (a 3-block Conformer from random init, 64 px
    crops, views of 32 and 64 px), outputs under `out`; `flags` gives the rest. A non-optional
    pass given False keeps the call to the passes given True."""
    return ["--transcam_depth", "3", "--transcam_crop_size", "64", "--transcam_resize_long",
            "56", "72", "--transcam_batch_size", "4", "--transcam_num_epoches", "1",
            "--transcam_sizes", "32", "64", "--conformer_weights", "none",
            "--transcam_weights_name", str(out / "sess" / "transcam.pth"),
            "--transcam_out_dir", str(out / "transcam"), "--train_cam_pass", "False"]


def bao_flags(out: Path) -> list[str]:
    """The BAO passes of a seconds-long chain on top of `transcam_flags`: 64 px crops, batch
    4, 2 epochs (the copy epoch and one EMA epoch), outputs under `out`."""
    return ["--bao_crop_size", "64", "--bao_resize_long", "56", "72", "--bao_batch_size", "4",
            "--bao_num_epoches", "2", "--bao_weights_name", str(out / "sess" / "bao.pth"),
            "--bao_cam_out_dir", str(out / "bao_cam"), "--bao_out_dir", str(out / "bao_label")]
