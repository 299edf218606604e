"""Score maps -> confident IR label PNGs over a CPU process pool (cam_to_ir_label and
amn_cam_to_ir_label both configure `make_ir_labels`)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from misc.artifacts import load_maps, save_png
from misc.crf import ir_label_from_scores
from misc.imutils import read_image
from misc.workers import cpu_pool

# (map path, image path, output path, fg_thres, bg_thres, drop_background_channel)
Job = tuple[str, str, str, float, float, bool]


def _make_one(job: Job) -> str:
    """Compute and atomically write one IR label; returns the output path."""
    map_path, image_path, out_path, fg_thres, bg_thres, drop_bg = job
    maps = load_maps(map_path)
    scores = maps["high_res"][1:] if drop_bg else maps["high_res"]
    ir = ir_label_from_scores(read_image(image_path), scores, maps["keys"], fg_thres, bg_thres)
    save_png(out_path, ir)
    return out_path


def make_ir_labels(ids: Sequence[str], map_dir: str | Path, image_dir: str | Path,
                   out_dir: str | Path, fg_thres: float, bg_thres: float,
                   drop_background_channel: bool, num_workers: int = 1,
                   overwrite: bool = False) -> dict:
    """Write `out_dir/<id>.png` (uint8, 0 bg, c+1 class c, 255 unsure) for every id.

    Reads `map_dir/<id>.npz` (high_res; channel 0 dropped for AMN maps when
    `drop_background_channel`) and `image_dir/<id>.jpg`. Existing outputs are skipped unless
    `overwrite`. num_workers <= 1 runs in this process, otherwise a spawn-context Pool.
    Returns {'written': int, 'skipped': int, 'seconds': float}.
    """
    start = time.perf_counter()
    ids = list(ids)
    map_dir, image_dir, out_dir = Path(map_dir), Path(image_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[Job] = []
    for i in ids:
        out = out_dir / f"{i}.png"
        if overwrite or not out.exists():
            jobs.append((str(map_dir / f"{i}.npz"), str(image_dir / f"{i}.jpg"), str(out),
                         float(fg_thres), float(bg_thres), bool(drop_background_channel)))
    skipped = len(ids) - len(jobs)
    bar = tqdm(total=len(jobs), desc=f"ir labels -> {out_dir.name}", unit="img", disable=None)
    try:
        if num_workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                _make_one(job)
                bar.update(1)
        else:
            workers = min(int(num_workers), len(jobs))
            chunk = max(1, min(16, len(jobs) // (workers * 4)))
            with cpu_pool(workers) as pool:
                for _ in pool.imap_unordered(_make_one, jobs, chunksize=chunk):
                    bar.update(1)
    finally:
        bar.close()
    return {"written": len(jobs), "skipped": skipped,
            "seconds": round(time.perf_counter() - start, 3)}


def run_ir_label_step(args, map_dir: str | Path, out_dir: str | Path, fg_thres: float,
                      bg_thres: float, drop_background_channel: bool, step: str) -> dict:
    """cam_to_ir_label / amn_cam_to_ir_label: this rank's share of the train list."""
    from misc import dist, session
    root, _ = session.dataset(args)
    ids = dist.shard(session.id_list(args.train_list))
    stats = make_ir_labels(ids, map_dir, root.root / "JPEGImages", out_dir, fg_thres, bg_thres,
                           drop_background_channel, num_workers=args.num_workers,
                           overwrite=args.overwrite)
    session.log(f"{step}: {stats['written']} labels written, {stats['skipped']} already done, "
                f"{stats['seconds']:.0f} s (fg {fg_thres}, bg {bg_thres}) -> {out_dir}")
    dist.barrier()
    if dist.is_main():
        stats.update(score_ir_labels(args, out_dir, step))
    return stats


def score_ir_labels(args, out_dir: str | Path, step: str) -> dict:
    """mIoU of the IR labels on the evaluation split (255 ignored) and their coverage."""
    from misc import session
    from misc.artifacts import append_metrics
    from misc.metrics import evaluate_label_pngs, summary
    from misc.seed_eval import eval_ids
    root, labels = session.dataset(args)
    done = set(session.id_list(args.train_list))
    ids = [i for i in eval_ids(args) if i in done]
    if not ids:
        return {}
    conf, coverage = evaluate_label_pngs(ids, out_dir, root.gt_dir(), labels.n_classes + 1, 255)
    record = {"step": step, "split": args.chainer_eval_set, "ignore_pred": 255,
              **summary(conf, ("background",) + labels.names), "coverage": coverage}
    append_metrics(args.metrics_file, record)
    session.log(f"{step}: IR labels mIoU {100 * record['miou']:.2f} (255 ignored), "
                f"coverage {100 * coverage:.1f}%")
    return {"miou": record["miou"], "coverage": coverage}
