"""misc.irn.path_index against docs/pipeline.md (§3.9) and direct loops over sources and directions."""
from __future__ import annotations

import pytest
import torch

from misc.irn.path_index import PathIndex, direction_path, directions

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def loop_sources(pidx: PathIndex) -> list[tuple[int, int]]:
    rf = pidx.radius_floor
    return [(r, c) for r in range(pidx.height - rf) for c in range(rf, pidx.width - rf)]


def test_direction_counts_and_order() -> None:
    assert len(directions(10)) == 152 and len(directions(5)) == 34
    assert directions(10)[:11] == [(0, x) for x in range(1, 10)] + [(1, -9), (1, -8)]
    assert directions(3) == [(0, 1), (0, 2), (1, -2), (1, -1), (1, 0), (1, 1), (1, 2),
                             (2, -2), (2, -1), (2, 0), (2, 1), (2, 2)]


@pytest.mark.parametrize("d, path", [
    ((0, 3), [(0, 0), (0, 1), (0, 2), (0, 3)]),
    ((1, 1), [(0, 0), (0, 1), (1, 0), (1, 1)]),
    ((2, 1), [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]),
    ((2, 2), [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)]),
    ((1, -2), [(0, -2), (0, -1), (0, 0), (1, -2), (1, -1), (1, 0)]),
])
def test_direction_path(d: tuple[int, int], path: list[tuple[int, int]]) -> None:
    assert sorted(direction_path(*d)) == path


def test_path_lengths_r10() -> None:
    lengths = [len(direction_path(*d)) for d in directions(10)]
    assert len(set(lengths)) == 20 and min(lengths) == 2 and max(lengths) == 22
    assert sum(lengths) == 2134


def test_sources_128() -> None:
    pidx = PathIndex(10, 128, 128)
    assert pidx.n_src == 13090 and pidx.src_shape == (119, 110) and pidx.n_dirs == 152
    assert pidx.src[0] == 9 and pidx.dst.min() >= 0 and pidx.dst.max() < 128 * 128
    assert pidx.direction_targets().shape == (2, 152, 1)
    assert pidx.direction_targets()[:, 9, 0].tolist() == [1.0, -9.0]


@pytest.mark.parametrize("device", DEVICES)
def test_pair_labels_match_loop(device: str) -> None:
    gen = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (2, 10, 12), generator=gen, dtype=torch.uint8)
    label[torch.rand(2, 10, 12, generator=gen) < 0.2] = 255
    pidx = PathIndex(3, 10, 12)
    bg, fg, neg = (t.cpu() for t in pidx.pair_labels(label.to(device), n_valid=21))
    assert bg.shape == (2, pidx.n_dirs, pidx.n_src) and bg.dtype == torch.bool
    for b in range(2):
        for s, (r, c) in enumerate(loop_sources(pidx)):
            for d, (dy, dx) in enumerate(pidx.dirs):
                a, o = int(label[b, r, c]), int(label[b, r + dy, c + dx])
                valid = a < 21 and o < 21
                assert bg[b, d, s] == (valid and a == o and a == 0)
                assert fg[b, d, s] == (valid and a == o and a > 0)
                assert neg[b, d, s] == (valid and a != o)


@pytest.mark.parametrize("device", DEVICES)
def test_affinity_matches_loop(device: str) -> None:
    boundary = torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(1))
    pidx = PathIndex(4, 9, 11)
    aff = pidx.affinity(boundary.to(device)).cpu()
    assert aff.shape == (2, pidx.n_dirs, pidx.n_src)
    for b in range(2):
        for s, (r, c) in enumerate(loop_sources(pidx)):
            for d, (dy, dx) in enumerate(pidx.dirs):
                ref = 1 - max(boundary[b, r + y, c + x] for y, x in direction_path(dy, dx))
                assert aff[b, d, s] == ref


def test_affinity_gradient() -> None:
    boundary = torch.rand(1, 4, 5, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(2)).requires_grad_()
    pidx = PathIndex(2, 4, 5)  # path lengths 2 and 4: two groups
    assert torch.autograd.gradcheck(lambda t: pidx.affinity(t), (boundary,))


def test_displacement_pairs_match_loop() -> None:
    disp = torch.randn(2, 2, 8, 9, generator=torch.Generator().manual_seed(3))
    pidx = PathIndex(3, 8, 9)
    pairs = pidx.displacement_pairs(disp)
    assert pairs.shape == (2, 2, pidx.n_dirs, pidx.n_src)
    for s, (r, c) in enumerate(loop_sources(pidx)):
        for d, (dy, dx) in enumerate(pidx.dirs):
            assert torch.equal(pairs[:, :, d, s], disp[:, :, r, c] - disp[:, :, r + dy, c + dx])


def test_shape_errors() -> None:
    pidx = PathIndex(3, 8, 9)
    with pytest.raises(ValueError, match="8, 9"):
        pidx.affinity(torch.rand(1, 9, 8))
    with pytest.raises(ValueError, match="too small"):
        PathIndex(5, 4, 20)
