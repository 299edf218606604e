"""IRN's loss (docs/pipeline.md §3.9) against the formulas written out element by element."""
import math

import numpy as np
import pytest
import torch

from misc.engine.losses import irn_loss


def direct_irn_loss(aff, disp, targets, bg, fg, neg):
    """Sums over every (b, d, n) written as loops; the divisors as the reference's:
    pos = sum / (count + 1e-5), dp = sum / (2 count + 1e-5);
    total = (pos_bg / 2 + pos_fg / 2 + neg) / 2 + (dp_fg + dp_bg) / 2."""
    s = dict(pos_bg=0.0, pos_fg=0.0, neg=0.0, dp_fg=0.0, dp_bg=0.0)
    n_bg = n_fg = n_neg = 0
    for b, d, n in np.ndindex(*aff.shape):
        a = float(aff[b, d, n])
        if bg[b, d, n]:
            n_bg += 1
            s["pos_bg"] += -math.log(a + 1e-5)
            s["dp_bg"] += abs(disp[b, 0, d, n]) + abs(disp[b, 1, d, n])
        if fg[b, d, n]:
            n_fg += 1
            s["pos_fg"] += -math.log(a + 1e-5)
            s["dp_fg"] += (abs(disp[b, 0, d, n] - targets[0, d, 0])
                           + abs(disp[b, 1, d, n] - targets[1, d, 0]))
        if neg[b, d, n]:
            n_neg += 1
            s["neg"] += -math.log(1 + 1e-5 - a)
    terms = {"pos_bg": s["pos_bg"] / (n_bg + 1e-5), "pos_fg": s["pos_fg"] / (n_fg + 1e-5),
             "neg": s["neg"] / (n_neg + 1e-5), "dp_fg": s["dp_fg"] / (2 * n_fg + 1e-5),
             "dp_bg": s["dp_bg"] / (2 * n_bg + 1e-5)}
    terms["total"] = ((terms["pos_bg"] / 2 + terms["pos_fg"] / 2 + terms["neg"]) / 2
                      + (terms["dp_fg"] + terms["dp_bg"]) / 2)
    return terms


def test_irn_loss_total_is_the_reference_combination():
    rng = np.random.default_rng(3)
    b, d, n = 2, 3, 7
    aff = rng.uniform(0.05, 0.95, (b, d, n))
    disp = rng.normal(0, 2, (b, 2, d, n))
    targets = np.array([[0, 1, 2], [1, -1, 0]], np.float64)[:, :, None]  # (dy, dx) per direction
    kind = rng.integers(0, 4, (b, d, n))  # 0 bg_pos, 1 fg_pos, 2 neg, 3 ignored
    bg, fg, neg = kind == 0, kind == 1, kind == 2
    assert len({bg.sum(), fg.sum(), neg.sum()}) == 3  # unequal counts: means differ from sums
    t = lambda x: torch.from_numpy(np.asarray(x))
    got = irn_loss(t(aff).float(), t(disp).float(), t(targets).float(), t(bg), t(fg), t(neg))
    want = direct_irn_loss(aff, disp, targets, bg, fg, neg)
    for key, value in want.items():
        assert got[key].item() == pytest.approx(value, rel=1e-5), key
    # the combination is not the plain sum (nor the plain mean) of the five terms
    parts = [want[k] for k in ("pos_bg", "pos_fg", "neg", "dp_fg", "dp_bg")]
    assert abs(want["total"] - sum(parts)) > 0.1 and abs(want["total"] - sum(parts) / 5) > 0.1


def test_irn_loss_gradient_of_the_total():
    """d total / d affinity at a bg-positive pair is -1 / (4 (a + 1e-5) n_bg); at a negative pair
    1 / (2 (1 + 1e-5 - a) n_neg)."""
    aff = torch.tensor([[[0.3, 0.6, 0.8, 0.5]]], requires_grad=True)
    bg = torch.tensor([[[True, True, False, False]]])
    fg = torch.tensor([[[False, False, True, False]]])
    neg = torch.tensor([[[False, False, False, True]]])
    disp = torch.zeros(1, 2, 1, 4)
    irn_loss(aff, disp, torch.zeros(2, 1, 1), bg, fg, neg)["total"].backward()
    want = [-1 / (4 * (0.3 + 1e-5) * 2), -1 / (4 * (0.6 + 1e-5) * 2), -1 / (4 * (0.8 + 1e-5)),
            1 / (2 * (1 + 1e-5 - 0.5))]
    np.testing.assert_allclose(aff.grad[0, 0].numpy(), want, rtol=1e-4)
