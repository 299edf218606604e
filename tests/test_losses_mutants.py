"""misc.engine.losses, the cases the mutation run (docs/mutation.md) found unpinned: the
two-rank scaling of the global means, PIL-nearest upsampling, label smoothing's per-class mass,
the foreground weight, ignored pixels and the plain (unbalanced) CE, each against values
worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from misc.engine import losses
from misc.engine.losses import (
    balanced_smoothed_ce,
    global_count,
    global_masked_mean,
    pil_nearest_indices,
    pixel_ce,
    pretended_under_fitting,
)


@pytest.fixture
def two_ranks(monkeypatch):
    """This process is rank 0 of 2; the other rank holds `other[0]` selected entries."""
    other = [0.0]
    monkeypatch.setattr(losses.dist, "world", lambda: (0, 2))
    monkeypatch.setattr(losses.dist, "all_reduce_mean", lambda v: (v + other[0]) / 2)
    return other


def test_global_count_adds_every_ranks_selected_entries(two_ranks):
    two_ranks[0] = 5.0
    assert global_count(torch.tensor([True, False, True])).item() == 7.0


def test_global_masked_mean_is_scaled_by_the_world_size_over_the_global_count(two_ranks):
    # local sum 1 + 3 = 4 over 2 local + 6 remote entries: global mean share 4 / 8, and DDP
    # divides the gradient by the 2 ranks, so the local loss is 2 * 4 / 8 = 1
    two_ranks[0] = 6.0
    values = torch.tensor([1.0, 3.0, 100.0])
    mask = torch.tensor([True, True, False])
    assert global_masked_mean(values, mask).item() == pytest.approx(1.0)
    assert global_masked_mean(values, mask, eps=2.0).item() == pytest.approx(2 * 4 / 10)


def test_global_masked_mean_of_an_empty_mask_is_a_zero_with_a_gradient():
    values = torch.tensor([2.0, 5.0], requires_grad=True)
    out = global_masked_mean(values, torch.tensor([False, False]))
    assert out.item() == 0.0
    out.backward()
    assert values.grad.tolist() == [0.0, 0.0]


def test_global_masked_mean_divides_by_count_plus_eps():
    values, mask = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([True, False, True])
    assert global_masked_mean(values, mask).item() == pytest.approx(5 / 2)
    assert global_masked_mean(values, mask, eps=0.5).item() == pytest.approx(5 / 2.5)


@pytest.mark.parametrize("n_in,n_out", [(3, 7), (2, 5), (5, 11)])
def test_nearest_indices_upsampling_match_pil(n_in, n_out):
    row = np.arange(n_in, dtype=np.float32)[None].repeat(2, 0)
    pil = np.asarray(Image.fromarray(row).resize((n_out, 2), Image.NEAREST))[0].astype(int)
    assert pil_nearest_indices(n_in, n_out).tolist() == pil.tolist()


def _ce(logp: list[float], q: list[float]) -> float:
    return -sum(a * b for a, b in zip(q, logp))


def test_smoothed_ce_spreads_eps_over_the_other_classes_and_weights_foreground():
    # 3 classes, eps 0.3: targets 0.7 for the label, 0.15 for each other class
    z = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [0.0, 0.0, 3.0], [9.0, 9.0, 9.0]])
    logits = z.t().reshape(1, 3, 1, 4)
    label = torch.tensor([[[0, 1, 2, 255]]])
    logp = [(zz - torch.logsumexp(zz, 0)).tolist() for zz in z]
    bg = _ce(logp[0], [0.7, 0.15, 0.15])
    fg = (_ce(logp[1], [0.15, 0.7, 0.15]) + _ce(logp[2], [0.15, 0.15, 0.7])) / 2
    got = balanced_smoothed_ce(logits, label, eps=0.3)
    assert got.item() == pytest.approx(0.5 * (bg + fg), rel=1e-6)
    weighted = balanced_smoothed_ce(logits, label, eps=0.3, fg_weight=3.0)
    assert weighted.item() == pytest.approx(0.5 * (bg + 3 * fg), rel=1e-6)


def test_smoothed_ce_with_no_foreground_is_half_the_background_mean():
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # two pixels, 2 classes, both background
    logits = z.t().reshape(1, 2, 1, 2)
    logp = [(zz - torch.logsumexp(zz, 0)).tolist() for zz in z]
    bg = (_ce(logp[0], [0.8, 0.2]) + _ce(logp[1], [0.8, 0.2])) / 2
    got = balanced_smoothed_ce(logits, torch.zeros(1, 1, 2, dtype=torch.long), eps=0.2)
    assert got.item() == pytest.approx(bg / 2, rel=1e-6)


def _plain_ce(z: torch.Tensor, lab: int) -> float:
    return float(torch.logsumexp(z, 0) - z[lab])


def test_plain_pixel_ce_is_the_mean_over_non_ignored_pixels():
    z = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0], [0.5, 0.5, 0.0], [4.0, 0.0, 0.0]])
    logits = z.t().reshape(1, 3, 2, 2)
    label = torch.tensor([[[0, 1], [2, 255]]])
    per = [_plain_ce(z[0], 0), _plain_ce(z[1], 1), _plain_ce(z[2], 2)]
    assert pixel_ce(logits, label, balanced=False).item() == pytest.approx(sum(per) / 3, rel=1e-6)
    want = 0.5 * (per[0] + (per[1] + per[2]) / 2)
    assert pixel_ce(logits, label, balanced=True).item() == pytest.approx(want, rel=1e-6)


def test_ignored_pixels_enter_the_puf_mean_as_zero():
    # CE 0.4 on the one valid pixel; the ignored pixel's logits would give a large CE. Mean over
    # both pixels with the ignored one at 0: 0.2 < beta 0.3 -> `ignore` drops the 0.4 > k 0.1
    a = -math.log(math.exp(0.4) - 1)
    logits = torch.tensor([[[[a, -20.0]], [[0.0, 20.0]]]])
    label = torch.tensor([[[0, 255]]])
    assert pixel_ce(logits, label, False).item() == pytest.approx(0.4, abs=1e-6)
    assert pixel_ce(logits, label, False, "ignore", 0.3, 0.1).item() == pytest.approx(0.0)
    assert pixel_ce(logits, label, False, "ignore", 0.15, 0.1).item() == pytest.approx(0.4, abs=1e-6)


def test_puf_keeps_values_equal_to_k_and_clamps_only_above():
    ce = torch.tensor([0.5, 0.2, 0.0, 0.0])  # mean 0.175 < 0.3
    torch.testing.assert_close(pretended_under_fitting(ce, "ignore", 0.3, 0.5), ce)
    torch.testing.assert_close(pretended_under_fitting(ce, "clamp", 0.3, 0.2),
                               torch.tensor([0.2, 0.2, 0.0, 0.0]))
    # a mean exactly at beta is not below it
    assert torch.equal(pretended_under_fitting(ce, "clamp", 0.175, 0.1), ce)


def test_puf_clamp_passes_the_gradient_of_unclamped_pixels():
    x = torch.tensor([0.9, 0.1, 0.0, 0.0], requires_grad=True)  # mean 0.25 < 0.5
    pretended_under_fitting(x, "clamp", 0.5, 0.5).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0]


def test_puf_pow_clamps_zero_to_a_tiny_positive_base():
    x = torch.tensor([0.0, 0.04])  # mean 0.02 < 0.5
    torch.testing.assert_close(pretended_under_fitting(x, "pow", 0.5, 0.5),
                               torch.tensor([1e-6, 0.2]), rtol=1e-5, atol=0)


def test_irn_loss_divides_each_sum_by_its_count_plus_1e_5():
    # float64 values, one pair of each kind: the + 1e-5 in every divisor (a float32 count) is
    # visible at rel 1e-7
    aff = torch.tensor([[[0.5, 0.25, 0.75]]], dtype=torch.float64)
    disp = torch.tensor([[[[1.0, 2.0, 0.0]], [[0.0, -1.0, 0.0]]]], dtype=torch.float64)
    targets = torch.tensor([[[1.0]], [[1.0]]], dtype=torch.float64)
    bg = torch.tensor([[[True, False, False]]])
    fg = torch.tensor([[[False, True, False]]])
    neg = torch.tensor([[[False, False, True]]])
    got = losses.irn_loss(aff, disp, targets, bg, fg, neg)
    d = 1 + 1e-5
    assert got["pos_bg"].item() == pytest.approx(-math.log(0.5 + 1e-5) / d, rel=1e-7)
    assert got["pos_fg"].item() == pytest.approx(-math.log(0.25 + 1e-5) / d, rel=1e-7)
    assert got["neg"].item() == pytest.approx(-math.log(1 + 1e-5 - 0.75) / d, rel=1e-7)
    assert got["dp_bg"].item() == pytest.approx((1 + 0) / d / 2, rel=1e-7)      # |1| + |0|
    assert got["dp_fg"].item() == pytest.approx((1 + 2) / d / 2, rel=1e-7)      # |2-1| + |-1-1|


def test_pixel_ce_puf_defaults_are_beta_and_k_one_half():
    # CE 0.9 and 0.05: mean 0.475 < 0.5, so the default clamp at 0.5 applies
    a = [-math.log(math.exp(c) - 1) for c in (0.9, 0.05)]
    logits = torch.tensor([[a, [0.0, 0.0]]]).unsqueeze(2)
    label = torch.zeros(1, 1, 2, dtype=torch.long)
    got = pixel_ce(logits, label, balanced=False, puf="clamp")
    assert got.item() == pytest.approx((0.5 + 0.05) / 2, abs=1e-6)


def test_puf_clamp_keeps_the_gradient_of_a_pixel_exactly_at_k():
    x = torch.tensor([0.5, 0.0, 0.0, 0.0], requires_grad=True)  # mean 0.125 < 0.5
    pretended_under_fitting(x, "clamp", 0.5, 0.5).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_pixel_ce_default_beta_leaves_a_mean_of_0_6_unchanged():
    a = [-math.log(math.exp(c) - 1) for c in (0.9, 0.3)]  # mean 0.6 >= 0.5: no PUF
    logits = torch.tensor([[a, [0.0, 0.0]]]).unsqueeze(2)
    label = torch.zeros(1, 1, 2, dtype=torch.long)
    assert pixel_ce(logits, label, False, puf="clamp").item() == pytest.approx(0.6, abs=1e-6)
