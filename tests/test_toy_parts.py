"""Tests of the part-defined synthetic dataset generator (data/toy_parts.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.toy_dataset import VOID
from data.toy_parts import (
    MARKER,
    PartsConfig,
    build_parts_dataset,
    class_names,
    ensure_parts_dataset,
    main,
    render_scene,
)
from misc.data.dataset import check_ids, load_img_name_list
from voc12.dataloader import VOCDataset

TINY = PartsConfig.tiny()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_parts_dataset(tmp_path_factory.mktemp("parts") / "parts", TINY)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def scenes(cfg: PartsConfig, n: int = 12) -> list:
    """What `n` images of `cfg` draw (the same generator calls as the written dataset)."""
    return [render_scene(np.random.default_rng([cfg.seed, i]), cfg) for i in range(n)]


def test_loads_through_vocdataset(root: Path) -> None:
    data = VOCDataset(root)
    assert data.class_names == tuple(class_names(TINY.n_classes)) and data.n_classes == 3
    sizes = {"train_aug": TINY.n_train_aug, "train": TINY.n_train, "val": TINY.n_val}
    for split, n in sizes.items():
        ids = load_img_name_list(data.split_list(split))
        assert len(ids) == n
        check_ids(data, ids, split)  # every id has an image and a label
    assert data.instance_gt_dir() is not None and data.gt_dir().is_dir()


def test_labels_equal_classes_in_masks(root: Path) -> None:
    data = VOCDataset(root)
    for iid, row in data.labels.by_id.items():
        mask = np.asarray(Image.open(data.gt_dir() / f"{iid}.png"))
        img = Image.open(data.image_path(iid))
        assert img.mode == "RGB" and img.size == mask.shape[::-1]
        values = set(np.unique(mask).tolist())
        assert values <= {0, VOID, *range(1, TINY.n_classes + 1)}
        present = {v - 1 for v in values - {0, VOID}}
        assert present == set(np.flatnonzero(row).tolist()) and present


def test_deterministic_per_seed(root: Path, tmp_path: Path) -> None:
    again = build_parts_dataset(tmp_path / "again", TINY)
    assert all_files(again) == all_files(root)
    other = build_parts_dataset(tmp_path / "other", dataclasses.replace(TINY, seed=1))
    assert all_files(other) != all_files(root)


def part_shares(cfg: PartsConfig) -> list[float]:
    return [t.part.sum() / t.mask.sum() for *_, things in scenes(cfg) for t in things
            if t.cls >= 0]


@pytest.mark.parametrize("part_size", [0.08, 0.15, 0.3])
def test_parts_are_small(part_size: float) -> None:
    """A part covers at most part_size of its object (its disc is part_size x the body), and
    always something."""
    shares = part_shares(dataclasses.replace(TINY, part_size=part_size))
    assert shares and min(shares) > 0
    assert max(shares) <= part_size * 1.05  # 5 %: the disc's polygon rasterisation


def test_part_size_scales_parts() -> None:
    small = np.mean(part_shares(dataclasses.replace(TINY, part_size=0.08)))
    big = np.mean(part_shares(dataclasses.replace(TINY, part_size=0.3)))
    assert big > 2 * small


def test_distractors_are_background() -> None:
    drawn = scenes(dataclasses.replace(TINY, clutter=3))
    distractors = [(label, t) for _, label, _, things in drawn for t in things if t.cls < 0]
    assert len(distractors) >= 12  # ~3 per image, some find no room
    assert any(t.part.any() for _, t in distractors)      # near-miss parts
    assert any(not t.part.any() for _, t in distractors)  # bare bodies
    for label, t in distractors:
        assert (label[t.mask] == 0).all()


def test_clutter_controls_distractors() -> None:
    counts = {k: sum(t.cls < 0 for *_, things in scenes(dataclasses.replace(TINY, clutter=k))
                     for t in things) for k in (0, 1, 4)}
    assert counts[0] == 0 and 0 < counts[1] < counts[4]


def test_n_classes_changes_names_and_labels(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, n_classes=6, n_train_aug=24, n_val=12)
    data = VOCDataset(build_parts_dataset(tmp_path / "six", cfg))
    assert data.class_names == tuple(class_names(6)) and len(set(class_names(6))) == 6
    seen = np.stack(list(data.labels.by_id.values())).sum(0)
    assert (seen > 0).sum() >= 5  # the classes are drawn uniformly


def test_ensure_reuses_and_cli(tmp_path: Path) -> None:
    out = tmp_path / "p"
    main(["--out", str(out), "--tiny", "--n_classes", "2", "--part_size", "0.1",
          "--clutter", "1"])
    cfg = dataclasses.replace(TINY, n_classes=2, part_size=0.1, clutter=1)
    jpg = out / "JPEGImages" / "parts_000000.jpg"
    stamp = jpg.stat().st_mtime_ns
    assert ensure_parts_dataset(out, cfg) == out and jpg.stat().st_mtime_ns == stamp
    (out / MARKER).unlink()  # an unfinished build is rebuilt
    ensure_parts_dataset(out, cfg)
    assert (out / MARKER).is_file() and jpg.stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no temp folders left
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        ensure_parts_dataset(tmp_path, cfg)
