"""Random walk of make_sem_seg_labels (docs/pipeline.md §3.10 step 3), without N x N matrices.

Reference maths, for a boundary map Bd (h, w) and seeds S (K, h, w):
  a. pad Bd with 1.0 (R columns left and right, R rows at the bottom);
  b. affinity of every (source, direction) on the padded grid = 1 - max Bd along the path;
  c. A symmetric with unit diagonal; d. cropped to the h*w original vertices;
  e. T = colnorm(A ** beta), squared exp_times times (T ** 2**exp_times);
  f. rw = (S * (1 - Bd)) . T ** 2**exp_times.
Because A is symmetric, one step x <- x . T is x <- (A**beta x) / colsum(A**beta): a sparse
operator with at most 2*D + 1 nonzeros per row, applied 2**exp_times times to the K seed rows.
This is the same product as the reference up to float rounding.
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from misc.irn.path_index import PathIndex

# the reference's walk radius in stride-4 cells (--walk_radius)
INFER_RADIUS = 5


@functools.lru_cache(maxsize=16)
def _path_index(radius: int, height: int, width: int) -> PathIndex:
    """PathIndex on the padded grid, reused across images of the same size."""
    return PathIndex(radius, height, width)


def _check(seeds: Tensor, boundary: Tensor) -> None:
    if seeds.dim() != 3 or boundary.dim() != 2 or seeds.shape[1:] != boundary.shape:
        raise ValueError(f"seeds must be (K, h, w) and boundary (h, w); got "
                         f"{tuple(seeds.shape)} and {tuple(boundary.shape)}")


def cropped_affinity(boundary: Tensor, radius: int) -> tuple[PathIndex, Tensor]:
    """Steps a, b, d: path affinities of the original vertices on the 1.0-padded grid.

    boundary: (h, w) in [0, 1]. Returns the padded grid's PathIndex and aff (D, h, w) in [0, 1]:
    aff[d, p] is the affinity between original vertices p and p + dirs[d], 0 where p + d falls
    outside the original grid (such pairs are cropped away in the reference).
    """
    h, w = boundary.shape
    padded = F.pad(boundary.unsqueeze(0), (radius, radius, 0, radius), value=1.0)
    pidx = _path_index(radius, h + radius, w + 2 * radius)
    aff = pidx.affinity(padded)[0].view(pidx.n_dirs, *pidx.src_shape)
    col0 = radius - pidx.radius_floor  # padded column `radius` is source column col0
    aff = aff[:, :h, col0:col0 + w]
    dirs = torch.tensor(pidx.dirs, device=boundary.device)
    dy, dx = dirs[:, 0].view(-1, 1, 1), dirs[:, 1].view(-1, 1, 1)
    rows = torch.arange(h, device=boundary.device).view(1, -1, 1)
    cols = torch.arange(w, device=boundary.device).view(1, 1, -1)
    inside = (rows + dy < h) & (cols + dx >= 0) & (cols + dx < w)
    return pidx, aff * inside


def transition_operator(boundary: Tensor, beta: float = 10, radius: int = 5) -> Tensor:
    """Sparse CSR M (N, N), N = h*w, with x . T == M @ x for T = colnorm(A ** beta).

    M[j, i] = A[i, j] ** beta / sum_i' A[i', j] ** beta; row j holds vertex j and its <= 2*D
    neighbours within the radius. The power and the normalisation run in float64 and M is
    rounded to float32 once: a float32 normalisation leaves row sums biased by a few ulp, which
    256 steps would compound to ~1e-4 (the dense squarings stay at ~3e-5).
    """
    h, w = boundary.shape
    n, dev = h * w, boundary.device
    pidx, aff = cropped_affinity(boundary, radius)
    weight = aff.double().pow(beta).reshape(pidx.n_dirs, n)
    offset = torch.tensor([dy * w + dx for dy, dx in pidx.dirs], device=dev)
    src = torch.arange(n, device=dev).expand(pidx.n_dirs, n)
    keep = weight > 0
    src, dst, weight = src[keep], (src + offset.view(-1, 1))[keep], weight[keep]
    diag = torch.arange(n, device=dev)
    rows, cols = torch.cat([diag, src, dst]), torch.cat([diag, dst, src])
    vals = torch.cat([torch.ones(n, device=dev, dtype=weight.dtype), weight, weight])
    colsum = torch.zeros(n, device=dev, dtype=vals.dtype).index_add_(0, rows, vals)
    vals = (vals / colsum[rows]).float()
    with warnings.catch_warnings():  # "sparse CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n),
                                      check_invariants=False)
        return coo.coalesce().to_sparse_csr()


@torch.no_grad()
def random_walk(seeds: Tensor, boundary: Tensor, beta: float = 10, exp_times: int = 8,
                radius: int = 5) -> Tensor:
    """rw = (seeds * (1 - boundary)) . T ** (2 ** exp_times), by 2 ** exp_times sparse steps.

    seeds: (K, h, w) >= 0; boundary: (h, w) in [0, 1], same device. Returns (K, h, w) float32.
    """
    _check(seeds, boundary)
    k, h, w = seeds.shape
    boundary = boundary.float()
    op = transition_operator(boundary, beta, radius)
    x = (seeds.float() * (1 - boundary)).reshape(k, h * w).t().contiguous()  # (N, K)
    for _ in range(2 ** exp_times):
        x = torch.sparse.mm(op, x)
    return x.t().reshape(k, h, w)


def dense_transition(boundary: Tensor, beta: float = 10, radius: int = 5) -> Tensor:
    """The reference's dense T (N, N), N = h*w (tests and bench only): the N' x N' affinity of
    the 1.0-padded grid (unit diagonal, 1 - max boundary along each path), cropped to the
    original vertices, ** beta, divided by its column sums."""
    h, w = boundary.shape
    hp, wp = h + radius, w + 2 * radius
    padded = F.pad(boundary.float().unsqueeze(0), (radius, radius, 0, radius), value=1.0)
    pidx = _path_index(radius, hp, wp)
    aff = pidx.affinity(padded)[0].reshape(-1)
    src = pidx.src.to(boundary.device).repeat(pidx.n_dirs)
    dst = pidx.dst.to(boundary.device).reshape(-1)
    a = torch.eye(hp * wp, device=boundary.device)
    a[src, dst] = aff
    a[dst, src] = aff
    a = a.view(hp, wp, hp, wp)[:h, radius:radius + w, :h, radius:radius + w].reshape(h * w, -1)
    t = a.pow(beta)
    return t / t.sum(dim=0, keepdim=True)


@torch.no_grad()
def dense_random_walk(seeds: Tensor, boundary: Tensor, beta: float = 10, exp_times: int = 8,
                      radius: int = 5) -> Tensor:
    """Literal dense reference (tests and bench only): T = `dense_transition`, squared
    exp_times times, rw = x . T. Same shapes as `random_walk`; needs O(N**2) memory and
    O(exp_times * N**3) time.
    """
    _check(seeds, boundary)
    k, h, w = seeds.shape
    t = dense_transition(boundary, beta, radius)
    for _ in range(exp_times):
        t = t @ t
    x = (seeds.float() * (1 - boundary.float())).reshape(k, h * w)
    return (x @ t).reshape(k, h, w)
