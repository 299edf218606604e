"""make_sem_seg_labels (docs/pipeline.md §3.10): the boundary map of a fake IRN and the pseudo-mask
of given seeds against a direct computation of the reference's steps."""
import numpy as np
import pytest
import torch

from misc.irn.random_walk import dense_random_walk
from misc.irn.sem_seg import boundary_map, pseudo_mask
from tests import reference_ops as ref


def run_pseudo_mask(maps, boundary, size, power, beta, exp_times, bg_thres):
    """The one place that knows how pseudo_mask takes its settings."""
    return pseudo_mask(maps, boundary, size, power=power, beta=beta, exp_times=exp_times,
                       bg_thres=bg_thres)


class FakeIRN(torch.nn.Module):
    """(B, 3, H, W) -> (edge logits (B, 1, ceil(H/4), ceil(W/4)), displacement): a stride-4
    sample of two channels, a column ramp (not mirror-symmetric) and the mean of the whole input
    (which sees any padding)."""

    def forward(self, x):
        sub = x[:, :, ::4, ::4]
        ramp = 0.5 * (torch.arange(sub.shape[-1], dtype=x.dtype) - 2)
        whole = x.mean(dim=(1, 2, 3))[:, None, None, None]
        edge = 2 * sub[:, :1] - 1.5 * sub[:, 1:2] + ramp + 4 * whole
        return edge, torch.zeros_like(sub[:, :2])


def reference_boundary(img: np.ndarray, pad_to: int) -> np.ndarray:
    """[image, mirror] zero-padded right/bottom to pad_to when it fits, forward, crop to
    (h4, w4), sigmoid of the mean of the image's and the flipped-back mirror's edge logits."""
    h, w = img.shape[1:]
    pair = np.stack([img, img[:, :, ::-1]])
    if h <= pad_to and w <= pad_to:
        canvas = np.zeros((2, 3, pad_to, pad_to), np.float32)
        canvas[:, :, :h, :w] = pair
        pair = canvas
    with torch.no_grad():
        edge = FakeIRN()(torch.from_numpy(np.ascontiguousarray(pair)))[0].double().numpy()
    h4, w4 = (h + 3) // 4, (w + 3) // 4
    logit = (edge[0, 0, :h4, :w4] + edge[1, 0, :h4, :w4][:, ::-1]) / 2
    return 1 / (1 + np.exp(-logit))


@pytest.mark.parametrize("pad_to", [32, 16])  # padded; too large to pad (18 > 16)
def test_boundary_map_averages_edge_logits_of_the_padded_pair(pad_to):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 18, 22)).astype(np.float32) + 0.3
    got = boundary_map(FakeIRN(), torch.from_numpy(img), pad_to)
    expected = reference_boundary(img, pad_to)
    assert got.shape == (5, 6)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert 0.05 < expected.mean() < 0.95 and expected.std() > 0.1  # logits are not saturated


def reference_mask(cam, keys, boundary, size, power, beta, exp_times, bg_thres):
    """Seeds cam^power without the bg channel -> dense walk (radius 5) -> x4 bilinear -> crop ->
    / global max -> [bg_thres; scores] -> argmax -> [0, keys + 1]; also the smallest margin
    between the best and the second-best score (so that float noise cannot flip a pixel)."""
    seeds = torch.from_numpy(cam[1:].astype(np.float64) ** power).float()
    rw = dense_random_walk(seeds, boundary, beta, exp_times, 5).double().numpy()
    up = ref.bilinear(rw, (4 * rw.shape[1], 4 * rw.shape[2]))[:, :size[0], :size[1]]
    up = up / up.max()
    scores = np.concatenate([np.full((1,) + up.shape[1:], bg_thres), up])
    top2 = np.sort(scores, axis=0)[-2:]
    keys_pad = np.concatenate([[0], np.asarray(keys) + 1])
    return keys_pad[scores.argmax(0)], (top2[1] - top2[0]).min()


def test_pseudo_mask_against_the_reference_steps():
    rng = np.random.default_rng(9)
    cam = rng.random((4, 6, 7)).astype(np.float32)
    cam[0] = 1.0  # a strong background channel: it must not take part
    cam[2] *= 0.7  # a weaker class: per-class normalisation would inflate it
    keys = np.array([2, 5, 9])
    boundary = torch.from_numpy(rng.random((6, 7)).astype(np.float32) * 0.5)
    maps = {"keys": keys, "cam": cam}
    settings = dict(power=1.3, beta=10.0, exp_times=2, bg_thres=0.45)
    got = run_pseudo_mask(maps, boundary, (22, 26), **settings).numpy()
    expected, margin = reference_mask(cam, keys, boundary, (22, 26), **settings)
    assert margin > 1e-4
    assert got.shape == (22, 26) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(expected)) == {0, 3, 6, 10}  # every label occurs
    # the settings matter on this input: power 1, another threshold give other masks
    for other in (dict(settings, power=1.0), dict(settings, bg_thres=0.35)):
        assert (reference_mask(cam, keys, boundary, (22, 26), **other)[0] != expected).any()


def test_pseudo_mask_without_classes_is_background():
    maps = {"keys": np.zeros(0, np.int64), "cam": np.ones((1, 3, 4), np.float32)}
    got = run_pseudo_mask(maps, torch.zeros(3, 4), (10, 13), 1.3, 10.0, 2, 0.25)
    np.testing.assert_array_equal(got.numpy(), np.zeros((10, 13), np.uint8))
