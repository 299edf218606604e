"""Path index of IRN (docs/pipeline.md §3.9): directions within a radius, the pixel path of each
direction, and batched, device-side gathers over (direction, source) pairs.

Shared by train_irn (affinity targets, losses) and make_sem_seg_labels (random walk). Index
tensors are built once on the CPU and cached per device on first use.

Ordering: the direction axis D follows `directions()` (the reference's enumeration order). The
reference concatenates directions grouped by path length instead; this is only a permutation of
the D axis and changes no loss (sums over all pairs) and no random walk (symmetric matrix).
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor


def directions(radius: int) -> list[tuple[int, int]]:
    """Half-plane directions (dy, dx) with dy**2 + dx**2 < radius**2, reference order:
    (0, x) for x = 1..R-1, then (y, x) for y = 1..R-1, x = -(R-1)..R-1. 152 for R=10, 34 for R=5."""
    dirs = [(0, x) for x in range(1, radius)]
    dirs += [(y, x) for y in range(1, radius) for x in range(-radius + 1, radius)
             if x * x + y * y < radius * radius]
    return dirs


def direction_path(dy: int, dx: int) -> list[tuple[int, int]]:
    """Integer points (y, x) of the bounding box of (0, 0) and (dy, dx) whose distance to the line
    through both is < 1, i.e. (dy*x - dx*y)**2 < dy**2 + dx**2; includes both end points."""
    norm_sq = dy * dy + dx * dx
    return [(y, x)
            for y in range(min(0, dy), max(0, dy) + 1)
            for x in range(min(0, dx), max(0, dx) + 1)
            if (dy * x - dx * y) ** 2 < norm_sq]


class PathIndex:
    """Sources and per-direction destination / path indices for an (height, width) map.

    Sources: rows [0, height - rf), cols [rf, width - rf) with rf = ceil(radius) - 1, flattened
    row-major (Ns = (height - rf) * (width - 2 rf); 13090 for 128x128, R=10). The destination of
    source p for direction d is p + d, which always lies inside the map.
    """

    def __init__(self, radius: int, height: int, width: int) -> None:
        self.radius, self.height, self.width = radius, height, width
        self.radius_floor = rf = int(math.ceil(radius)) - 1
        if height <= rf or width <= 2 * rf:
            raise ValueError(f"map {height}x{width} too small for path radius {radius}")
        self.dirs = directions(radius)
        self.src_shape = (height - rf, width - 2 * rf)
        rows = torch.arange(height - rf).view(-1, 1)
        cols = torch.arange(rf, width - rf).view(1, -1)
        self.src = (rows * width + cols).reshape(-1)                        # (Ns,)
        offsets = torch.tensor([dy * width + dx for dy, dx in self.dirs])  # (D,)
        self.dst = offsets.view(-1, 1) + self.src.view(1, -1)              # (D, Ns)
        groups: dict[int, list[int]] = defaultdict(list)
        paths = [direction_path(dy, dx) for dy, dx in self.dirs]
        for d, path in enumerate(paths):
            groups[len(path)].append(d)
        # per path length L: (direction ids (Dg,), flat path indices (Dg, L, Ns))
        self.path_groups = [
            (torch.tensor(ids),
             torch.tensor([[y * width + x for y, x in paths[d]] for d in ids]).unsqueeze(-1)
             + self.src.view(1, 1, -1))
            for _, ids in sorted(groups.items())]
        self._cache: dict[torch.device, dict] = {}

    @property
    def n_dirs(self) -> int:
        return len(self.dirs)

    @property
    def n_src(self) -> int:
        return self.src.numel()

    def _on(self, device: torch.device) -> dict:
        """Index tensors on `device` (moved once, then cached)."""
        if device not in self._cache:
            self._cache[device] = {
                "src": self.src.to(device), "dst": self.dst.reshape(-1).to(device),
                "groups": [(ids.to(device), idx.reshape(-1).to(device))
                           for ids, idx in self.path_groups],
                "unsort": torch.argsort(torch.cat([ids for ids, _ in self.path_groups])).to(device)}
        return self._cache[device]

    def _check(self, t: Tensor, dims: int) -> None:
        if t.dim() != dims or tuple(t.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"expected a {dims}-d tensor ending in ({self.height}, {self.width}), "
                             f"got {tuple(t.shape)}")

    def affinity(self, boundary: Tensor) -> Tensor:
        """a(p, d) = 1 - max over path points q of boundary(p + q).

        boundary: (B, H, W) float in [0, 1]. Returns (B, D, Ns), differentiable w.r.t. boundary.
        """
        self._check(boundary, 3)
        idx = self._on(boundary.device)
        flat = boundary.reshape(boundary.shape[0], -1)
        parts = [flat.index_select(1, path_idx).view(flat.shape[0], ids.numel(), -1, self.n_src)
                 .max(dim=2).values  # max (not amax): gradient to one path point, as max_pool
                 for ids, path_idx in idx["groups"]]
        return 1.0 - torch.cat(parts, dim=1).index_select(1, idx["unsort"])

    def pair_labels(self, label: Tensor, n_valid: int) -> tuple[Tensor, Tensor, Tensor]:
        """Affinity targets from a label map.

        label: (B, H, W) integer (values >= n_valid, e.g. 255, are ignored). Returns
        (bg_pos, fg_pos, neg), each bool (B, D, Ns): both ends valid and equal with background
        (0) source / foreground source / both ends valid and different.
        """
        self._check(label, 3)
        idx = self._on(label.device)
        flat = label.reshape(label.shape[0], -1)
        src = flat.index_select(1, idx["src"]).unsqueeze(1)                    # (B, 1, Ns)
        dst = flat.index_select(1, idx["dst"]).view(flat.shape[0], self.n_dirs, -1)
        valid = (src < n_valid) & (dst < n_valid)
        equal = src == dst
        pos = valid & equal
        return pos & (src == 0), pos & (src > 0), valid & ~equal

    def displacement_pairs(self, disp: Tensor) -> Tensor:
        """D(p) - D(p + d). disp: (B, 2, H, W) float. Returns (B, 2, D, Ns)."""
        self._check(disp, 4)
        idx = self._on(disp.device)
        flat = disp.reshape(disp.shape[0], 2, -1)
        src = flat.index_select(2, idx["src"]).unsqueeze(2)
        dst = flat.index_select(2, idx["dst"]).view(flat.shape[0], 2, self.n_dirs, -1)
        return src - dst

    def direction_targets(self) -> Tensor:
        """(dy, dx) of every direction as float32 (2, D, 1) on the CPU."""
        return torch.tensor(self.dirs, dtype=torch.float32).t().unsqueeze(-1)
