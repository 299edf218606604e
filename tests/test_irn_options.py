"""IRN's scale and backbone options (docs/toy.md §7): --irn_frozen_stages, --irn_train_radius,
--walk_radius. Their defaults are the reference's (all five stages fixed, pairs within 10 cells,
a walk over 5), and each reaches the code it names."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from misc.irn.path_index import PathIndex
from misc.irn.random_walk import INFER_RADIUS, random_walk
from misc.irn.sem_seg import pseudo_mask
from net.resnet50_irn import Net
from step.driver.flags import load_profile
from step.train_irn import make_loss_fn


def stage_grads(net: Net) -> list[bool]:
    """Whether each backbone stage's first conv got a gradient from both branches' outputs."""
    net.train()
    edge, disp = net(torch.randn(1, 3, 32, 32))
    (edge.sum() + disp.sum()).backward()
    return [next(stage.parameters()).grad is not None for stage in net.backbone]


@pytest.fixture(scope="module")
def net() -> Net:
    torch.manual_seed(0)
    return Net()


def test_the_reference_backbone_is_fixed_and_passes_no_gradient(net):
    assert net.frozen_stages == 5
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert stage_grads(net) == [False] * 5


def test_stages_after_the_frozen_ones_train_with_the_edge_branch(net):
    net.freeze_stages(3)
    net.zero_grad(set_to_none=True)
    assert stage_grads(net) == [False, False, False, True, True]
    edge_group, dp_group = net.param_groups()
    ids = {id(p) for p in edge_group}
    assert all(id(p) in ids for p in net.stage4.parameters())
    assert not any(id(p) in ids for p in net.stage3.parameters())
    assert not any(id(p) in {id(q) for q in dp_group} for p in net.backbone.parameters())
    net.freeze_stages(5)


def test_trained_stages_keep_their_batch_norm_statistics(net):
    net.freeze_stages(0)
    before = net.stage2[0][0].bn1.running_mean.clone()
    stage_grads(net)
    assert torch.equal(net.stage2[0][0].bn1.running_mean, before)
    net.freeze_stages(5)


def test_profiles_default_to_the_reference_scale():
    for profile in ("voc12", "coco14"):
        values = load_profile(profile)
        assert (values["irn_frozen_stages"], values["irn_train_radius"], values["walk_radius"]) == (5, 10, 5)
    assert INFER_RADIUS == 5


def test_the_train_radius_sets_the_affinity_pairs():
    """Pairs within radius r: the half-plane directions with dy^2 + dx^2 < r^2, so 4 for r = 2:
    (0,1), (1,-1), (1,0), (1,1). With a flat network output the affinity terms are equal for any
    pair set, and the displacement term is the mean length of the pairs' offsets, which grows
    with the radius."""
    assert len(PathIndex(2, 8, 8).dirs) == 4

    class Flat(torch.nn.Module):
        def forward(self, x):
            b = x.shape[0]
            return torch.zeros(b, 1, 16, 16), torch.zeros(b, 2, 16, 16)

    label = torch.zeros(1, 64, 64, dtype=torch.long)
    label[:, 16:48, 16:48] = 1
    batch = {"img": torch.zeros(1, 3, 64, 64), "label": label}
    losses = [float(make_loss_fn(2, r)(Flat(), batch)) for r in (2, 5)]
    assert losses[0] < losses[1]


def test_the_walk_radius_reaches_the_walk():
    """A seed on one cell of a boundary-free 1x9 strip spreads 1 cell per step at radius 2 and
    up to 4 cells per step at radius 5: after 1 step (exp_times 0) the far cells differ."""
    seeds = torch.zeros(1, 1, 9)
    seeds[0, 0, 0] = 1.0
    boundary = torch.zeros(1, 9)
    near = random_walk(seeds, boundary, beta=10, exp_times=0, radius=2)
    far = random_walk(seeds, boundary, beta=10, exp_times=0, radius=5)
    assert float(near[0, 0, 3]) == 0.0 and float(far[0, 0, 3]) > 0.0
    maps = {"keys": np.array([0]), "cam": np.concatenate([np.zeros((1, 1, 9)), seeds.numpy()])}
    kw = dict(size=(4, 36), power=1.0, beta=10, exp_times=0, bg_thres=0.05)
    assert not torch.equal(pseudo_mask(maps, boundary, radius=2, **kw),
                           pseudo_mask(maps, boundary, radius=5, **kw))
