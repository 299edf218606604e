"""PMM's pretended under-fitting in train_seg's loss (docs/pmm.md §5): the straddle case of its
mean, the zero gradient of clamped pixels, the variants, each MSC output on its own, and the
profile defaults."""
from __future__ import annotations

import math

import pytest
import torch

from misc.engine.losses import pixel_ce, pretended_under_fitting
from step.driver.flags import load_profile
from step.train_seg import STEP, msc_loss


def _logits_for(ce: list[float]) -> torch.Tensor:
    """(1, 2, 1, n) logits [a, 0] whose CE against label 0 is each `ce`: log(1 + e^-a) = ce."""
    a = [-math.log(math.exp(c) - 1) for c in ce]
    return torch.tensor([[a, [0.0] * len(a)]]).unsqueeze(2).requires_grad_(True)


def test_straddle_case_clamps_on_the_mean_over_all_pixels():
    # CE 0.9 and 0.3 on the two valid pixels, two ignored: the valid mean 0.6 is above beta 0.5,
    # the mean over all four pixels (ignored as 0) 0.3 is below it -> the clamp applies
    logits = _logits_for([0.9, 0.3, 0.2, 0.2])
    label = torch.tensor([[[0, 0, 255, 255]]])
    plain = pixel_ce(logits, label, balanced=False)
    assert plain.item() == pytest.approx(0.6, abs=1e-6)
    clamped = pixel_ce(logits, label, balanced=False, puf="clamp", puf_beta=0.5, puf_k=0.5)
    assert clamped.item() == pytest.approx((0.5 + 0.3) / 2, abs=1e-6)
    # the clamped pixel passes no gradient, the other one does; ignored pixels none
    clamped.backward()
    grad = logits.grad[0, :, 0]
    assert torch.equal(grad[:, 0], torch.zeros(2)) and (grad[:, 1] != 0).all()
    assert torch.equal(grad[:, 2:], torch.zeros(2, 2))
    # with beta 0.25 the all-pixel mean 0.3 is not below it: plain CE
    assert pixel_ce(logits, label, False, "clamp", 0.25, 0.5).item() == pytest.approx(0.6, abs=1e-6)


def test_variants_and_none():
    ce = torch.tensor([[[0.9, 0.3, 0.0, 0.0]]])  # ignored pixels at 0; mean 0.3 < 0.5
    assert torch.equal(pretended_under_fitting(ce, "none", 0.5, 0.5), ce)
    torch.testing.assert_close(pretended_under_fitting(ce, "clamp", 0.5, 0.5),
                               torch.tensor([[[0.5, 0.3, 0.0, 0.0]]]))
    torch.testing.assert_close(pretended_under_fitting(ce, "pow", 0.5, 0.5),
                               torch.tensor([[[0.9 ** 0.5, 0.3 ** 0.5, 1e-6, 1e-6]]]))
    torch.testing.assert_close(pretended_under_fitting(ce, "ignore", 0.5, 0.5),
                               torch.tensor([[[0.0, 0.3, 0.0, 0.0]]]))
    high = ce + 1  # mean 1.3 >= beta: every variant leaves the CE as is
    for mode in ("clamp", "pow", "ignore"):
        assert torch.equal(pretended_under_fitting(high, mode, 0.5, 0.5), high)
    with pytest.raises(ValueError, match="not one of"):
        pretended_under_fitting(ce, "soft", 0.5, 0.5)
    # pow keeps gradients finite at ignored (0) pixels
    x = ce.clone().requires_grad_(True)
    (pretended_under_fitting(x, "pow", 0.5, 0.5) * torch.tensor([1.0, 1, 0, 0])).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_each_msc_output_decides_on_its_own():
    low, high = _logits_for([0.9, 0.1, 0.1, 0.1]), _logits_for([0.9, 0.9, 0.9, 0.9])

    class TwoOutputs(torch.nn.Module):
        def forward(self, img):
            return [low, high]

    label = torch.zeros(1, 1, 4, dtype=torch.long)
    loss = msc_loss(False, "clamp", 0.5, 0.5)(TwoOutputs(), {"img": None, "label": label})
    # low: mean 0.3 < 0.5 -> (0.5 + 0.1 * 3) / 4; high: mean 0.9 -> unchanged
    assert loss.item() == pytest.approx(0.2 + 0.9, abs=1e-6)


def test_puf_defaults():
    flags = {f.name: f for f in STEP.flags}
    assert flags["seg_puf"].default == "none"
    assert set(flags["seg_puf"].choices) == {"none", "clamp", "pow", "ignore"}
    voc, coco, toy = load_profile("voc12"), load_profile("coco14"), load_profile("toy")
    assert (voc["seg_puf_beta"], voc["seg_puf_k"]) == (0.5, 0.5)
    assert (coco["seg_puf_beta"], coco["seg_puf_k"]) == (0.8, 0.8)
    assert (toy["seg_puf_beta"], toy["seg_puf_k"]) == (0.5, 0.5)
