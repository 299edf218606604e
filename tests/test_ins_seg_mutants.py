"""misc.irn.ins_seg, the cases the mutation run (docs/mutation.md) found unpinned: the reference's
300 centroid steps, the 2.5 weak-displacement bound, the 1% area rule, segment order and the
instance file checks, on hand-made fields whose outcome is worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from misc.errors import BadInput
from misc.irn.ins_seg import (
    InstanceResult,
    connected_components,
    displacement_mean,
    edge_and_displacement,
    find_centroids,
    instance_map,
    instance_masks,
    instance_seeds,
    load_instances,
    save_instances,
    segments,
)


def drift_then_bounce(width: int = 50) -> torch.Tensor:
    """(2, 1, width): dx = +1 on columns 0..width-2, -1 on the last column, dy = 0. A pixel at
    column 0 walks one column per step to width - 2 (step width - 2), then bounces between the
    last two columns: after t >= width - 2 steps it is on width - 2 iff t - (width - 2) is even."""
    disp = torch.zeros(2, 1, width)
    disp[1] = 1.0
    disp[1, 0, -1] = -1.0
    return disp


def test_centroids_take_the_reference_300_steps_by_default():
    cen = find_centroids(drift_then_bounce(50))
    # 300 steps: 48 to reach column 48, then 252 bounces (even): back on 48
    assert cen[1, 0, 0].item() == 48 and cen[0, 0, 0].item() == 0
    # column 1 needs 47 steps, then 253 bounces (odd): column 49; column 2: 254 bounces, 48
    assert cen[1, 0, 1].item() == 49 and cen[1, 0, 2].item() == 48
    assert find_centroids(drift_then_bounce(50), iterations=301)[1, 0, 0].item() == 49
    assert find_centroids(drift_then_bounce(50), iterations=30)[1, 0, 0].item() == 30


def test_centroids_are_clipped_to_the_map_and_follow_dy():
    disp = torch.zeros(2, 4, 3)
    disp[0] = 1.5   # down, past the last row
    disp[1] = -0.5  # left, past column 0
    cen = find_centroids(disp, iterations=10)
    assert cen[0].unique().tolist() == [3] and cen[1].unique().tolist() == [0]


def test_weak_displacement_is_strictly_below_2_5():
    # |D| = 2.5 exactly (1.5, 2.0) is not weak; |D| = 2.4 is. Field points nowhere else: each
    # pixel moves by D (clipped to the 1x4 map).
    disp = torch.zeros(2, 1, 4)
    disp[0, 0, 0], disp[1, 0, 0] = -1.5, -2.0   # |D| 2.5 at column 0, pushes off the map: stays
    disp[1, 0, 1] = -2.4                        # weak, walks to column 0 (not weak)
    # columns 2 and 3 have D = 0: weak, one component, their own centroid
    inst = instance_map(disp, iterations=5)
    # column 0 and 1 land on column 0 (outside every weak component): the first group, id 0;
    # columns 2, 3 in the component starting at column 1 -> id 1
    assert inst.tolist() == [[0, 0, 1, 1]]
    comp_of_1 = instance_map(disp, iterations=0)   # no step: column 1 is its own weak region
    assert comp_of_1.tolist() == [[0, 1, 1, 1]]


def test_instance_ids_follow_the_first_pixel_of_each_weak_component():
    # two weak columns separated by a strong one; no pixel moves (strong D pushes off the map)
    disp = torch.zeros(2, 2, 3)
    disp[0, :, 1] = -5.0   # strong, clipped at row 0 -> lands on row 0 of column 1: strong
    inst = instance_map(disp, iterations=3)
    assert inst.tolist() == [[1, 0, 2], [1, 0, 2]]


def test_connected_components_join_only_equal_4_neighbours():
    values = torch.tensor([[1, 1, 0, 2],
                           [0, 1, 0, 2],
                           [2, 0, 1, 1]])
    got = connected_components(values)
    assert got.tolist() == [[0, 0, -1, 3], [-1, 0, -1, 3], [8, -1, 10, 10]]


def test_instance_seeds_are_class_major():
    cams = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])   # K=2, h=1, w=2
    inst = torch.tensor([[0, 1]])
    seeds, cls = instance_seeds(cams, inst)
    assert seeds.tolist() == [[[1.0, 0.0]], [[0.0, 2.0]], [[3.0, 0.0]], [[0.0, 4.0]]]
    assert cls.tolist() == [0, 0, 1, 1]


def test_segments_channel_major_with_max_score_and_area_rule():
    index = torch.tensor([[1, 1, -1, 0],
                          [-1, -1, -1, 0],
                          [1, -1, -1, -1]])
    value = torch.tensor([[0.5, 0.7, 0.2, 0.4],
                          [0.1, 0.1, 0.1, 0.9],
                          [0.6, 0.1, 0.1, 0.1]])
    labels, channel, score = segments(value, index, min_area=2)
    # channel 0 first (one segment), then channel 1 in raster order: (0,0)-(0,1), then (2,0)
    assert channel.tolist() == [0, 1, 1]
    assert labels.tolist() == [[2, 2, 0, 1], [0, 0, 0, 1], [3, 0, 0, 0]]
    # areas 2, 2, 1: the single pixel is below min_area 2 and scores 0; areas equal to it keep
    assert score.tolist() == pytest.approx([0.9, 0.7, 0.0])


def test_masks_are_one_per_segment():
    labels = np.array([[1, 0], [2, 2]], np.uint16)
    res = InstanceResult(labels, np.array([0.5, 0.25], np.float32), np.array([0, 1]))
    assert len(res) == 2
    assert res.masks().tolist() == [[[True, False], [False, False]],
                                    [[False, False], [True, True]]]


def test_inconsistent_instance_files_are_refused(tmp_path):
    labels = np.array([[3, 0]], np.uint16)  # segment 3 but only two scores
    save_instances(tmp_path / "a.npz", InstanceResult(labels, np.ones(2, np.float32),
                                                      np.zeros(2, np.int64)))
    with pytest.raises(ValueError, match="inconsistent"):
        load_instances(tmp_path / "a.npz")
    ok = np.array([[2, 0]], np.uint16)  # labels up to the count are fine
    save_instances(tmp_path / "b.npz", InstanceResult(ok, np.ones(2, np.float32),
                                                      np.zeros(2, np.int64)))
    assert len(load_instances(tmp_path / "b.npz")) == 2
    np.savez(tmp_path / "c.npz", labels=ok, score=np.ones(2, np.float32),
             **{"class": np.zeros(3, np.int64)})
    with pytest.raises(ValueError, match="inconsistent"):
        load_instances(tmp_path / "c.npz")


@pytest.mark.parametrize("height, width", [(32, 32), (32, 29), (29, 32), (33, 20), (20, 33),
                                           (25, 27), (26, 28), (27, 20), (20, 27)])
def test_the_pair_is_padded_only_when_it_fits_and_the_maps_are_cropped_to_ceil_of_a_quarter(
        height, width):
    """pad_to 32: padded to 32x32 iff both sides are at most 32; the outputs are cropped to
    (ceil(H / 4), ceil(W / 4)), worked out here for each size (8x8, 8x8, 8x8, 9x5, 5x9, 7x7,
    7x7, 7x5, 5x7; 27 is where a crop of ceil((H + 2) / 4) would keep a row too many)."""
    seen = []

    def forward(x):
        seen.append(tuple(x.shape[2:]))
        s4 = (-(-x.shape[2] // 4), -(-x.shape[3] // 4))
        return torch.zeros(2, 1, *s4), torch.zeros(2, 2, *s4)
    boundary, disp = edge_and_displacement(forward, torch.zeros(3, height, width), pad_to=32)
    fits = height <= 32 and width <= 32
    assert seen == [(32, 32) if fits else (height, width)]
    want = {(32, 32): (8, 8), (32, 29): (8, 8), (29, 32): (8, 8), (33, 20): (9, 5),
            (20, 33): (5, 9), (25, 27): (7, 7), (26, 28): (7, 7), (27, 20): (7, 5),
            (20, 27): (5, 7)}[(height, width)]
    assert boundary.shape == want and disp.shape == (2, *want)


def test_by_default_a_segment_above_1_percent_of_the_image_keeps_its_score():
    """One class, one instance (zero displacement: one weak component), no boundaries: the
    segment is where the walked CAM beats the 0.25 background, far above 1% of the 16x16
    image, and its score is the normalised maximum, 1.0."""
    cams = torch.zeros(1, 4, 4)
    cams[0, 1:3, 1:3] = 1.0
    result = instance_masks(cams, np.array([4]), torch.zeros(4, 4), torch.zeros(2, 4, 4), (16, 16))
    assert len(result) == 1 and result.cls.tolist() == [4]
    assert result.score.tolist() == [1.0] and result.masks().sum() > 0.01 * 256


def test_the_irn_maps_of_an_image_are_computed_without_autograd():
    weight = torch.nn.Parameter(torch.ones(()))  # a network's weight: outputs would track it

    def forward(x):
        s4 = (-(-x.shape[2] // 4), -(-x.shape[3] // 4))
        return weight * torch.zeros(2, 1, *s4), weight * torch.zeros(2, 2, *s4)
    boundary, disp = edge_and_displacement(forward, torch.zeros(3, 8, 8), pad_to=8)
    assert not boundary.requires_grad and not disp.requires_grad


def test_the_displacement_mean_is_computed_without_autograd():
    weight = torch.nn.Parameter(torch.ones(()))
    mean = displacement_mean(lambda x: (None, weight * x[:, 1:]), [torch.ones(2, 3, 4, 4)])
    assert not mean.requires_grad and mean.tolist() == [1.0, 1.0]


def _one_segment() -> tuple:
    cams = torch.zeros(1, 4, 4)
    cams[0, 1:3, 1:3] = 1.0
    return cams, np.array([4]), torch.zeros(4, 4), torch.zeros(2, 4, 4), (16, 16)


def test_as_many_segments_as_a_uint16_label_holds_fit_and_one_more_is_refused(monkeypatch):
    from misc.irn import ins_seg
    monkeypatch.setattr(ins_seg, "MAX_SEGMENTS", 1)  # the one segment of _one_segment fits
    assert len(instance_masks(*_one_segment())) == 1
    monkeypatch.setattr(ins_seg, "MAX_SEGMENTS", 0)
    with pytest.raises(ValueError) as err:
        instance_masks(*_one_segment())
    assert str(err.value) == "1 segments do not fit a uint16 label image"


def test_an_instance_file_holding_pickled_objects_is_refused_as_corrupt(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, labels=np.array([{"a": 1}], dtype=object), score=np.zeros(0, np.float32),
             **{"class": np.zeros(0, np.int64)})
    with pytest.raises(BadInput, match="corrupt instance file .*allow_pickle"):
        load_instances(path)
