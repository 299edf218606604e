"""Repeats of one run over several seeds (repeat.py): which seeds are finished, and the
aggregation of their metrics.jsonl files into tables (the main numbers, the paper's claims as
paired effects with their spread, every number) and one threshold-band plot.

The aggregation is a pure function of the metrics files: every number of the latest record of
each step (misc.report.run_report.latest_records), nested dicts flattened with dots
(`eval_cam.sweep.0.25`, `eval_cam.iou.background`), plus the report's derived numbers (the
random walk's gain, the CAM / AMN threshold plateaus). Per metric: n (the seeds that have it),
mean, sample standard deviation (n - 1 in the denominator; None for n = 1), min and max.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from misc.io.atomic import atomic_path
from misc.report.run_report import _plt, _save_figure, latest_records, plateau, random_walk_gain

MARKER = "repeat.json"  # in a seed's --metrics_file folder, once its run returned
METHODS = {"eval_cam": "CAM", "eval_amn_cam": "AMN"}

# the report's main numbers: (label, metric, scale to the unit shown)
HEADLINE = (("classifier val mAP (%)", "train_cam.mAP", 1),
            ("CAM seed mIoU, best threshold", "eval_cam.best_miou", 100),
            ("CAM best threshold", "eval_cam.best_threshold", 1),
            ("CAM plateau width", "eval_cam.plateau_width", 1),
            ("AMN seed mIoU, best threshold", "eval_amn_cam.best_miou", 100),
            ("AMN best threshold", "eval_amn_cam.best_threshold", 1),
            ("AMN plateau width", "eval_amn_cam.plateau_width", 1),
            ("CAM IR labels mIoU", "cam_to_ir_label.miou", 100),
            ("AMN IR labels mIoU", "amn_cam_to_ir_label.miou", 100),
            ("instance mAP@0.5", "eval_ins_seg.map", 100),
            ("pseudo-mask mIoU", "eval_sem_seg.miou", 100),
            ("random walk gain (points)", "eval_sem_seg.random_walk_gain", 100),
            ("DeepLab mIoU", "eval_seg.miou", 100),
            ("DeepLab on the ground truth mIoU", "eval_seg_gt.miou", 100))
# BAO's (docs/bao.md §7), after the main numbers: its seed, its threshold-free masks, BAO on
# our AMN; rows without numbers (a chain without BAO's passes) are left out as any other
BAO_HEADLINE = (("TransCAM seed mIoU, best threshold", "eval_transcam.best_miou", 100),
                ("BAO threshold-free mask mIoU", "eval_bao.miou", 100),
                ("BAO maps mIoU, best threshold", "eval_bao.maps.best_miou", 100),
                ("BAO-on-AMN (a) softmax argmax mIoU", "eval_amn_cam.threshold_free.softmax_argmax.miou",
                 100),
                ("BAO-on-AMN (a) min-max mIoU", "eval_amn_cam.threshold_free.bao_min_max.miou",
                 100),
                ("BAO-on-AMN (a) min-max + CRF mIoU", "eval_amn_cam.threshold_free.bao_min_max_crf.miou",
                 100),
                ("BAO-on-AMN (b) self-trained mask mIoU", "eval_bao_amn.miou", 100))

# the paper's claims as paired differences per seed: (claim, metric a, metric b, scale[,
# margin]): the effect is a - b (scaled); it holds beyond noise when its mean + margin exceeds
# 2 sample stds over seeds (a margin m > 0 claims a >= b - m: "within m points")
CLAIMS = (("AMN seed > CAM seed, each at its best threshold (points)",
           "eval_amn_cam.best_miou", "eval_cam.best_miou", 100),
          ("AMN's plateau wider than CAM's (threshold units)",
           "eval_amn_cam.plateau_width", "eval_cam.plateau_width", 1),
          ("pseudo-mask > AMN seed at its best threshold (points)",
           "eval_sem_seg.miou", "eval_amn_cam.best_miou", 100),
          ("DeepLab on the ground truth > DeepLab on pseudo-masks (points)",
           "eval_seg_gt.miou", "eval_seg.miou", 100),
          # PMM's (docs/pmm.md §10): each against the constant rule on the same inputs, PUF
          # against the `ce` arm (the same call with --seg_puf none), CP's two rounds
          ("PMM (i): PPMG > the best constant threshold, AMN seeds (points)",
           "eval_amn_cam.ppmg_best.miou", "eval_amn_cam.best_miou", 100),
          ("PMM (ii): PPMG IR labels > the thresholds' on the same AMN maps, 255 ignored (points)",
           "amn_cam_to_ir_label.miou", "amn_cam_to_ir_label.reference.miou", 100),
          ("PMM (ii): coverage of the PPMG IR labels - the thresholds' (points)",
           "amn_cam_to_ir_label.coverage", "amn_cam_to_ir_label.reference.coverage", 100),
          ("PMM (iii): PPMG final masks > the best constant score on the same walks (points)",
           "make_sem_seg.ppmg", "make_sem_seg.best_miou", 100),
          ("PMM: DeepLab with PUF > with plain CE (points)",
           "eval_seg.miou", "ce.eval_seg.miou", 100),
          ("PMM: DeepLab CP round 2 > round 1 (points)",
           "eval_seg_cp.miou", "eval_seg.miou", 100),
          # BAO's (docs/bao.md §7): threshold-free within 1 point of the best threshold, i.e.
          # not more than 1 point below it (margin 1); and BAO over its TransCAM seed
          ("BAO: threshold-free mask within 1 point of its maps at their best threshold "
           "(points; holds: > -1)", "eval_bao.miou", "eval_bao.maps.best_miou", 100, 1.0),
          ("BAO: threshold-free mask > TransCAM seed at its best threshold (points)",
           "eval_bao.miou", "eval_transcam.best_miou", 100),
          ("BAO-on-AMN (a): softmax argmax within 1 point of AMN's best threshold "
           "(points; holds: > -1)", "eval_amn_cam.threshold_free.softmax_argmax.miou",
           "eval_amn_cam.best_miou", 100, 1.0),
          ("BAO-on-AMN (a): min-max within 1 point of AMN's best threshold "
           "(points; holds: > -1)", "eval_amn_cam.threshold_free.bao_min_max.miou",
           "eval_amn_cam.best_miou", 100, 1.0),
          ("BAO-on-AMN (a): min-max + CRF within 1 point of AMN's best threshold "
           "(points; holds: > -1)", "eval_amn_cam.threshold_free.bao_min_max_crf.miou",
           "eval_amn_cam.best_miou", 100, 1.0),
          ("BAO-on-AMN (b): self-trained mask within 1 point of AMN's best threshold "
           "(points; holds: > -1)", "eval_bao_amn.miou", "eval_amn_cam.best_miou", 100, 1.0))


def is_finished(metrics_folder: str | Path, argv: list[str]) -> bool:
    """A seed is finished when its report exists and its marker records this same command
    (another command, e.g. more passes, runs the seed again; run_sample resumes within it)."""
    folder = Path(metrics_folder)
    marker = folder / MARKER
    if not (folder / "report.md").is_file() or not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("argv") == list(argv)
    except ValueError:  # cut short by a kill: run it again
        return False


def mark_finished(metrics_folder: str | Path, argv: list[str], seed: int,
                  seconds: float) -> None:
    """Record that the seed's run with `argv` returned (read by is_finished)."""
    with atomic_path(Path(metrics_folder) / MARKER) as tmp:
        tmp.write_text(json.dumps({"seed": seed, "argv": list(argv), "seconds": seconds}))


def flatten(record: dict, prefix: str) -> dict[str, float]:
    """The numbers of a record (not booleans, not None) by dotted key."""
    out = {}
    for key, value in record.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def seed_numbers(metrics_file: str | Path) -> dict[str, float]:
    """Every number of one seed's metrics file (latest record per step) and the derived ones."""
    records = latest_records(metrics_file)
    numbers = {}
    for step, record in records.items():
        numbers.update(flatten({k: v for k, v in record.items() if k != "step"}, step))
    gain = random_walk_gain(records)
    if gain is not None:
        numbers["eval_sem_seg.random_walk_gain"] = gain
    for step in METHODS:
        span = plateau(records.get(step, {}).get("sweep", {}))
        if span is not None:
            numbers.update({f"{step}.plateau_lo": span[0], f"{step}.plateau_hi": span[1],
                            f"{step}.plateau_width": span[1] - span[0]})
    return numbers


def aggregate(metrics_files: dict[int, str | Path],
              arms: dict[str, dict[int, str | Path]] | None = None) -> dict[str, dict]:
    """Metric -> {n, mean, std, min, max, values: {seed: value}} over the seeds' metrics files
    (seed -> file), metrics in order of first appearance; each arm's numbers (arm -> seed ->
    file, repeat.py --arm) follow under `<arm>.`."""
    per_seed = {seed: seed_numbers(path) for seed, path in metrics_files.items()}
    for arm, files in (arms or {}).items():
        for seed, path in files.items():
            per_seed.setdefault(seed, {}).update(
                {f"{arm}.{k}": v for k, v in seed_numbers(path).items()})
    names = list(dict.fromkeys(k for numbers in per_seed.values() for k in numbers))
    return {name: stats({seed: nums[name] for seed, nums in per_seed.items() if name in nums})
            for name in names}


def stats(values: dict[int, float]) -> dict:
    """{n, mean, std (sample, None for n = 1), min, max, values} of seed -> value."""
    v = list(values.values())
    return {"n": len(v), "mean": statistics.fmean(v),
            "std": statistics.stdev(v) if len(v) > 1 else None,
            "min": min(v), "max": max(v), "values": values}


def verdict(mean: float, std: float | None) -> str:
    """A claim's effect over seeds: "holds" (mean > 2 std), "reversed" (mean < -2 std),
    "within noise" (between), "one seed" (no spread)."""
    if std is None:
        return "one seed"
    if mean > 2 * std:
        return "holds"
    return "reversed" if mean < -2 * std else "within noise"


def claims(table: dict[str, dict]) -> list[dict]:
    """Each claim of CLAIMS over `aggregate`'s table: its per-seed effects (scaled a - b on the
    seeds having both), their stats, its `margin` (only where the claim gives one), `holds`:
    mean + margin > 2 std (None with fewer than 2 seeds) and `verdict` (`verdict` of mean +
    margin; "not run" without seeds)."""
    out = []
    for claim, a, b, scale, *margin in CLAIMS:
        va, vb = (table.get(m, {}).get("values", {}) for m in (a, b))
        effects = {seed: scale * (va[seed] - vb[seed]) for seed in va if seed in vb}
        row = {"claim": claim, "a": a, "b": b, **({"margin": margin[0]} if margin else {}),
               **(stats(effects) if effects else {"n": 0})}
        shifted = row["mean"] + row.get("margin", 0.0) if effects else None
        row["holds"] = (shifted > 2 * row["std"]) if row.get("std") is not None else None
        row["verdict"] = verdict(shifted, row["std"]) if effects else "not run"
        out.append(row)
    return out


def claims_markdown(rows: list[dict]) -> str:
    lines = ["| claim | seeds | effect mean ± std | min–max | holds beyond 2 std |",
             "| --- | ---: | --- | --- | --- |"]
    for r in rows:
        if not r["n"]:
            lines.append(f"| {r['claim']} | 0 | - | - | - |")
            continue
        text = {True: "yes", False: "no", None: "-"}[r["holds"]]
        if r["holds"] is False:
            text += f": {r['verdict']}"
        lines.append(f"| {r['claim']} | {r['n']} | {_signed(r['mean'])} ± {_fixed(r['std'])} | "
                     f"{_signed(r['min'])} to {_signed(r['max'])} | {text} |")
    return "\n".join(lines)


def headline_markdown(table: dict[str, dict]) -> str:
    """The report's main numbers over seeds (HEADLINE, then BAO_HEADLINE), in points where
    they are mIoU."""
    lines = ["| | seeds | mean ± std | min–max |", "| --- | ---: | --- | --- |"]
    for label, metric, scale in HEADLINE + BAO_HEADLINE:
        if metric in table:
            s = table[metric]
            std = "-" if s["std"] is None else f"{scale * s['std']:.2f}"
            lines.append(f"| {label} | {s['n']} | {scale * s['mean']:.2f} ± {std} | "
                         f"{scale * s['min']:.2f}–{scale * s['max']:.2f} |")
    return "\n".join(lines)


def _signed(x: float) -> str:
    """+1.23 / -1.23, and +0.00 for a rounding-level negative (no "-0.00")."""
    return f"{round(x, 2) + 0.0:+.2f}"


def _fixed(x: float | None) -> str:
    """Two decimals, as the effect it is the spread of."""
    return "-" if x is None else f"{x:.2f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def summary_markdown(table: dict[str, dict], seeds: list[int]) -> str:
    """The summary table: metric | n | mean ± std | min–max (raw values: mIoU as fractions,
    mAP in %, seconds)."""
    lines = [f"Seeds {', '.join(map(str, seeds))}: latest record of each step per seed; std is "
             "the sample std (n - 1).", "",
             "| metric | n | mean ± std | min–max |", "| --- | ---: | --- | --- |"]
    for name, s in table.items():
        lines.append(f"| {name} | {s['n']} | {_num(s['mean'])} ± {_num(s['std'])} | "
                     f"{_num(s['min'])}–{_num(s['max'])} |")
    return "\n".join(lines)


def threshold_bands(table: dict[str, dict]) -> dict[str, list[tuple[float, float, float, float]]]:
    """Method -> [(threshold, mean, min, max)] over seeds, from the `<step>.sweep.<t>` rows."""
    bands = {}
    for step, method in METHODS.items():
        prefix = f"{step}.sweep."
        rows = [(float(k[len(prefix):]), s["mean"], s["min"], s["max"])
                for k, s in table.items() if k.startswith(prefix)]
        if rows:
            bands[method] = sorted(rows)
    return bands


def plot_bands(table: dict[str, dict], out_png: str | Path) -> Path | None:
    """Mean mIoU-vs-threshold curve per method with its min–max band over seeds."""
    bands = threshold_bands(table)
    if not bands:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for method, rows in bands.items():
        t, mean, lo, hi = (list(c) for c in zip(*rows))
        line, = ax.plot(t, [100 * m for m in mean], marker="o", ms=3, label=f"{method} mean")
        ax.fill_between(t, [100 * x for x in lo], [100 * x for x in hi], alpha=0.25,
                        color=line.get_color(), label=f"{method} min–max")
    ax.set_xlabel("global threshold")
    ax.set_ylabel("seed mIoU (%)")
    ax.set_title("over seeds: mean, band = min–max", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save_figure(fig, out_png)


def write_summary(metrics_files: dict[int, str | Path], out_dir: str | Path,
                  arms: dict[str, dict[int, str | Path]] | None = None) -> str:
    """summary.md, summary.json and threshold_band.png in `out_dir` (the arms' numbers under
    `<arm>.`); returns the markdown."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = aggregate(metrics_files, arms)
    seeds = list(metrics_files)
    claim_rows = claims(table)
    text = "\n\n".join([headline_markdown(table), "Claims (effect per seed = a - b):",
                         claims_markdown(claim_rows), "Every number:",
                         summary_markdown(table, seeds)])
    png = plot_bands(table, out_dir / "threshold_band.png")
    md = text + (f"\n\n![mIoU vs threshold over seeds]({png.name})\n" if png else "\n")
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(md)
    info = {"seeds": seeds, "metrics_files": {s: str(p) for s, p in metrics_files.items()},
            "arms": {a: {s: str(p) for s, p in f.items()} for a, f in (arms or {}).items()},
            "std": "sample (n - 1)", "band": "min-max", "claims": claim_rows,
            "metrics": table}
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return text
