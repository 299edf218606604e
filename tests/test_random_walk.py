"""misc.irn.random_walk: sparse steps against the literal dense reference formula (§3.10 step 3)."""
from __future__ import annotations

import pytest
import torch

from misc.irn.random_walk import dense_random_walk, random_walk, transition_operator

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def inputs(h: int, w: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(k, h, w, generator=gen), torch.rand(h, w, generator=gen) ** 2


def labels(rw: torch.Tensor, bg: float = 0.25) -> torch.Tensor:
    rw = rw / rw.max()
    return torch.cat([torch.full_like(rw[:1], bg), rw]).argmax(0)


@pytest.mark.parametrize("h, w, k, exp_times", [
    (9, 11, 1, 3), (12, 7, 3, 8), (9, 11, 2, 5), (16, 13, 2, 8), (3, 4, 2, 4)])
def test_sparse_matches_dense(h: int, w: int, k: int, exp_times: int) -> None:
    seeds, boundary = inputs(h, w, k)
    sparse = random_walk(seeds, boundary, beta=10, exp_times=exp_times)
    dense = dense_random_walk(seeds, boundary, beta=10, exp_times=exp_times)
    assert sparse.shape == (k, h, w) and sparse.dtype == torch.float32
    torch.testing.assert_close(sparse, dense, rtol=1e-3, atol=3e-4)
    assert torch.equal(labels(sparse), labels(dense))


def test_other_radius_and_beta() -> None:
    seeds, boundary = inputs(10, 9, 2, seed=1)
    kw = dict(beta=4.0, exp_times=6, radius=3)
    torch.testing.assert_close(random_walk(seeds, boundary, **kw),
                               dense_random_walk(seeds, boundary, **kw), rtol=1e-3, atol=3e-4)


def test_operator_is_row_stochastic_and_local() -> None:
    _, boundary = inputs(12, 10, 1)
    op = transition_operator(boundary, beta=10, radius=5)
    dense = op.to_dense()
    torch.testing.assert_close(dense.sum(1), torch.ones(120))
    assert (op.crow_indices().diff() <= 2 * 34 + 1).all()
    assert (dense.diagonal() > 0).all()


def test_full_boundary_blocks_everything() -> None:
    seeds = torch.rand(2, 6, 7)
    out = random_walk(seeds, torch.ones(6, 7), exp_times=3)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_device(device: str) -> None:
    seeds, boundary = inputs(11, 9, 2)
    out = random_walk(seeds.to(device), boundary.to(device), exp_times=4)
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), dense_random_walk(seeds, boundary, exp_times=4),
                               rtol=1e-3, atol=3e-4)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="seeds must be"):
        random_walk(torch.rand(2, 5, 6), torch.rand(6, 5))
