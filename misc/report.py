"""Reports from result/metrics.jsonl: the mIoU-vs-threshold curves of CAM and AMN seeds (the
paper's central figure) and a small table of the latest numbers of each step."""
from __future__ import annotations

import json
from pathlib import Path


def latest_records(metrics_file: str | Path) -> dict[str, dict]:
    """The last record of each step in a metrics.jsonl file."""
    records = {}
    path = Path(metrics_file)
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                records[rec["step"]] = rec
    return records


def plot_threshold_curves(metrics_file: str | Path, out_png: str | Path) -> Path | None:
    """Plot mIoU against the global threshold for eval_cam and eval_amn_cam (whichever exist)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = latest_records(metrics_file)
    curves = {name: records[step]["sweep"] for step, name in
              (("eval_cam", "CAM"), ("eval_amn_cam", "AMN")) if step in records}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, sweep in curves.items():
        ts = sorted(float(t) for t in sweep)
        ax.plot(ts, [100 * sweep[f"{t:.2f}"] for t in ts], marker="o", ms=3, label=name)
    ax.set_xlabel("global threshold")
    ax.set_ylabel("seed mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def threshold_table(metrics_file: str | Path) -> str:
    """Markdown table: threshold | CAM mIoU | AMN mIoU."""
    records = latest_records(metrics_file)
    sweeps = [records.get(s, {}).get("sweep", {}) for s in ("eval_cam", "eval_amn_cam")]
    keys = sorted(set(sweeps[0]) | set(sweeps[1]), key=float)
    rows = ["| threshold | CAM mIoU | AMN mIoU |", "| --- | --- | --- |"]
    cell = lambda s, k: f"{100 * s[k]:.1f}" if k in s else "-"
    rows += [f"| {k} | {cell(sweeps[0], k)} | {cell(sweeps[1], k)} |" for k in keys]
    return "\n".join(rows)


SUMMARY_ROWS = (("train_cam", "mAP", "CAM classifier mAP (val)"),
                ("eval_cam", "miou", "CAM seed mIoU @ --cam_eval_thres"),
                ("eval_cam", "best_miou", "CAM seed mIoU @ best threshold"),
                ("cam_to_ir_label", "miou", "CAM IR label mIoU (255 ignored)"),
                ("cam_to_ir_label", "coverage", "CAM IR label coverage"),
                ("eval_amn_cam", "miou", "AMN seed mIoU @ --cam_eval_thres"),
                ("eval_amn_cam", "best_miou", "AMN seed mIoU @ best threshold"),
                ("amn_cam_to_ir_label", "miou", "AMN IR label mIoU (255 ignored)"),
                ("amn_cam_to_ir_label", "coverage", "AMN IR label coverage"),
                ("eval_sem_seg", "miou", "pseudo-mask mIoU"),
                ("eval_seg", "miou", "DeepLab mIoU"))


def write_report(metrics_file: str | Path, timings: dict[str, float], out_md: str | Path) -> str:
    """Write result/report.md (numbers of the latest evaluations, seconds per step, the
    threshold curves) and return its text."""
    records = latest_records(metrics_file)
    lines = ["| quantity | value |", "| --- | --- |"]
    for step, key, label in SUMMARY_ROWS:
        value = records.get(step, {}).get(key)
        if value is not None:
            shown = f"{value:.1f}" if key == "mAP" else f"{100 * value:.1f}"
            thr = records[step].get("best_threshold" if key == "best_miou" else "threshold")
            lines.append(f"| {label}{f' ({thr:.2f})' if thr is not None else ''} | {shown} |")
    lines += ["", "| step | seconds |", "| --- | --- |"]
    lines += [f"| {s} | {t:.1f} |" for s, t in timings.items()]
    out_md = Path(out_md)
    png = plot_threshold_curves(metrics_file, out_md.with_name("threshold_curves.png"))
    if png is not None:
        lines += ["", threshold_table(metrics_file), "", f"![mIoU vs threshold]({png.name})"]
    text = "\n".join(lines) + "\n"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    return text
