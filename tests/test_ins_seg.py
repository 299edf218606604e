"""misc.irn.ins_seg: centroids, instance map, segments and the whole make_ins_seg mechanism against
brute-force per-pixel references written here (docs/pipeline.md §3.12); displacement mean."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from misc.irn.ins_seg import (
    InstanceResult,
    best_channel,
    connected_components,
    displacement_mean,
    edge_and_displacement,
    find_centroids,
    fit_mean_shift,
    instance_map,
    instance_masks,
    load_instances,
    save_instances,
)
from misc.irn.random_walk import dense_random_walk

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ------------------------------------ brute force -------------------------------------------

def brute_centroid(disp: np.ndarray, y0: int, x0: int, iterations: int) -> tuple[int, int]:
    """One pixel's walk: a step in Python floats (the reference's corner products and sum order),
    the position kept as float32 and clipped; rounded half to even at the end."""
    h, w = disp.shape[1:]
    y, x = np.float32(y0), np.float32(x0)
    for _ in range(iterations):
        uy, dy, ux, dx = math.ceil(y), math.floor(y), math.ceil(x), math.floor(x)
        fy, fx = float(y) - dy, float(x) - dx
        corners = ((uy, ux, fy, fx), (dy, ux, 1 - fy, fx), (uy, dx, fy, 1 - fx),
                   (dy, dx, 1 - fy, 1 - fx))
        sy = sx = 0.0
        for cy, cx, wy, wx in corners:
            sy += float(disp[0, cy, cx]) * wy * wx
            sx += float(disp[1, cy, cx]) * wy * wx
        y = np.float32(min(max(np.float32(float(y) + sy), 0), h - 1))
        x = np.float32(min(max(np.float32(float(x) + sx), 0), w - 1))
    return int(np.round(y)), int(np.round(x))


def brute_instances(disp: np.ndarray, iterations: int) -> np.ndarray:
    """(h, w) instance ids: weak components (scipy, 4-conn.) at each pixel's centroid, compressed
    with the 'no component' group first."""
    h, w = disp.shape[1:]
    comp = ndimage.label(np.hypot(disp[0], disp[1]) < 2.5)[0]
    at = np.array([[comp[brute_centroid(disp, y, x, iterations)] for x in range(w)]
                   for y in range(h)])
    return np.searchsorted(np.unique(at), at)


def brute_instance_masks(cams, keys, boundary, disp, size, exp_times, bg, iterations,
                         min_frac=0.01):
    """(scores, masks (N, H, W), classes) with the dense random walk and Python loops."""
    inst = brute_instances(disp.numpy(), iterations)
    n_inst = inst.max() + 1
    seeds, classes = [], []
    for k in range(cams.shape[0]):
        for i in range(n_inst):
            seeds.append(cams[k] * torch.from_numpy(inst == i).float())
            classes.append(int(keys[k]))
    rw = dense_random_walk(torch.stack(seeds), boundary, 10, exp_times)
    up = F.interpolate(rw[:, None], scale_factor=4, mode="bilinear", align_corners=False)
    up = up[:, 0, :size[0], :size[1]]
    up = (up / up.max()).numpy()
    best = np.concatenate([np.full((1, *size), bg, np.float32), up]).argmax(0)
    out = ([], [], [])
    for j in range(len(seeds)):
        comp, n = ndimage.label(best == j + 1)
        for s in range(1, n + 1):
            seg = comp == s
            out[0].append(0.0 if seg.sum() < min_frac * size[0] * size[1] else up[j][seg].max())
            out[1].append(seg)
            out[2].append(classes[j])
    return np.array(out[0]), np.array(out[1]).reshape(-1, *size), np.array(out[2])


def scene(h: int, w: int, seed: int = 0) -> dict:
    """Two class-0 discs and one class-1 disc: field to each centre, rings in the boundary."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    disp = 0.2 * torch.randn(2, h, w, generator=gen)
    boundary = 0.05 * torch.rand(h, w, generator=gen)
    cams = 0.02 * torch.rand(3, h, w, generator=gen)
    r = 0.22 * min(h, w)
    for (fy, fx), cls in (((0.3, 0.25), 0), ((0.35, 0.72), 0), ((0.72, 0.5), 2)):
        cy, cx = fy * h, fx * w
        dist = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        inside = dist < r
        disp = torch.where(inside, torch.stack([cy - yy, cx - xx]), disp)
        boundary = torch.maximum(boundary, 0.9 * torch.exp(-((dist - r) / 1.0) ** 2))
        cams[cls] = torch.maximum(cams[cls], torch.exp(-(dist / r) ** 2))
    return {"cams": cams[[0, 2]], "keys": np.array([0, 2]), "boundary": boundary.clamp(0, 1),
            "displacement": disp}


# --------------------------------------- tests ----------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_centroids_match_per_pixel_walk(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    disp = 2.0 * torch.randn(2, 7, 9, generator=gen)
    disp[:, 2:5, 3:6] = 0.3 * torch.randn(2, 3, 3, generator=gen)
    got = find_centroids(disp, iterations=40)
    want = [[brute_centroid(disp.numpy(), y, x, 40) for x in range(9)] for y in range(7)]
    assert got.dtype == torch.int64 and got.shape == (2, 7, 9)
    assert np.array_equal(got.permute(1, 2, 0).numpy(), np.array(want))


def test_centroids_flow_to_centres() -> None:
    s = scene(16, 20)  # disc centres (4.8, 5.0) and (5.6, 14.4)
    cen = find_centroids(s["displacement"])
    assert (int(cen[0, 4, 4]), int(cen[1, 4, 4])) == (5, 5)
    assert (int(cen[0, 6, 15]), int(cen[1, 6, 15])) == (6, 14)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_connected_components_match_scipy(seed: int, device: str) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 3, (23, 31)) * (rng.random((23, 31)) < 0.8)
    values[5:18, 10:12] = 2  # a long component
    got = connected_components(torch.from_numpy(values).to(device)).cpu().numpy()
    assert (got == -1).sum() == (values == 0).sum()
    flat = np.arange(values.size).reshape(values.shape)
    for v in (1, 2):
        comp, n = ndimage.label(values == v)
        for s in range(1, n + 1):
            seg = comp == s
            assert np.all(got[seg] == flat[seg].min())


def test_instance_map_reference_numbering() -> None:
    s = scene(16, 20)
    inst = instance_map(s["displacement"], iterations=300)
    assert np.array_equal(inst.numpy(), brute_instances(s["displacement"].numpy(), 300))
    # three discs -> three instances plus the background's weak region
    assert int(inst.max()) + 1 >= 4


@pytest.mark.parametrize("size, seed, bg, min_frac", [
    ((64, 80), 0, 0.25, 0.01), ((61, 78), 1, 0.25, 0.01), ((64, 80), 2, 0.4, 0.08)])
def test_instance_masks_match_brute_force(size, seed, bg, min_frac) -> None:
    h4, w4 = (size[0] - 1) // 4 + 1, (size[1] - 1) // 4 + 1
    s = scene(h4, w4, seed)
    got = instance_masks(s["cams"], s["keys"], s["boundary"], s["displacement"], size,
                         exp_times=5, bg_thres=bg, min_area_frac=min_frac,
                         centroid_iterations=60)
    score, masks, cls = brute_instance_masks(s["cams"], s["keys"], s["boundary"],
                                             s["displacement"], size, 5, bg, 60, min_frac)
    assert got.labels.dtype == np.uint16 and got.labels.shape == size
    assert got.score.dtype == np.float32 and got.cls.dtype == np.int64
    assert np.array_equal(got.cls, cls) and np.array_equal(got.masks(), masks)
    np.testing.assert_allclose(got.score, score, rtol=1e-4, atol=1e-5)
    assert set(cls.tolist()) == {0, 2} and np.bincount(cls)[0] >= 2  # two class-0 instances


def test_small_segments_score_zero() -> None:
    s = scene(16, 20)
    got = instance_masks(s["cams"], s["keys"], s["boundary"], s["displacement"], (64, 80),
                         exp_times=4, min_area_frac=0.2, centroid_iterations=30)
    area = np.bincount(got.labels.ravel(), minlength=len(got) + 1)[1:]
    assert np.all((got.score == 0) == (area < 0.2 * 64 * 80)) and (got.score == 0).any()


def test_no_segment_images(tmp_path) -> None:
    s = scene(16, 20)
    cases = [dict(cams=torch.zeros(2, 16, 20), keys=s["keys"]),            # all-zero CAMs
             dict(cams=torch.zeros(0, 16, 20), keys=np.zeros(0, np.int64)),  # no class
             dict(cams=s["cams"], keys=s["keys"], bg_thres=1.0)]            # nothing beats bg
    for case in cases:
        kw = {"bg_thres": case.pop("bg_thres", 0.25)}
        res = instance_masks(boundary=s["boundary"], displacement=s["displacement"],
                             size=(64, 80), exp_times=3, centroid_iterations=10, **case, **kw)
        assert len(res) == 0 and res.labels.shape == (64, 80) and not res.labels.any()
        save_instances(tmp_path / "empty.npz", res)
        back = load_instances(tmp_path / "empty.npz")
        assert len(back) == 0 and back.masks().shape == (0, 64, 80)


def test_best_channel_chunks_are_exact() -> None:
    gen = torch.Generator().manual_seed(0)
    rw = torch.rand(7, 10, 12, generator=gen)
    rw[3] = rw[1]  # exact ties go to the first channel
    whole = best_channel(rw, (38, 45), 0.25)
    chunked = best_channel(rw, (38, 45), 0.25, chunk_elems=2 * 38 * 45)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    up = up[:, :38, :45] / up[:, :38, :45].max()
    ref = torch.cat([torch.full_like(up[:1], 0.25), up]).argmax(0) - 1
    assert torch.equal(whole[1], ref) and not (whole[1] == 3).any()


def test_save_load_roundtrip(tmp_path) -> None:
    labels = np.zeros((5, 6), np.uint16)
    labels[1:3, 1:4], labels[4, :] = 1, 2
    res = InstanceResult(labels, np.array([0.5, 0.0], np.float32), np.array([3, 0]))
    save_instances(tmp_path / "a.npz", res)
    back = load_instances(tmp_path / "a.npz")
    assert np.array_equal(back.labels, labels) and back.labels.dtype == np.uint16
    assert np.array_equal(back.score, res.score) and back.cls.tolist() == [3, 0]
    assert back.masks().sum((1, 2)).tolist() == [6, 6]
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="corrupt"):
        load_instances(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="make_ins_seg_labels"):
        load_instances(tmp_path / "missing.npz")


# ---------------------------------- displacement mean ---------------------------------------

class FakeIrn(torch.nn.Module):
    """forward(x) -> (edge, x[:, :2] * 2 - running_mean in eval mode), like IRN's MeanShift."""

    def __init__(self) -> None:
        super().__init__()
        self.mean_shift = torch.nn.BatchNorm2d(2, affine=False)
        self.mean_shift.running_mean.fill_(5.0)  # stale value a training run may leave
        self.seen_modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen_modes.append(self.training)
        disp = 2 * x[:, :2]
        if not self.training:
            disp = disp - self.mean_shift.running_mean.view(1, 2, 1, 1)
        return x[:, :1], disp


def test_displacement_mean_of_fake_callable() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, 6, 5, generator=gen) for _ in range(3)]
    mean = displacement_mean(lambda x: (None, x[:, 1:]), batches)
    want = torch.stack([b[:, 1:].mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    assert mean.shape == (2,) and torch.allclose(mean, want)
    with pytest.raises(ValueError, match="at least one batch"):
        displacement_mean(lambda x: (None, x), [])


def test_fit_mean_shift_sets_running_mean() -> None:
    model = FakeIrn().train()
    batches = [torch.full((2, 3, 4, 4), 1.5), torch.full((2, 3, 4, 4), 0.5)]
    batches[0][:, 1] = -1.0
    mean = fit_mean_shift(model, model.mean_shift, batches)
    # raw field (running mean zeroed during the pass): channel 0 = 2*(1.5, 0.5), channel 1 = 2*(-1, 0.5)
    assert torch.allclose(mean, torch.tensor([2.0, -0.5]))
    assert torch.allclose(model.mean_shift.running_mean, mean)
    assert model.seen_modes == [False, False] and model.training
    model.eval()
    _, disp = model(batches[1])
    assert torch.allclose(disp.mean(dim=(0, 2, 3)), torch.tensor([1.0, 1.0]) - mean)


def test_edge_and_displacement_pads_crops_and_merges_the_mirror() -> None:
    calls = []

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(tuple(x.shape))
        pooled = F.avg_pool2d(x, 4, ceil_mode=True)          # (2, 3, s4, s4)
        return pooled[:, :1], pooled[:, 1:]

    gen = torch.Generator().manual_seed(0)
    img = torch.randn(3, 21, 30, generator=gen)
    boundary, disp = edge_and_displacement(forward, img, pad_to=32)
    assert calls == [(2, 3, 32, 32)] and boundary.shape == (6, 8) and disp.shape == (2, 6, 8)
    padded = F.pad(torch.stack([img, img.flip(-1)]), (0, 2, 0, 11))
    pooled = F.avg_pool2d(padded, 4, ceil_mode=True)[..., :6, :8]
    want = torch.sigmoid((pooled[0, 0] + pooled[1, 0].flip(-1)) / 2)
    assert torch.allclose(boundary, want) and torch.equal(disp, pooled[0, 1:])
    edge_and_displacement(forward, torch.randn(3, 40, 30), pad_to=32)  # too large: no padding
    assert calls[-1] == (2, 3, 40, 30)
