"""Reports from result/metrics.jsonl: the mIoU-vs-threshold curves of CAM and AMN seeds (the
paper's central figure), a small table of the latest numbers of each step, and a picture grid of
a few images with their maps and masks."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from misc.eval.seed_eval import parse_setting
from misc.imutils import read_image, voc_palette
from misc.io.atomic import atomic_path
from misc.io.maps import load_maps
from misc.io.png import load_png
from misc.irn.ins_seg import load_instances


def latest_records(metrics_file: str | Path) -> dict[str, dict]:
    """The last record of each step in a metrics.jsonl file (unreadable lines are skipped)."""
    records = {}
    path = Path(metrics_file)
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                records[rec["step"]] = rec
            except (ValueError, KeyError, TypeError):  # blank, or cut short by a kill / full disk
                continue
    return records


# the seed evaluations with a threshold sweep, and their names in the report
SWEPT_SEEDS = (("eval_cam", "CAM"), ("eval_amn_cam", "AMN"), ("eval_transcam", "TransCAM"))


def plot_threshold_curves(metrics_file: str | Path, out_png: str | Path) -> Path | None:
    """Plot mIoU against the global threshold for eval_cam, eval_amn_cam and eval_transcam
    (whichever exist)."""
    records = latest_records(metrics_file)
    curves = {name: records[step]["sweep"] for step, name in SWEPT_SEEDS if step in records}
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, sweep in curves.items():
        ts = sorted(float(t) for t in sweep)
        ax.plot(ts, [100 * sweep[f"{t:.2f}"] for t in ts], marker="o", ms=3, label=name)
    ax.set_xlabel("global threshold")
    ax.set_ylabel("seed mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save_figure(fig, out_png)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save_figure(fig, out_png: str | Path) -> Path:
    """Write a matplotlib figure atomically and free it."""
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    _plt().close(fig)
    return Path(out_png)


def foreground_heatmap(maps_file: Path) -> np.ndarray | None:
    """(H, W) max over the foreground channels of a CAM / AMN map file (values in [0, 1]);
    None when the file is missing. AMN files carry a background channel first: the foreground
    channels are always the last len(keys)."""
    if not maps_file.is_file():
        return None
    maps = load_maps(maps_file)
    fg = maps["high_res"][len(maps["high_res"]) - len(maps["keys"]):]
    return fg.max(0) if len(fg) else np.zeros(maps["high_res"].shape[1:], np.float32)


def colour_labels(label: np.ndarray) -> np.ndarray:
    """(H, W) uint8 class indices -> (H, W, 3) uint8 VOC colours (255 = void in cream)."""
    palette = np.asarray(voc_palette(), np.uint8).reshape(256, 3)
    return palette[label]


def colour_instances(labels: np.ndarray) -> np.ndarray:
    """(H, W) segment labels (0 none, i + 1 segment i) -> (H, W, 3) uint8: black where there is
    no segment, segment i in VOC colour 1 + i (cycling over 1..254, so neighbours differ)."""
    palette = np.asarray(voc_palette(), np.uint8).reshape(256, 3)
    labels = np.asarray(labels).astype(np.int64)
    return palette[np.where(labels > 0, (labels - 1) % 254 + 1, 0)]


def plot_examples(image_paths: dict[str, Path], heatmap_dirs: dict[str, Path],
                  label_dirs: dict[str, Path], out_png: str | Path,
                  instance_dirs: dict[str, Path] | None = None,
                  boundaries: dict[str, np.ndarray] | None = None) -> Path | None:
    """One row per image id: the image, then a heatmap column per entry of `heatmap_dirs`
    (<dir>/<id>.npz map files, drawn over the image), then IRN's boundary map when `boundaries`
    holds one per id ((H, W) in [0, 1], white = boundary), then a colour-coded column per entry of
    `label_dirs` (<dir>/<id>.png label maps), then a column per entry of `instance_dirs`
    (<dir>/<id>.npz instance files of misc.irn.ins_seg, one colour per segment). Columns whose
    files are missing are left out; returns None when there is nothing but the images."""
    ids = list(image_paths)
    if not ids:
        return None
    heat_cols = {n: d for n, d in heatmap_dirs.items() if (Path(d) / f"{ids[0]}.npz").is_file()}
    label_cols = {n: d for n, d in label_dirs.items() if (Path(d) / f"{ids[0]}.png").is_file()}
    ins_cols = {n: d for n, d in (instance_dirs or {}).items()
                if (Path(d) / f"{ids[0]}.npz").is_file()}
    boundary_col = ["IRN boundary"] if boundaries and all(i in boundaries for i in ids) else []
    if not heat_cols and not label_cols and not ins_cols and not boundary_col:
        return None
    plt = _plt()
    n_cols = 1 + len(heat_cols) + len(boundary_col) + len(label_cols) + len(ins_cols)
    fig, axes = plt.subplots(len(ids), n_cols, figsize=(1.6 * n_cols, 1.6 * len(ids)), dpi=120,
                             squeeze=False)
    titles = ["image", *heat_cols, *boundary_col, *label_cols, *ins_cols]
    for row, img_id in enumerate(ids):
        image = read_image(image_paths[img_id])
        panels = [image]  # None where this image's file is missing: its cell stays blank
        for d in heat_cols.values():
            heat = foreground_heatmap(Path(d) / f"{img_id}.npz")
            rgb = None if heat is None else plt.get_cmap("jet")(heat)[..., :3] * 255
            fits = rgb is not None and rgb.shape == image.shape  # a map of another image: blank
            panels.append((0.5 * image + 0.5 * rgb).astype(np.uint8) if fits else None)
        if boundary_col:
            grey = (255 * np.clip(boundaries[img_id], 0, 1)).astype(np.uint8)
            panels.append(np.repeat(grey[..., None], 3, axis=2) if grey.shape == image.shape[:2] else None)
        for d in label_cols.values():
            png = Path(d) / f"{img_id}.png"
            panels.append(colour_labels(load_png(png)) if png.is_file() else None)
        for d in ins_cols.values():
            npz = Path(d) / f"{img_id}.npz"
            panels.append(colour_instances(load_instances(npz).labels) if npz.is_file() else None)
        for ax, panel, title in zip(axes[row], panels, titles):
            ax.axis("off")
            if panel is not None:
                ax.imshow(panel)
            if row == 0:
                ax.set_title(title, fontsize=8)
    return _save_figure(fig, out_png)


def threshold_table(metrics_file: str | Path) -> str:
    """Markdown table: threshold | CAM mIoU | AMN mIoU."""
    records = latest_records(metrics_file)
    sweeps = [records.get(s, {}).get("sweep", {}) for s in ("eval_cam", "eval_amn_cam")]
    keys = sorted(set(sweeps[0]) | set(sweeps[1]), key=float)
    rows = ["| threshold | CAM mIoU | AMN mIoU |", "| --- | --- | --- |"]
    cell = lambda s, k: f"{100 * s[k]:.1f}" if k in s else "-"
    rows += [f"| {k} | {cell(sweeps[0], k)} | {cell(sweeps[1], k)} |" for k in keys]
    return "\n".join(rows)


def plateau(sweep: dict[str, float], within: float = 0.03) -> tuple[float, float] | None:
    """The threshold range whose mIoU is within `within` (0.03 = 3 points) of the sweep's best:
    the contiguous run of swept thresholds, in threshold order, around the best one (the lowest
    best on a tie). A threshold that qualifies but sits beyond a dip below the band is left out:
    a detached bump is not a range one can set the threshold in safely. None for an empty sweep.
    """
    if not sweep:
        return None
    points = sorted((float(t), v) for t, v in sweep.items())
    values = [v for _, v in points]
    best = values.index(max(values))
    lo = hi = best
    floor = values[best] - within - 1e-9  # inclusive, robust to float rounding
    while lo > 0 and values[lo - 1] >= floor:
        lo -= 1
    while hi < len(values) - 1 and values[hi + 1] >= floor:
        hi += 1
    return points[lo][0], points[hi][0]


def random_walk_gain(records: dict[str, dict]) -> float | None:
    """Pseudo-mask mIoU (eval_sem_seg) minus the AMN seed's best mIoU (eval_amn_cam
    best_miou): what IRN's random walk adds to the seeds it starts from. None unless both ran."""
    if "eval_sem_seg" not in records or "eval_amn_cam" not in records:
        return None
    return records["eval_sem_seg"]["miou"] - records["eval_amn_cam"]["best_miou"]


def gains_lines(records: dict[str, dict], within: float = 0.03) -> list[str]:
    """Markdown bullets: the random walk's gain, DeepLab against its ground-truth upper bound
    and the CAM / AMN threshold plateaus (those whose records exist; [] when none)."""
    lines = []
    gain = random_walk_gain(records)
    if gain is not None:
        sem, amn = records["eval_sem_seg"], records["eval_amn_cam"]
        lines.append(f"- random walk gain: {100 * gain:+.1f} points (pseudo-mask mIoU "
                     f"{100 * sem['miou']:.1f} on {sem.get('split', '?')} minus AMN seed best "
                     f"{100 * amn['best_miou']:.1f} on {amn.get('split', '?')})")
    if "eval_seg" in records and "eval_seg_gt" in records:
        ours, bound = records["eval_seg"]["miou"], records["eval_seg_gt"]["miou"]
        lines.append(f"- DeepLab on pseudo-masks vs on the ground truth of the same images: "
                     f"{100 * ours:.1f} vs {100 * bound:.1f} ({100 * (ours - bound):+.1f} points, "
                     f"{100 * ours / max(bound, 1e-9):.0f}% of the upper bound)")
    for step, name in SWEPT_SEEDS:
        span = plateau(records.get(step, {}).get("sweep", {}), within)
        if span is not None:
            lines.append(f"- {name} plateau (mIoU within {100 * within:.0f} points of its best, "
                         f"contiguous around it): {span[0]:.2f}-{span[1]:.2f}, "
                         f"width {span[1] - span[0]:.2f}")
    return lines


def _seed(name: str, r: dict) -> str:
    text = (f"{name} seed mIoU {100 * r['miou']:.1f} @ {r['threshold']:.2f}, "
            f"best {100 * r['best_miou']:.1f} @ {r['best_threshold']:.2f}")
    if "ppmg_best" in r:
        b = r["ppmg_best"]
        text += f"; PPMG best {100 * b['miou']:.1f} @ alpha {b['alpha']:g}, cv_scale {b['cv_scale']:g}"
    rows = r.get("threshold_free", {})
    if rows:  # eval_amn_cam --amn_bao_eval: BAO-on-AMN (a), docs/bao.md §5.1
        text += "; threshold-free " + ", ".join(
            f"{row.replace('_', ' ')} {100 * v['miou']:.1f}" for row, v in rows.items())
    return text


def _bao(name: str, r: dict) -> str:
    """eval_bao / eval_bao_amn: the threshold-free labels, then their maps' sweep."""
    return (f"{name} threshold-free mIoU {100 * r['miou']:.1f} (FP {100 * r['mean_fp']:.1f}, "
            f"FN {100 * r['mean_fn']:.1f}; {100 * r['no_crf']['miou']:.1f} before the CRF); "
            + _seed(f"{name} maps", r["maps"]))


def ppmg_table(records: dict[str, dict]) -> str | None:
    """Markdown table of the PPMG rows (docs/pmm.md §4): alpha | cv_scale | CAM | AMN mIoU;
    None when neither seed evaluation has them."""
    rows = {name: {parse_setting(k): v for k, v in records[step]["ppmg"].items()}
            for step, name in (("eval_cam", "CAM"), ("eval_amn_cam", "AMN"))
            if "ppmg" in records.get(step, {})}
    if not rows:
        return None
    keys = sorted({k for r in rows.values() for k in r}, key=lambda k: (k[0], -k[1]))
    lines = ["| PPMG alpha | cv_scale | " + " | ".join(f"{n} mIoU" for n in rows) + " |",
             "| ---: | ---: |" + " ---: |" * len(rows)]
    for k in keys:
        cells = [f"{100 * r[k]:.1f}" if k in r else "-" for r in rows.values()]
        lines.append(f"| {k[0]:g} | {k[1]:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ir(name: str, r: dict) -> str:
    return f"{name} IR labels mIoU {100 * r['miou']:.1f} (255 ignored), coverage {100 * r['coverage']:.1f}%"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _loss(r: dict) -> str:
    return f"final train loss {r['final_train_loss']:.3f}"


def _deeplab(name: str, r: dict) -> str:
    return (f"{name} mIoU {100 * r['miou']:.1f} ({r['split']}" + (", CRF" if r.get("crf") else "")
            + (f"; {100 * r['miou_no_crf']:.1f} without" if "miou_no_crf" in r else "") + ")")


# step -> its result, in words, from its latest metrics record
RESULTS = {
    "train_cam": lambda r: f"classifier val mAP {r['mAP']:.1f}" if "mAP" in r else _loss(r),
    "eval_cam": lambda r: _seed("CAM", r),
    "cam_to_ir_label": lambda r: _ir("CAM", r),
    "train_amn": _loss,
    "eval_amn_cam": lambda r: _seed("AMN", r),
    "amn_cam_to_ir_label": lambda r: _ir("AMN", r),
    "train_irn": _loss,
    "eval_ins_seg": lambda r: (f"instance mAP@0.5 {_pct(r['map'])} (@0.25 {_pct(r['map@0.25'])}, "
                               f"@0.75 {_pct(r['map@0.75'])}; {r['split']})"),
    "eval_sem_seg": lambda r: f"pseudo-mask mIoU {100 * r['miou']:.1f} ({r['split']})",
    "make_sem_seg": lambda r: (f"PPMG masks {_pct(r['ppmg'])} vs the constant score's best "
                               f"{_pct(r['best_miou'])} at {r['best_threshold']:.2f}, same walks "
                               f"({r['images']} {r['split']} images)" if "ppmg" in r else ""),
    "make_cocoann": lambda r: (f"{r['annotations']} segments of {r['images']} images -> "
                               f"{Path(r['file']).name}"),
    "train_seg": _loss,
    "eval_seg": lambda r: _deeplab("DeepLab", r),
    "train_seg_gt": _loss,
    "eval_seg_gt": lambda r: _deeplab("DeepLab on the ground truth (upper bound)", r),
    "train_seg_cp": _loss,
    "eval_seg_cp": lambda r: _deeplab("DeepLab round 2, on round 1's masks (CP)", r),
    "train_transcam": lambda r: f"TransCAM val mAP {r['mAP']:.1f}" if "mAP" in r else _loss(r),
    "eval_transcam": lambda r: _seed("TransCAM", r),
    "train_bao": _loss,
    "eval_bao": lambda r: _bao("BAO", r),
    "train_bao_amn": _loss,
    "eval_bao_amn": lambda r: _bao("BAO-on-AMN", r),
}


def results_table(records: dict[str, dict], timings: dict[str, float],
                  steps: list[str]) -> str:
    """One markdown table: every step in `steps` that ran now or has a record, its seconds in
    this run ('earlier' when its numbers come from a previous run) and its result."""
    lines = ["| step | seconds | result |", "| --- | ---: | --- |"]
    for step in steps:
        if step not in timings and step not in records:
            continue
        seconds = f"{timings[step]:.1f}" if step in timings else "earlier"
        result = RESULTS[step](records[step]) if step in RESULTS and step in records else ""
        lines.append(f"| {step} | {seconds} | {result} |")
    lines.append(f"| total | {sum(timings.values()):.1f} | |")
    return "\n".join(lines)


def best_effort(draw: Callable[[], Path | None], what: str, notes: list[str]) -> Path | None:
    """`draw()`, or None with a note saying what could not be drawn and why: a picture that
    fails (a corrupt map, a full disk) must not fail the steps that finished."""
    try:
        return draw()
    except Exception as err:  # any failure of a picture is reported, not raised
        notes.append(f"{what} could not be drawn: {type(err).__name__}: {err}")
        return None


def write_report(metrics_file: str | Path, timings: dict[str, float], out_md: str | Path,
                 steps: list[str], examples_png: Path | None = None,
                 notes: list[str] | None = None) -> str:
    """Write result/report.md (the results table, the random walk's gain and the threshold
    plateaus, the threshold curves and their plot, the PPMG rows, the example grid when given,
    then `notes`: what the reader should know about the inputs, e.g. a checkpoint used as given,
    to which a picture that could not be drawn is appended) and return the results table."""
    records = latest_records(metrics_file)
    table = results_table(records, timings, steps)
    lines = [table]
    gains = gains_lines(records)
    if gains:
        lines += [""] + gains
    out_md, notes = Path(out_md), [] if notes is None else notes
    png = best_effort(lambda: plot_threshold_curves(metrics_file,
                                                    out_md.with_name("threshold_curves.png")),
                      "the threshold curves", notes)
    if png is not None:
        lines += ["", threshold_table(metrics_file), "", f"![mIoU vs threshold]({png.name})"]
    ppmg = ppmg_table(records)
    if ppmg is not None:
        lines += ["", ppmg]
    if examples_png is not None:
        lines += ["", f"![image, CAM, AMN map, IRN boundary, pseudo-mask, ground truth, instances]"
                      f"({examples_png.name})"]
    if notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in notes]
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return table
