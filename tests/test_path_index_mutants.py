"""misc.irn.path_index, the cases the mutation run (docs/mutation.md) found unpinned: the smallest
map a radius allows, the n_valid bound of the pair labels, the shape checks, the gradient going
to one path point, on tiny maps worked out by hand."""
from __future__ import annotations

import pytest
import torch

from misc.irn.path_index import PathIndex, direction_path, directions


def test_smallest_map_for_a_radius():
    # radius 3: rf = 2, sources need height > 2 and width > 4
    pidx = PathIndex(3, 3, 5)
    assert pidx.radius_floor == 2 and pidx.src_shape == (1, 1) and pidx.src.tolist() == [2]
    for h, w in ((2, 5), (3, 4)):
        with pytest.raises(ValueError, match="too small"):
            PathIndex(3, h, w)


def test_sources_and_destinations_on_a_small_map():
    pidx = PathIndex(2, 3, 4)  # rf 1: rows 0..1, cols 1..2; dirs (0,1), (1,-1), (1,0), (1,1)
    assert pidx.dirs == [(0, 1), (1, -1), (1, 0), (1, 1)]
    assert pidx.src.tolist() == [1, 2, 5, 6]
    assert pidx.dst.tolist() == [[2, 3, 6, 7], [4, 5, 8, 9], [5, 6, 9, 10], [6, 7, 10, 11]]
    assert pidx.n_dirs == 4 and pidx.n_src == 4
    t = pidx.direction_targets()
    assert t.dtype == torch.float32 and t[:, :, 0].tolist() == [[0, 1, 1, 1], [1, -1, 0, 1]]


def test_pair_labels_ignore_values_from_n_valid_up():
    pidx = PathIndex(2, 2, 3)  # one source (0, 1); destinations (0,2), (1,0), (1,1), (1,2)
    label = torch.tensor([[[4, 2, 2], [2, 3, 0]]])  # n_valid 3: 3 and 4 ignored
    bg, fg, neg = pidx.pair_labels(label, n_valid=3)
    assert fg[0, :, 0].tolist() == [True, True, False, False]    # 2 == 2 at (0,2) and (1,0)
    assert neg[0, :, 0].tolist() == [False, False, False, True]  # 2 vs 0 at (1,2); 3 ignored
    assert not bg.any()
    label0 = torch.tensor([[[1, 0, 0], [0, 2, 5]]])
    bg, fg, neg = pidx.pair_labels(label0, n_valid=3)
    assert bg[0, :, 0].tolist() == [True, True, False, False]
    assert neg[0, :, 0].tolist() == [False, False, True, False] and not fg.any()


def test_shape_checks_need_the_rank_and_the_map_size():
    pidx = PathIndex(2, 2, 3)
    with pytest.raises(ValueError, match=r"3-d tensor ending in \(2, 3\)"):
        pidx.pair_labels(torch.zeros(1, 1, 2, 3, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="4-d"):
        pidx.displacement_pairs(torch.zeros(1, 2, 2, 4))
    with pytest.raises(ValueError, match="3-d"):
        pidx.affinity(torch.zeros(2, 3))


def test_affinity_gradient_goes_to_the_path_maximum_only():
    pidx = PathIndex(2, 2, 3)
    boundary = torch.tensor([[[0.1, 0.2, 0.6], [0.3, 0.4, 0.5]]], requires_grad=True)
    aff = pidx.affinity(boundary)
    # source (0,1); paths: (0,1)->(0,2): max .6; (1,-1): points (0,0),(0,1),(1,0),(1,1): .4;
    # (1,0): (0,1),(1,1): .4; (1,1): (0,1),(0,2),(1,1),(1,2): .6
    assert aff[0, :, 0].tolist() == pytest.approx([0.4, 0.6, 0.6, 0.4])
    aff[0, 1, 0].backward()
    assert boundary.grad.tolist() == [[[0, 0, 0], [0, -1, 0]]]


def test_direction_path_of_a_steep_and_a_negative_direction():
    assert sorted(direction_path(3, 0)) == [(0, 0), (1, 0), (2, 0), (3, 0)]
    # (2, -1): points with (2x + y)^2 < 5 in the box y 0..2, x -1..0
    assert sorted(direction_path(2, -1)) == [(0, -1), (0, 0), (1, -1), (1, 0), (2, -1), (2, 0)]
    assert directions(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    assert directions(1) == []


def test_a_source_at_n_valid_is_ignored_too():
    pidx = PathIndex(2, 2, 3)  # source (0, 1)
    label = torch.tensor([[[0, 3, 1], [0, 1, 2]]])  # source at n_valid 3, destinations valid
    bg, fg, neg = pidx.pair_labels(label, n_valid=3)
    assert not (bg.any() or fg.any() or neg.any())


def test_displacement_pairs_of_one_and_of_three_images():
    pidx = PathIndex(2, 2, 3)  # source (0, 1); destinations (0,2), (1,0), (1,1), (1,2)
    for b in (1, 3):
        disp = torch.arange(b * 2 * 6, dtype=torch.float32).view(b, 2, 2, 3)
        pairs = pidx.displacement_pairs(disp)
        assert pairs.shape == (b, 2, 4, 1)
        # D(0,1) - D(q): flat offsets 1 - (2, 3, 4, 5) in each channel
        assert pairs[..., 0].tolist() == [[[-1.0, -2.0, -3.0, -4.0]] * 2] * b


def test_direction_path_stays_in_the_bounding_box_for_upward_directions():
    # (-1, 2): box y -1..0, x 0..2, points with (x + 2y)^2 < 5: all six; row y = 1 (outside the
    # box) would hold (1, 0) with (0 + 2)^2 = 4 < 5
    assert sorted(direction_path(-1, 2)) == [(-1, 0), (-1, 1), (-1, 2), (0, 0), (0, 1), (0, 2)]
