"""Dense CRFs (on hard label maps for IR labels, on probabilities for DeepLab, reusable
pairwise terms for PPMG's per-class CRFs) and the score-map -> confident IR label rule
(docs/pipeline.md §2.4, §2.5; docs/deeplab.md §4.2; docs/pmm.md §3)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax


def crf_inference_label(img: np.ndarray, labels: np.ndarray, n_labels: int, t: int = 10,
                        gt_prob: float = 0.7) -> np.ndarray:
    """Refine a hard label map with pydensecrf; returns (H, W) int64 labels in [0, n_labels).

    img: uint8 (H, W, 3) RGB; labels: (H, W) ints in [0, n_labels), label 0 an ordinary class.
    Unary from labels (gt_prob, zero_unsure=False); Gaussian (sxy 3, compat 3) and bilateral
    (sxy 50, srgb 5, compat 10) Potts pairwise terms; `t` mean-field iterations.
    """
    h, w = labels.shape
    if img.shape[:2] != (h, w) or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image {img.shape} does not fit labels {labels.shape} (need (H, W, 3))")
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    rgb = np.array(img, dtype=np.uint8, order="C", copy=True)  # pydensecrf needs writable
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=rgb, compat=10)
    q = np.asarray(d.inference(t), np.float32)
    return np.argmax(q.reshape(n_labels, h, w), axis=0)


# deeplab-pytorch CRF config: ITER_MAX, POS_W, POS_XY_STD, BI_W, BI_XY_STD, BI_RGB_STD
CRF_DEFAULTS = (10, 3, 1, 4, 67, 3)


def crf_inference_prob(img: np.ndarray, prob: np.ndarray,
                       params: Sequence[float] = CRF_DEFAULTS) -> np.ndarray:
    """Dense CRF on softmax probabilities; returns (H, W) int64 labels.

    img: uint8 (H, W, 3) RGB; prob: (C, H, W) probabilities (unary = -log p, clipped at 1e-5);
    params: (iterations, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std).
    """
    n_iter, pos_w, pos_xy, bi_w, bi_xy, bi_rgb = params
    c, h, w = prob.shape
    if img.shape != (h, w, 3):
        raise ValueError(f"image {img.shape} does not fit probabilities {prob.shape}")
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob)))
    d.addPairwiseGaussian(sxy=pos_xy, compat=pos_w)
    d.addPairwiseBilateral(sxy=bi_xy, srgb=bi_rgb, rgbim=np.array(img, np.uint8, order="C"),
                           compat=bi_w)
    q = np.asarray(d.inference(int(n_iter)), np.float32).reshape(c, h, w)
    return np.argmax(q, axis=0)


def compose_ir_label(fg_conf: np.ndarray, bg_conf: np.ndarray) -> np.ndarray:
    """Combine the high- and low-threshold CRF labels into an IR label, uint8 (H, W).

    Keep fg_conf's class where it is foreground; 0 where both say background; 255 otherwise.
    """
    ir = np.asarray(fg_conf).astype(np.uint8)
    fg_bg = ir == 0
    ir[fg_bg] = 255
    ir[fg_bg & (np.asarray(bg_conf) == 0)] = 0
    return ir


def _crf_at_threshold(img: np.ndarray, scores: np.ndarray, keys_pad: np.ndarray,
                      thres: float) -> np.ndarray:
    """keys_pad[CRF(argmax([thres; S]))]: (H, W) labels, 0 = bg, c+1 = class c."""
    padded = np.concatenate([np.full((1,) + scores.shape[1:], thres, np.float32), scores])
    crf = crf_inference_label(img, np.argmax(padded, axis=0), keys_pad.size)
    return keys_pad[crf]


def ir_label_from_scores(img: np.ndarray, scores: np.ndarray, keys: np.ndarray,
                         fg_thres: float, bg_thres: float) -> np.ndarray:
    """Confident IR label (docs/pipeline.md §2.5), uint8 (H, W) in {0, c+1, 255}.

    img: uint8 (H, W, 3); scores: (K, H, W) foreground scores in [0, 1] (float32 comparison,
    ties go to background); keys: (K,) 0-based classes. K == 0 gives all background.
    """
    keys = np.asarray(keys, np.int64).reshape(-1)
    scores = np.asarray(scores, np.float32)
    if scores.ndim != 3 or scores.shape[0] != keys.size or scores.shape[1:] != img.shape[:2]:
        raise ValueError(f"scores {scores.shape}, keys {keys.shape} and image {img.shape} "
                         f"do not fit (expected (K, H, W), (K,), (H, W, 3))")
    if keys.size == 0:
        return np.zeros(img.shape[:2], np.uint8)
    keys_pad = np.concatenate([[0], keys + 1])
    fg_conf = _crf_at_threshold(img, scores, keys_pad, fg_thres)
    bg_conf = _crf_at_threshold(img, scores, keys_pad, bg_thres)
    return compose_ir_label(fg_conf, bg_conf)


class PairwiseCRF:
    """A dense CRF whose pairwise terms are built once for an image and reused for many unaries
    (PPMG runs one two-label CRF per class and setting; the result of each `marginals` call
    equals a fresh CRF's, as pydensecrf's inference starts from the unary every time).

    img: uint8 (H, W, 3), passed to the bilateral kernel in the channel order given (PPMG gives
    BGR). Gaussian (gauss_sxy, gauss_compat) and bilateral (bi_sxy, bi_srgb, bi_compat) Potts
    terms, pydensecrf's default kernel and normalisation; `n_iter` mean-field iterations.
    """

    def __init__(self, img: np.ndarray, n_labels: int, n_iter: int, gauss_sxy: float,
                 gauss_compat: float, bi_sxy: float, bi_srgb: float, bi_compat: float):
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image {img.shape} is not (H, W, 3)")
        self.h, self.w = img.shape[:2]
        self.n_labels, self.n_iter = int(n_labels), int(n_iter)
        self.d = dcrf.DenseCRF2D(self.w, self.h, self.n_labels)
        self.d.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
        self.d.addPairwiseBilateral(sxy=bi_sxy, srgb=bi_srgb,
                                    rgbim=np.array(img, np.uint8, order="C", copy=True),
                                    compat=bi_compat)

    def marginals(self, prob: np.ndarray) -> np.ndarray:
        """(n_labels, H, W) float32 marginals Q for unaries −log(max(prob, 1e-5)); prob:
        (n_labels, H, W) scores in [0, 1], not necessarily summing to 1."""
        if prob.shape != (self.n_labels, self.h, self.w):
            raise ValueError(f"scores {prob.shape} do not fit the CRF "
                             f"({self.n_labels}, {self.h}, {self.w})")
        self.d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob)))
        q = np.asarray(self.d.inference(self.n_iter), np.float32)
        return q.reshape(self.n_labels, self.h, self.w)
