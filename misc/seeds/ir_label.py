"""Score maps -> confident IR label PNGs over a CPU process pool (cam_to_ir_label and
amn_cam_to_ir_label both configure `make_ir_labels`). The two confident label maps come from
constant background scores (the reference, docs/pipeline.md §2.5) or from PMM's PPMG at two
α's (docs/pmm.md §7); `compose_ir_label` joins them either way."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from misc.engine.workers import map_jobs
from misc.imutils import read_image
from misc.io.maps import load_maps
from misc.io.png import save_png
from misc.io.records import is_done
from misc.seeds.crf import ir_label_from_scores
from misc.seeds.ppmg import ppmg_ir_label

# (map path, image path, output path, fg level, bg level, drop_background_channel,
#  PPMG's cv_scale or None)
Job = tuple[str, str, str, float, float, bool, "float | None"]


def confident_ir_label(img: np.ndarray, scores: np.ndarray, keys: np.ndarray, fg: float,
                       bg: float, ppmg_cv_scale: float | None = None) -> np.ndarray:
    """One IR label, uint8 (H, W) in {0, c+1, 255}; scores (K, H, W) in [0, 1], keys (K,).

    `ppmg_cv_scale` None: `fg` / `bg` are the constant background scores of the reference's two
    CRF passes (`ir_label_from_scores`); a number: they are PPMG's α's (a low α for confident
    foreground, a high one for confident background) and this is CVS's s (`ppmg_ir_label`)."""
    if ppmg_cv_scale is None:
        return ir_label_from_scores(img, scores, keys, fg, bg)
    return ppmg_ir_label(img, scores, keys, fg, bg, ppmg_cv_scale)


def _make_one(job: Job) -> str:
    """Compute and atomically write one IR label; returns the output path."""
    map_path, image_path, out_path, fg, bg, drop_bg, cv_scale = job
    maps = load_maps(map_path)
    scores = maps["high_res"][1:] if drop_bg else maps["high_res"]
    save_png(out_path, confident_ir_label(read_image(image_path), scores, maps["keys"], fg, bg,
                                          cv_scale))
    return out_path


# a spawned worker costs about a second to start and a toy image's CRF a few hundredths: below
# this many images one process is faster (the tests' tiny roots), above it the pool pays
MIN_JOBS_FOR_POOL = 32


def write_label_pngs(fn: Callable[[tuple], str], ids: Sequence[str], out_dir: str | Path,
                     job_of: Callable[[str, Path], tuple], num_workers: int = 1,
                     overwrite: bool = False, desc: str = "labels") -> dict:
    """Run `fn(job_of(id, out_dir/<id>.png))` for every id whose PNG is not done (all with
    `overwrite`), in this process or over the CPU pool (`map_jobs`); `fn` is a module-level
    function writing that PNG. The runner of the IR labels and of make_bao's CRF labels.
    Returns {'written': int, 'skipped': int, 'seconds': float}."""
    start = time.perf_counter()
    ids, out_dir = list(ids), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [job_of(i, out_dir / f"{i}.png") for i in ids
            if overwrite or not is_done(out_dir / f"{i}.png")]
    for _ in map_jobs(fn, jobs, num_workers, f"{desc} -> {out_dir.name}", MIN_JOBS_FOR_POOL):
        pass
    return {"written": len(jobs), "skipped": len(ids) - len(jobs),
            "seconds": round(time.perf_counter() - start, 3)}


def make_ir_labels(ids: Sequence[str], map_dir: str | Path,
                   image_path: Callable[[str], Path], out_dir: str | Path, fg_thres: float, bg_thres: float,
                   drop_background_channel: bool, num_workers: int = 1,
                   overwrite: bool = False, ppmg_cv_scale: float | None = None) -> dict:
    """Write `out_dir/<id>.png` (uint8, 0 bg, c+1 class c, 255 unsure) for every id.

    Reads `map_dir/<id>.npz` (high_res; channel 0 dropped for AMN maps when
    `drop_background_channel`) and the image `image_path(id)`. With `ppmg_cv_scale` given,
    `fg_thres` / `bg_thres` are PPMG's two α's (`confident_ir_label`). Existing outputs are skipped unless
    `overwrite`. num_workers <= 1 (or fewer than MIN_JOBS_FOR_POOL images) runs in this process,
    otherwise a spawn-context Pool.
    Returns {'written': int, 'skipped': int, 'seconds': float}.
    """
    def job_of(i: str, out: Path) -> Job:
        return (str(Path(map_dir) / f"{i}.npz"), str(image_path(i)), str(out), float(fg_thres),
                float(bg_thres), bool(drop_background_channel),
                None if ppmg_cv_scale is None else float(ppmg_cv_scale))
    return write_label_pngs(_make_one, ids, out_dir, job_of, num_workers, overwrite, "ir labels")
