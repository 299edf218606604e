"""PMM's plug point (iii) (docs/pmm.md §8): the final mask's two labelling rules on the same
walked scores, worked by hand (PPMG's CRF replaced by its unary so its decisions can be worked
out), the default left as before the split, and the rule's flags in the masks' record."""
from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

import misc.seeds.ppmg
import run_sample
from misc.irn.random_walk import random_walk
from misc.irn.sem_seg import INFER_RADIUS, constant_labels, pseudo_mask, walked_scores
from step.make_sem_seg_labels import RuleComparison, label

# keys 0 and 3 (labels 1 and 4) over five pixels of one row
KEYS = torch.tensor([0, 3])
SCORES = torch.tensor([[[0.9, 0.9, 0.7, 0.1, 0.2]],
                       [[0.0, 0.0, 0.6, 0.6, 0.0]]])
# constant 0.25: the larger score above 0.25 wins, else background
CONSTANT = [[1, 1, 1, 4, 0]]
# PPMG, alpha 11 (crossing at 0.156), CVS off: F_0 = [1 1 1 0 1] (0.1 < 0.156), F_3 = [0 0 1 1 0];
# masses 2.7 and 1.2, so at pixel 2 p_0 = 0.7 / 3.7 = 0.189 < p_3 = 0.6 / 2.2 = 0.273: class 3
# wins where the constant rule gives class 0; pixel 4 (0.2) is foreground for PPMG only
PPMG = [[1, 1, 4, 4, 1]]


class _UnaryOnly:
    """A CRF without pairwise terms: the marginals are the scores normalised per pixel."""

    def __init__(self, img, n_labels, **_):
        pass

    def marginals(self, prob):
        return prob / prob.sum(axis=0, keepdims=True)


def _args(**over) -> argparse.Namespace:
    return argparse.Namespace(**{"sem_seg_ppmg": False, "sem_seg_bg_thres": 0.25,
                                 "sem_seg_ppmg_alpha": 11.0, "sem_seg_ppmg_cv_scale": 0.0,
                                 **over})


def test_both_rules_give_the_worked_labels(monkeypatch, tmp_path):
    monkeypatch.setattr(misc.seeds.ppmg, "PairwiseCRF", _UnaryOnly)
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((1, 5, 3), np.uint8)).save(image)
    np.testing.assert_array_equal(constant_labels(KEYS, SCORES, 0.25).numpy(), CONSTANT)
    np.testing.assert_array_equal(label(_args(), KEYS, SCORES, (1, 5), image), CONSTANT)
    np.testing.assert_array_equal(label(_args(sem_seg_ppmg=True), KEYS, SCORES, (1, 5), image),
                                  PPMG)
    # alpha is a threshold in disguise: at 58.4 (crossing 0.05) pixel 3's 0.1 is foreground too
    np.testing.assert_array_equal(
        label(_args(sem_seg_ppmg=True, sem_seg_ppmg_alpha=58.4), KEYS, SCORES, (1, 5), image),
        [[1, 1, 4, 4, 1]])
    no_class = label(_args(sem_seg_ppmg=True), KEYS[:0], SCORES[:0], (1, 5), image)
    np.testing.assert_array_equal(no_class, np.zeros((1, 5)))


def _before_the_split(maps, boundary, size, power, beta, exp_times, bg_thres):
    """make_sem_seg_labels' pseudo-mask as it was before (a) and (b) were split."""
    keys = torch.as_tensor(maps["keys"])
    seeds = torch.as_tensor(maps["cam"]).pow(power)[1:]
    rw = random_walk(seeds, boundary, beta, exp_times, INFER_RADIUS)
    up = torch.nn.functional.interpolate(rw[None], scale_factor=4, mode="bilinear",
                                         align_corners=False)[0][:, :size[0], :size[1]]
    up = up / up.max()
    scores = torch.cat([torch.full_like(up[:1], bg_thres), up])
    return torch.cat([keys.new_zeros(1), keys + 1])[scores.argmax(0)].to(torch.uint8)


def test_the_default_rule_leaves_the_masks_as_before_the_split():
    rng = np.random.default_rng(3)
    for seed_round in range(3):
        cam = rng.random((3, 5, 6)).astype(np.float32)
        maps = {"keys": np.array([1, 4]), "cam": cam}
        boundary = torch.from_numpy(rng.random((5, 6)).astype(np.float32) * 0.6)
        old = _before_the_split(maps, boundary, (19, 23), 1.3, 10.0, 2, 0.3)
        keys, scores = walked_scores(maps, boundary, (19, 23), 1.3, 10.0, 2)
        np.testing.assert_array_equal(label(_args(sem_seg_bg_thres=0.3), keys, scores,
                                            (19, 23), None), old.numpy())
        np.testing.assert_array_equal(pseudo_mask(maps, boundary, (19, 23), 1.3, 10.0, 2, 0.3),
                                      old)
        assert len(np.unique(old.numpy())) > 1, seed_round  # not a trivial mask


def test_the_comparison_scores_ppmg_against_every_constant():
    gt = np.array([[1, 1, 4, 4, 0]], np.uint8)
    comparison = RuleComparison(5, [0.15, 0.25])
    comparison.add(KEYS, SCORES, np.array(PPMG, np.uint8), gt)
    record = comparison.record(("background", "a", "b", "c", "d"))
    # PPMG [1 1 4 4 1]: IoU bg 0/1, class 1 2/3, class 4 2/2 -> mean over the 3 present = 5/9
    assert record["images"] == 1 and abs(record["ppmg"] - 5 / 9) < 1e-9
    # 0.25 -> [1 1 1 4 0]: bg 1/1, class 1 2/3, class 4 1/2 -> 13/18; 0.15 -> [1 1 1 4 1]:
    # bg 0/1, class 1 2/4, class 4 1/2 -> 1/3
    assert abs(record["sweep"]["0.25"] - 13 / 18) < 1e-4
    assert abs(record["sweep"]["0.15"] - 1 / 3) < 1e-4
    assert record["best_threshold"] == 0.25 and abs(record["best_miou"] - 13 / 18) < 1e-9


def test_the_rule_and_its_settings_are_part_of_the_masks_record():
    settings = run_sample.PIPELINE.settings("make_sem_seg")
    for flag in ("sem_seg_bg_thres", "sem_seg_ppmg", "sem_seg_ppmg_alpha",
                 "sem_seg_ppmg_cv_scale"):
        assert flag in settings
    assert "sweep_thres" not in settings  # the comparison's sweep does not remake the masks


def test_ppmg_masks_over_the_cpu_pool_equal_the_serial_ones_and_stay_bounded(tmp_path):
    """make_sem_seg_labels' PPMG labels run over map_streamed's pool (2 workers, real CRF): the
    same masks in the same order as in this process, with the producer never more than
    ahead x workers images beyond the masks handed back."""
    from misc.engine.workers import map_streamed
    from misc.irn.sem_seg import label_walk
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(7):
        image = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (12, 15, 3), dtype=np.uint8)).save(image)
        scores = rng.random((2, 12, 15)).astype(np.float32)
        jobs.append((str(i), np.array([1, 6]), scores / scores.max(), str(image),
                     ("ppmg", 11.0, 0.3)))
    serial = [label_walk(job) for job in jobs]
    drawn = []

    def produced():
        for job in jobs:
            drawn.append(job[0])
            yield job

    ahead = []
    pooled = []
    for job, mask in map_streamed(label_walk, produced(), 2, ahead=1):
        ahead.append(len(drawn) - len(pooled))
        pooled.append((job[0], mask))
    assert [name for name, _ in pooled] == [job[0] for job in jobs]
    for (_, mask), expected in zip(pooled, serial):
        np.testing.assert_array_equal(mask, expected)
    assert max(ahead) <= 3  # at most ahead x workers in flight, plus the one being handed back
    assert len({m.tobytes() for m in serial}) > 1  # the masks differ between images
