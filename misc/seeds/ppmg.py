"""PMM's pseudo-mask rule on per-class maps (docs/pmm.md §2-§3): coefficient-of-variation
smoothing (CVS) and proportional pseudo-mask generation (PPMG), one per-class two-label dense CRF
each, on any maps in [0, 1] (CAM, AMN foreground channels, random-walk output).

Shapes: maps (K, H, W) float in [0, 1], one channel per present class; keys (K,) 0-based class
ids; image uint8 (H, W, 3) RGB (the CRF is fed its BGR copy, as PMM reads images with cv2);
labels (H, W) uint8, 0 = background, c + 1 = class c.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from misc.seeds.crf import PairwiseCRF, compose_ir_label

CV_SCALE = 0.3     # s of CVS; 0 switches CVS off
CAM_THRESH = 0.05  # t of CVS
ALPHA = 11.0       # the exponent of PMM's background score for its final masks
# PMM's two-label CRF: 10 mean-field iterations, Gaussian (sxy 3, compat 10), bilateral
# (sxy 80, srgb 13, compat 10)
PPMG_CRF = dict(n_iter=10, gauss_sxy=3, gauss_compat=10, bi_sxy=80, bi_srgb=13, bi_compat=10)


def coefficient_of_variation(v: np.ndarray, thresh: float = CAM_THRESH) -> float:
    """std / mean of the values of one map `v` (H, W) strictly above `thresh` (population std,
    ddof 0); 0 when no value is above it."""
    above = np.asarray(v, np.float64)[np.asarray(v) > thresh]
    if above.size == 0:
        return 0.0
    return float(above.std() / above.mean())


def cvs_exponents(maps: np.ndarray, cv_scale: float = CV_SCALE,
                  thresh: float = CAM_THRESH) -> np.ndarray:
    """(K,) float64 exponents 1 − s · cv_k of CVS, in (0, 1] for maps in [0, 1]."""
    return np.array([1.0 - cv_scale * coefficient_of_variation(v, thresh) for v in maps])


def smooth_with(v: np.ndarray, exponent: float, thresh: float = CAM_THRESH) -> np.ndarray:
    """(v · 1[v ≥ t]) ** exponent for one map (H, W): float32 in [0, 1]."""
    v = np.asarray(v, np.float32)
    return np.where(v >= thresh, v, np.float32(0)) ** np.float32(exponent)


def cv_smooth(maps: np.ndarray, cv_scale: float = CV_SCALE,
              thresh: float = CAM_THRESH) -> np.ndarray:
    """CVS: ṽ_k = (v_k · 1[v_k ≥ t]) ** (1 − s · cv_k), cv_k over the pixels > t.

    maps: (K, H, W) in [0, 1]. Returns float32 (K, H, W) in [0, 1]; values below `thresh` become
    0. The exponent is in (0, 1], so maps are raised, peaky ones (high cv) more. `cv_scale` 0
    leaves the map unchanged except for zeroing the values below `thresh`.
    """
    maps = np.asarray(maps, np.float32)
    out = np.empty_like(maps)
    for k, e in enumerate(cvs_exponents(maps, cv_scale, thresh)):
        out[k] = smooth_with(maps[k], e, thresh)
    return out


def background_score(smoothed: np.ndarray, alpha: float) -> np.ndarray:
    """b = (1 − ṽ) ** α, same shape as `smoothed`, in [0, 1]."""
    return (1.0 - np.asarray(smoothed, np.float32)) ** np.float32(alpha)


def threshold_for_alpha(alpha: float) -> float:
    """The score v where (1 − v) ** α = v, i.e. where the background and foreground unaries
    cross before the CRF: α 11 -> 0.156, α 24 -> 0.094 (bisection, |error| < 1e-9)."""
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-10:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (1 - mid) ** alpha > mid else (lo, mid)
    return (lo + hi) / 2


def alpha_for_threshold(t: float) -> float:
    """The α whose crossing is at `t` in (0, 1): ln t / ln(1 − t) (0.25 -> 4.82)."""
    return math.log(t) / math.log(1.0 - t)


def proportional_labels(foreground: np.ndarray, maps: np.ndarray,
                        keys: np.ndarray) -> np.ndarray:
    """PPMG's final rule from per-class binary foregrounds F (K, H, W) bool and the UN-smoothed
    maps v (K, H, W) in [0, 1]: labels (H, W) uint8.

    p_k = v_k / (1 + Σ v_k · F_k) (the share of a pixel in its class's activation mass), then
    argmax over [0, F_1 p_1, ..., F_K p_K] with numpy's first-maximum rule: background where no
    class is foreground, and also where every F_k p_k is 0 (foreground for the CRF but CAM value
    0); where foregrounds overlap the larger p_k wins, i.e. at equal value the class with the
    smaller mass; exact ties go to the earlier channel.
    """
    foreground = np.asarray(foreground, bool)
    maps = np.asarray(maps, np.float32)
    keys = np.asarray(keys, np.int64).reshape(-1)
    if keys.size == 0:
        return np.zeros(maps.shape[1:], np.uint8)
    mass = (maps * foreground).sum(axis=(1, 2), dtype=np.float64)
    importance = maps / (1.0 + mass[:, None, None]).astype(np.float32)
    stacked = np.concatenate([np.zeros((1,) + maps.shape[1:], np.float32),
                              foreground * importance])
    keys_pad = np.concatenate([[0], keys + 1]).astype(np.uint8)
    return keys_pad[np.argmax(stacked, axis=0)]


def _check(img: np.ndarray, maps: np.ndarray, keys: np.ndarray) -> None:
    if maps.ndim != 3 or maps.shape[0] != keys.size or img.shape != maps.shape[1:] + (3,):
        raise ValueError(f"maps {maps.shape}, keys {keys.shape} and image {img.shape} do not "
                         f"fit (expected (K, H, W), (K,), (H, W, 3))")


def ppmg_many(img: np.ndarray, maps: np.ndarray, keys: np.ndarray,
              settings: Sequence[tuple[float, float]], cam_thresh: float = CAM_THRESH,
              bgr: bool = True) -> list[np.ndarray]:
    """PPMG labels for several (α, cv_scale) settings of one image, sharing one CRF lattice
    (the pairwise terms do not depend on the maps; the results equal separate `ppmg` calls).

    img: uint8 (H, W, 3) RGB; maps: (K, H, W) in [0, 1]; keys: (K,). Per class k and setting:
    ṽ_k = CVS(v_k), b_k = (1 − ṽ_k) ** α, two-label CRF on unaries −log[b_k, ṽ_k] (clipped at
    1e-5), F_k = Q_k(fg) > 0.5; then `proportional_labels(F, v, keys)` on the un-smoothed v.
    `bgr` False feeds the CRF the RGB image instead (only to measure that the order matters).
    Returns one (H, W) uint8 label map per setting, in order.
    """
    img = np.asarray(img, np.uint8)
    maps = np.asarray(maps, np.float32)
    keys = np.asarray(keys, np.int64).reshape(-1)
    _check(img, maps, keys)
    if keys.size == 0:
        return [np.zeros(img.shape[:2], np.uint8) for _ in settings]
    crf = PairwiseCRF(img[..., ::-1] if bgr else img, n_labels=2, **PPMG_CRF)
    fg_of: dict[tuple[int, float, float], np.ndarray] = {}  # (class, α, exponent) -> F_k
    out = []
    for alpha, cv_scale in settings:
        fg = np.empty(maps.shape, bool)
        for k, e in enumerate(cvs_exponents(maps, cv_scale, cam_thresh)):
            key = (k, float(alpha), float(e))
            if key not in fg_of:  # CVS off, or a cv of 0, repeats another setting's map
                v = smooth_with(maps[k], e, cam_thresh)
                fg_of[key] = crf.marginals(np.stack([background_score(v, alpha), v]))[1] > 0.5
            fg[k] = fg_of[key]
        out.append(proportional_labels(fg, maps, keys))
    return out


def ppmg(img: np.ndarray, maps: np.ndarray, keys: np.ndarray, alpha: float = ALPHA,
         cv_scale: float = CV_SCALE, cam_thresh: float = CAM_THRESH,
         bgr: bool = True) -> np.ndarray:
    """PMM's pseudo-mask of one image (see `ppmg_many`): (H, W) uint8, 0 bg, c + 1 class c."""
    return ppmg_many(img, maps, keys, [(alpha, cv_scale)], cam_thresh, bgr)[0]


def ppmg_ir_label(img: np.ndarray, maps: np.ndarray, keys: np.ndarray, fg_alpha: float,
                  bg_alpha: float, cv_scale: float = CV_SCALE,
                  cam_thresh: float = CAM_THRESH) -> np.ndarray:
    """PMM's plug point (ii), docs/pmm.md §7: a confident IR label from PPMG at two α's.

    A low `fg_alpha` gives little foreground (the confident one), a high `bg_alpha` much (what
    it leaves is confident background); as the reference's two thresholds, `compose_ir_label`
    keeps the low-α class where it is foreground, 0 where both say background, 255 where they
    disagree. img uint8 (H, W, 3) RGB, maps (K, H, W) in [0, 1], keys (K,); returns uint8
    (H, W) in {0, c+1, 255}. One CRF lattice serves both α's."""
    fg_conf, bg_conf = ppmg_many(img, maps, keys, [(fg_alpha, cv_scale), (bg_alpha, cv_scale)],
                                 cam_thresh)
    return compose_ir_label(fg_conf, bg_conf)
