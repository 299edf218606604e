"""misc.irn.random_walk against a loop-by-loop transition matrix written here from its definition
(docs/pipeline.md §3.10 step 3): A[p, q] = 1 - max of the boundary on the path from p to q for
q = p + d, d a half-plane direction with |d| < radius, both inside the image; unit diagonal;
T = A ** beta / column sums; rw = (seeds * (1 - boundary)) . T ** (2 ** exp_times). Both the
sparse walk and the dense reference of the module are checked against it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from misc.irn.random_walk import (
    INFER_RADIUS,
    cropped_affinity,
    dense_random_walk,
    dense_transition,
    random_walk,
    transition_operator,
)


def loop_transition(boundary: np.ndarray, beta: float, radius: int) -> np.ndarray:
    h, w = boundary.shape
    dirs = [(0, x) for x in range(1, radius)] + [
        (y, x) for y in range(1, radius) for x in range(-radius + 1, radius)
        if y * y + x * x < radius * radius]
    a = np.eye(h * w)
    for y in range(h):
        for x in range(w):
            for dy, dx in dirs:
                qy, qx = y + dy, x + dx
                if not (0 <= qy < h and 0 <= qx < w):
                    continue
                path = [(y + py, x + px)
                        for py in range(min(0, dy), max(0, dy) + 1)
                        for px in range(min(0, dx), max(0, dx) + 1)
                        if (dy * px - dx * py) ** 2 < dy * dy + dx * dx]
                aff = 1 - max(boundary[py, px] for py, px in path)
                a[y * w + x, qy * w + qx] = a[qy * w + qx, y * w + x] = aff
    t = a ** beta
    return t / t.sum(0, keepdims=True)


def loop_walk(seeds: np.ndarray, boundary: np.ndarray, beta: float, exp_times: int,
              radius: int) -> np.ndarray:
    t = np.linalg.matrix_power(loop_transition(boundary, beta, radius), 2 ** exp_times)
    k, h, w = seeds.shape
    return ((seeds * (1 - boundary)).reshape(k, h * w) @ t).reshape(k, h, w)


def case(h: int = 4, w: int = 5, k: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    boundary = rng.uniform(0, 0.6, (h, w)).astype(np.float32)
    seeds = rng.uniform(0, 1, (k, h, w)).astype(np.float32)
    seeds[0, 0, :] = 0
    return seeds, boundary


@pytest.mark.parametrize("beta, radius", [(3.0, 3), (2.0, 2), (10.0, 5)])
def test_dense_transition_is_the_loop_definition(beta, radius):
    _, boundary = case()
    got = dense_transition(torch.from_numpy(boundary), beta, radius).double().numpy()
    np.testing.assert_allclose(got, loop_transition(boundary.astype(np.float64), beta, radius),
                               rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("beta, radius", [(3.0, 3), (2.0, 2), (10.0, 5)])
def test_sparse_operator_is_the_transpose_of_the_loop_transition(beta, radius):
    _, boundary = case()
    op = transition_operator(torch.from_numpy(boundary), beta, radius).to_dense().double().numpy()
    want = loop_transition(boundary.astype(np.float64), beta, radius)
    np.testing.assert_allclose(op, want.T, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("exp_times", [0, 1, 3])
def test_walks_take_2_to_the_exp_times_steps(exp_times):
    seeds, boundary = case(seed=1)
    want = loop_walk(seeds.astype(np.float64), boundary.astype(np.float64), 3.0, exp_times, 3)
    sparse = random_walk(torch.from_numpy(seeds), torch.from_numpy(boundary), 3.0, exp_times, 3)
    dense = dense_random_walk(torch.from_numpy(seeds), torch.from_numpy(boundary), 3.0,
                              exp_times, 3)
    assert sparse.dtype == torch.float32 and sparse.shape == seeds.shape
    np.testing.assert_allclose(sparse.numpy(), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dense.numpy(), want, rtol=1e-4, atol=1e-6)


def test_default_beta_exp_times_and_radius_are_10_8_and_5():
    seeds, boundary = case(h=3, w=6, k=1, seed=2)
    want = loop_walk(seeds.astype(np.float64), boundary.astype(np.float64), 10.0, 8, 5)
    got = random_walk(torch.from_numpy(seeds), torch.from_numpy(boundary))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-3, atol=1e-6)
    dense = dense_random_walk(torch.from_numpy(seeds), torch.from_numpy(boundary))
    np.testing.assert_allclose(dense.numpy(), want, rtol=1e-3, atol=1e-6)
    t = dense_transition(torch.from_numpy(boundary)).double().numpy()
    np.testing.assert_allclose(t, loop_transition(boundary.astype(np.float64), 10, 5),
                               rtol=2e-5, atol=1e-7)
    op = transition_operator(torch.from_numpy(boundary)).to_dense().double().numpy()
    np.testing.assert_allclose(op, t.T, rtol=2e-5, atol=1e-7)


def test_cropped_affinity_of_a_small_map():
    # 2 x 3 map, radius 2: directions (0,1), (1,-1), (1,0), (1,1)
    boundary = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.0]])
    pidx, aff = cropped_affinity(boundary, 2)
    assert pidx.dirs == [(0, 1), (1, -1), (1, 0), (1, 1)]
    want = torch.tensor([
        [[0.8, 0.7, 0.0], [0.5, 0.5, 0.0]],   # right neighbour; none past the last column
        [[0.0, 0.5, 0.5], [0.0, 0.0, 0.0]],   # down-left: path box of the two rows
        [[0.6, 0.5, 0.7], [0.0, 0.0, 0.0]],   # down; the last row has no pair below
        [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]],   # down-right
    ])
    assert torch.allclose(aff, want)


def test_seeds_and_boundary_shapes_are_checked():
    for seeds, boundary in ((torch.rand(5, 6), torch.rand(5, 6)),
                            (torch.rand(1, 5, 6), torch.rand(1, 5, 6)),
                            (torch.rand(1, 5, 6), torch.rand(5, 7))):
        with pytest.raises(ValueError, match="seeds must be"):
            random_walk(seeds, boundary)
        with pytest.raises(ValueError, match="seeds must be"):
            dense_random_walk(seeds, boundary)


def test_walks_build_no_autograd_graph():
    seeds, boundary = case(h=3, w=4, k=1)
    b = torch.from_numpy(boundary).requires_grad_(True)
    s = torch.from_numpy(seeds).requires_grad_(True)
    assert not random_walk(s, b, 3.0, 1, 2).requires_grad
    assert not dense_random_walk(s, b, 3.0, 1, 2).requires_grad


def test_the_inference_walk_reaches_4_cells_a_step_the_references_radius_5():
    """On a map without boundaries one step of the walk at the inference radius moves a seed's
    mass to the cells with dx^2 + dy^2 < 5^2: 4 cells along the row, not 5."""
    h, w, y, x = 12, 30, 6, 15
    op = transition_operator(torch.zeros(h, w), 10, INFER_RADIUS).to_dense()
    reach = op[:, y * w + x].view(h, w)[y]  # where the centre's mass goes, along its row
    assert reach[x - 4] > 0 and reach[x + 4] > 0
    assert reach[x - 5] == 0 and reach[x + 5] == 0
