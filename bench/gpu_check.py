"""One prepared GPU check: every GPU claim measured in a single run (docs/gpu_check.md).

Run from the repository root, on a machine with the repository only (no dataset, no download):
    python -m bench.gpu_check --out DIR            # the GPU check, <= 8 min on one H100
    python -m bench.gpu_check --out DIR --smoke    # tiny sizes on a CPU (tests/test_gpu_check.py)
    python -m bench.gpu_check --out DIR --stages make_cam,random_walk

Writes DIR/gpu_check.json (every figure) and DIR/gpu_check.md (the tables, the projected VOC /
COCO hours and the defaults the decision rule of docs/gpu_check.md draws from the figures).

The parent writes a synthetic VOC-size dataset once (bench_voc_scale.prepare: 375x500 images,
one in four portrait, with CAM / AMN maps and IR labels derived from the ground truth, random
weights throughout) and runs each stage of bench/gpu_stages.py in a process of its own, killed
at the stage's budget: a stage that fails or overruns is recorded with its error (and the rows
it finished) and the others still run. `--in_process` runs the stages in this process instead
(the smoke default: a process per stage costs seconds of imports on a small CPU).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import bench_voc_scale as voc
from bench import gpu_stages as stages

# the thresholds of the decision rule (docs/gpu_check.md, "Decision rule")
AMP_MIN_SPEEDUP = 1.5          # bf16 over float32, on every training step
LAYOUT_MIN_SPEEDUP = 1.05      # channels_last over the default layout, geometric mean
LAYOUT_MAX_SLOWDOWN = 0.95     # and no step slower than this
BATCH_WITHIN = 0.95            # the smallest infer batch within 5% of the fastest
BATCH_MAX_GIB = 16.0           # whose peak memory, at COCO's image area, fits a 24 GiB card


# -------------------------------------- running ---------------------------------------------

def run_in_process(name: str, env: stages.StageEnv) -> dict:
    try:
        return {"status": "ok", "result": stages.STAGES[name](env)}
    except Exception as err:  # a failing stage is recorded; the others still run
        return {"status": "failed", "error": f"{type(err).__name__}: {str(err)[:1500]}"}


def run_in_child(name: str, env: stages.StageEnv, budget: float) -> dict:
    """The stage in a fresh interpreter, killed at its deadline (the monotonic clock is the
    machine's, so the child's imports count against the budget); what it saved so far."""
    result = env.work / "results" / f"{name}.json"
    result.parent.mkdir(exist_ok=True)
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.gpu_check", "--_stage", name, "--_work", str(env.work),
           "--_result", str(result), "--_deadline", repr(env.deadline), "--device", str(env.device),
           "--num_workers", str(env.num_workers)] + (["--smoke"] if env.smoke else [])
    try:
        proc = subprocess.run(cmd, cwd=stages.REPO, capture_output=True, text=True,
                              timeout=max(1.0, env.deadline - time.monotonic()) + 3)
        status = "ok" if proc.returncode == 0 else "failed"
        error = None if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr[-1500:]}"
    except subprocess.TimeoutExpired:
        status, error = "timed out", f"killed at its budget of {budget:.0f} s"
    out = {"status": status, "error": error}
    if result.is_file():
        out["result"] = json.loads(result.read_text())
    return out


def run_stages(names: list[str], env_for, in_process: bool) -> dict:
    """Every stage in order, each with its wall time; `env_for(name)`: the stage's env."""
    results = {}
    for name in names:
        env, start = env_for(name), time.perf_counter()
        budget = env.deadline - time.monotonic()
        print(f"[gpu_check] {name} (budget {budget:.0f} s)", file=sys.stderr, flush=True)
        got = run_in_process(name, env) if in_process else run_in_child(name, env, budget)
        if got["status"] == "ok" and (got.get("result") or {}).get("skipped"):
            got["status"] = "skipped"
        got["seconds"] = time.perf_counter() - start
        got["budget_s"] = budget
        results[name] = got
        print(f"[gpu_check] {name}: {got['status']} in {got['seconds']:.0f} s"
              + (f" ({got['error'][:200]})" if got.get("error") else ""), file=sys.stderr,
              flush=True)
    return results


# ---------------------------------- figures and rule ----------------------------------------

def _rows(results: dict, stage: str) -> list[dict]:
    return ((results.get(stage) or {}).get("result") or {}).get("rows") or []


def _rate(rows: list[dict], **match) -> float | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()) and r.get("images_per_s"):
            return r["images_per_s"]
    return None


def _infer_rate(row: dict) -> float | None:
    s = row.get("seconds_per_unit")
    return 1 / s if s else None


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def projection(results: dict, precision: str, layout: bool) -> dict:
    """The VOC and COCO hours per step at one precision and layout (training and map steps as
    measured, the other steps of the chain in float32), through bench_voc_scale's extrapolation
    (projected_hours, make_row, totals)."""
    seconds = {}
    for step in stages.TRAIN_STEPS:
        row = next((r for r in _rows(results, step) if r.get("precision") == precision
                    and r.get("channels_last") == layout and "seconds_per_unit" in r), None)
        seconds[step] = row and row["seconds_per_unit"]
    for step in ("make_cam", "make_amn_cam"):
        default = voc.S["infer_batch_size"]
        row = next((r for r in _rows(results, step) if r.get("batch") == default
                    and r.get("precision") == precision and r.get("channels_last") == layout
                    and "seconds_per_unit" in r), None)
        seconds[step] = row and row["seconds_per_unit"]
    chain = ((results.get("chain_rest") or {}).get("result") or {}).get("rows") or {}
    for step, row in chain.items():
        seconds[step] = row.get("seconds_per_unit")
    crf = next((r for r in _rows(results, "eval_seg") if r.get("crf") and
                "seconds_per_unit" in r), None)
    seconds["eval_seg"] = crf and crf["seconds_per_unit"]
    rows = [voc.make_row(voc.SPECS[s], {"seconds_per_unit": t}, None)
            for s, t in seconds.items() if t]
    return {"precision": precision, "channels_last": layout,
            "hours": {r["step"]: [r["voc_h"], r["coco_h"]] for r in rows},
            "totals": voc.totals(rows) if rows else {},
            "missing": sorted(s for s in voc.SPECS if s not in {r["step"] for r in rows})}


def decide(results: dict) -> dict:
    """The voc12 / coco14 defaults the figures give under docs/gpu_check.md's rule; each with
    the figures it rests on, or why it cannot be decided."""
    device = ((results.get("device") or {}).get("result")) or {}
    dtype = "bfloat16" if device.get("native_bf16") else "float16"
    out = {}
    speedups = {s: _ratio(_rate(_rows(results, s), precision=dtype, channels_last=False),
                          _rate(_rows(results, s), precision="float32", channels_last=False))
                for s in stages.TRAIN_STEPS}
    maps = [r.get("check", "") for s in ("make_cam", "make_amn_cam")
            for r in _rows(results, s) if r.get("precision") == dtype]
    maps_ok = bool(maps) and all(_maps_agree(m) for m in maps)
    if None in speedups.values():
        out["amp"] = {"value": None, "why": f"not every training step measured in {dtype}"}
    else:
        ok = dtype == "bfloat16" and min(speedups.values()) >= AMP_MIN_SPEEDUP and maps_ok
        out["amp"] = {"value": "auto" if ok else False, "autocast_dtype": dtype,
                      "speedups": speedups, "maps_within_tolerance": maps_ok}
    amp_name = dtype if out["amp"]["value"] == "auto" else "float32"
    layout = {s: _ratio(_rate(_rows(results, s), precision=amp_name, channels_last=True),
                        _rate(_rows(results, s), precision=amp_name, channels_last=False))
              for s in stages.TRAIN_STEPS if s != "train_seg"}  # DeepLab: --seg_channels_last
    for s in ("make_cam", "make_amn_cam"):
        rows = [r for r in _rows(results, s) if r.get("batch") == voc.S["infer_batch_size"]
                and r.get("precision") == amp_name]
        on = next((_infer_rate(r) for r in rows if r["channels_last"]), None)
        off = next((_infer_rate(r) for r in rows if not r["channels_last"]), None)
        layout[s] = _ratio(on, off)
    if None in layout.values():
        out["channels_last"] = {"value": None, "why": "a step lacks one of the two layouts",
                                "speedups": layout}
    else:
        ok = _geomean(list(layout.values())) >= LAYOUT_MIN_SPEEDUP and \
            min(layout.values()) >= LAYOUT_MAX_SLOWDOWN
        out["channels_last"] = {"value": ok, "speedups": layout}
    out["infer_batch_size"] = _decide_batch(results)
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _maps_agree(check: str) -> bool:
    """Whether a bench_voc_scale.compare_maps message says every image agreed ('N/N ...')."""
    found = re.match(r"(\d+)/(\d+) ", check)
    return bool(found) and found.group(1) == found.group(2)


def _decide_batch(results: dict) -> dict:
    rows = [r for r in _rows(results, "make_cam") if r.get("precision") == "float32"
            and not r.get("channels_last") and _infer_rate(r)]
    if not rows:
        return {"value": None, "why": "make_cam not measured"}
    best = max(_infer_rate(r) for r in rows)
    fits = [r for r in rows if _infer_rate(r) >= BATCH_WITHIN * best and
            (r.get("peak_gpu_mib") or 0) * voc.COCO_AREA / 1024 <= BATCH_MAX_GIB]
    if not fits:
        return {"value": None, "why": "no batch within 5% of the best fits the memory bound"}
    pick = min(fits, key=lambda r: r["batch"])
    return {"value": pick["batch"], "images_per_s": {r["batch"]: _infer_rate(r) for r in rows},
            "peak_gpu_mib": {r["batch"]: r.get("peak_gpu_mib") for r in rows}}


# -------------------------------------- the report ------------------------------------------

def _f(v, spec: str = ".3g") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _note(row: dict) -> str:
    return row.get("error") or row.get("skipped") or ""


def _result(results: dict, stage: str) -> dict:
    return (results.get(stage) or {}).get("result") or {}


def _header(report: dict) -> list[str]:
    results, dev = report["stages"], _result(report["stages"], "device")
    kind = "CPU smoke run: figures are not a basis for defaults" if report["smoke"] else "GPU run"
    lines = [f"# GPU check ({kind})", "",
             f"{report['date']}; device {dev.get('gpu', dev.get('device'))}, "
             f"{dev.get('gpus', 0)} GPU(s), torch {dev.get('torch')}, CUDA {dev.get('cuda')}, "
             f"native bf16 {dev.get('native_bf16')}; wall time {report['wall_s'] / 60:.1f} min",
             "", "| stage | status | seconds | budget s | note |", "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        note = (r.get("error") or (r.get("result") or {}).get("skipped") or "").replace("\n", " ")
        lines.append(f"| {name} | {r['status']} | {r['seconds']:.0f} | {r['budget_s']:.0f} | "
                     f"{note[:160]} |")
    tests = _result(results, "cuda_tests")
    if tests:
        lines += ["", f"Tests marked cuda ({', '.join(tests['files'])}): {tests['counts']}"]
        lines += [f"- {k}: {v}" for k, v in tests["tests"].items() if v != "passed"]
    return lines


def _training(results: dict) -> list[str]:
    lines = ["", "## Training (images/s at the reference batch; ratio to float32 in the same "
             "layout)", "", "| step | precision | channels_last | images/s | ratio | "
             "peak GPU MiB | note |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for step in stages.TRAIN_STEPS:
        rows = _rows(results, step)
        for r in rows:
            base = _rate(rows, precision="float32", channels_last=r["channels_last"])
            ratio = _ratio(r.get("images_per_s"), base)
            lines.append(f"| {step} | {r['precision']} | {r['channels_last']} | "
                         f"{_f(r.get('images_per_s'))} | {_f(ratio)} | "
                         f"{_f(r.get('peak_gpu_mib'), '.0f')} | {_note(r)[:120]} |")
    return lines


def _map_row(step: str, batch, r: dict, ratio) -> str:
    return (f"| {step} | {batch} | {r.get('precision', 'float32')} | "
            f"{r.get('channels_last', False)} | {_f(_infer_rate(r))} | {_f(ratio)} | "
            f"{_f(r.get('peak_gpu_mib'), '.0f')} | {r.get('check', '')} | {_note(r)[:120]} |")


def _maps(results: dict) -> list[str]:
    lines = ["", "## Maps (make_cam against the reference-style loop of bench_make_cam; "
             "make_amn_cam against its mechanism at batch 1)", "",
             "| step | batch | precision | channels_last | images/s | ratio to the loop | "
             "peak GPU MiB | maps | note |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for step in ("make_cam", "make_amn_cam"):
        res = _result(results, step)
        lines.append(_map_row(step, "loop", res.get("reference") or {}, 1.0))
        lines += [_map_row(step, r["batch"], r, r.get("ratio_to_reference"))
                  for r in res.get("rows") or []]
    return lines


def _others(results: dict) -> list[str]:
    lines, walk = [], _result(results, "random_walk")
    if walk:
        lines += ["", f"Random walk ({walk['map'][0]}x{walk['map'][1]}, {walk['classes']} "
                  f"classes, {walk['steps']} steps): CPU {_f(walk.get('cpu_s'))} s "
                  f"({walk.get('cpu_threads')} threads), GPU {_f(walk.get('gpu_s'))} s, "
                  f"speed-up {_f(walk.get('speedup'))}, labels equal "
                  f"{_f(walk.get('labels_equal'), '.4%')}"
                  + (f"; {walk['skipped']}" if walk.get("skipped") else "")]
    rows = _rows(results, "eval_seg")
    if rows:
        lines += ["", "| eval_seg | CRF | s/image | note |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['precision']} | {r['crf']} | {_f(r.get('seconds_per_unit'))} | "
                  f"{_note(r)[:120]} |" for r in rows]
    tr = _result(results, "torchrun")
    text = tr.get("skipped") or ""
    if "processes" in tr:
        text += (f" {tr['processes']} processes ({tr['backend']}); equal to one process: "
                 f"{tr.get('equal')}")
    return lines + ["", f"torchrun tiny chain: {text.strip() or 'not run'}"]


def _projections(report: dict) -> list[str]:
    lines = ["", "## Projected hours (bench_voc_scale's extrapolation)", "",
             "| precision | channels_last | VOC to pseudo-masks h | VOC whole h | COCO whole h | "
             "steps not measured |", "| --- | --- | --- | --- | --- | --- |"]
    for p in report["projections"]:
        t = p["totals"]
        lines.append(f"| {p['precision']} | {p['channels_last']} | "
                     f"{_f(t.get('voc_to_pseudo_masks_h'), '.2f')} | "
                     f"{_f(t.get('voc_whole_h'), '.2f')} | {_f(t.get('coco_whole_h'), '.2f')} | "
                     f"{', '.join(p['missing']) or '-'} |")
    return lines


def _decisions(report: dict) -> list[str]:
    lines = ["", "## Defaults by the rule of docs/gpu_check.md", ""]
    for flag, d in report["decisions"].items():
        basis = json.dumps({k: v for k, v in d.items() if k != "value"}, default=_short)
        lines.append(f"- `--{flag}`: {d.get('value')} ({basis})")
    return lines


def markdown(report: dict) -> str:
    """The report's tables (gpu_check.md)."""
    results = report["stages"]
    parts = (_header(report), _training(results), _maps(results), _others(results),
             _projections(report), _decisions(report))
    return "\n".join(line for part in parts for line in part) + "\n"


def _short(v):
    return round(v, 3) if isinstance(v, float) else str(v)


# ---------------------------------------- main ----------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=False, default=None, help="folder for gpu_check.json / .md")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one iteration, on any device")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--stages", default=",".join(stages.STAGES),
                   help="comma-separated, of: " + ", ".join(stages.STAGES))
    p.add_argument("--in_process", type=lambda v: v.lower() in ("1", "true", "yes"),
                   default=None, help="True: run the stages in this process (the default with "
                                      "--smoke); False: each in a process of its own, killed at "
                                      "its budget (the default)")
    p.add_argument("--num_workers", type=int, default=None,
                   help="loader / CRF workers (default: half the cores, 0 with --smoke)")
    p.add_argument("--budget_scale", type=float, default=None,
                   help="multiply every stage's budget (a slower GPU; default 1, 6 with --smoke: "
                        "a small, shared CPU)")
    hidden = argparse.SUPPRESS
    for flag in ("--_stage", "--_work", "--_result", "--_deadline"):
        p.add_argument(flag, default=None, help=hidden)
    return p


def child_main(args: argparse.Namespace, device: torch.device) -> None:
    env = stages.StageEnv(Path(args._work), device, args.smoke,
                          float(args._deadline), Path(args._result),
                          args.num_workers)
    with stages.network_settings(args.smoke):
        stages.STAGES[args._stage](env)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.num_workers is None:
        args.num_workers = 0 if args.smoke else max(1, (os.cpu_count() or 2) // 2)
    if args._stage:
        child_main(args, device)
        return {}
    if args.out is None:
        raise SystemExit("--out DIR is required")
    names = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(names) - set(stages.STAGES))
    if unknown:
        raise SystemExit(f"unknown stages {unknown}; choose from {', '.join(stages.STAGES)}")
    in_process = args.smoke if args.in_process is None else args.in_process
    if args.budget_scale is None:
        args.budget_scale = 6.0 if args.smoke else 1.0
    out, start = Path(args.out), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp, \
            stages.network_settings(args.smoke):
        work, sizes = Path(tmp), stages.SMOKE_SIZES if args.smoke else stages.GPU_SIZES
        voc.prepare(work, sizes.n_images, sizes.image_size)

        def env_for(name: str) -> stages.StageEnv:
            budget = stages.BUDGETS[name] * args.budget_scale
            return stages.StageEnv(work, device, args.smoke, time.monotonic() + budget,
                                   None, args.num_workers)
        results = run_stages(["device"] + [n for n in names if n != "device"], env_for,
                             in_process)
        report = {"smoke": args.smoke, "date": time.strftime("%Y-%m-%d %H:%M"),
                  "settings": {"sizes": vars(sizes), "network": dict(voc.S),
                               "num_workers": args.num_workers, "in_process": in_process},
                  "stages": results,
                  "projections": [projection(results, p, layout)
                                  for p in ("float32", "bfloat16") for layout in (False, True)],
                  "decisions": decide(results)}
    report["wall_s"] = time.perf_counter() - start
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
