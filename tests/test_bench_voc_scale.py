"""bench/bench_voc_scale.py: the tiniest run gives a finite row for every requested step, the
extrapolation counts the reference's units, and the bench's reference settings are still the
driver's (the voc12 and coco14 profile files and the declared defaults)."""
from __future__ import annotations

import json
import math

import run_sample
from bench import bench_voc_scale as bench
from step.driver.flags import load_profile
from step.driver.resolve import parse


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(float(a), float(b))


def test_settings_are_the_drivers():
    defaults = vars(parse(run_sample.PIPELINE, []))
    voc = load_profile("voc12")
    for key, value in bench.SETTINGS.items():
        assert _same(value, voc[key] if key in voc else defaults[key]), key
    assert bench.COCO_SEG_ITERS == load_profile("coco14")["seg_num_iters"]
    assert voc["poly_momentum"] == -1  # the bench's momentum=None (the reference quirk)


def test_extrapolation_units():
    spec = bench.SPECS["train_cam"]
    assert (spec.voc_units, spec.coco_units) == (5 * 661, 5 * 5173)
    assert bench.SPECS["train_irn"].voc_units == 3 * 330
    row = bench.make_row(spec, {"seconds_per_unit": 2.0}, None)
    assert math.isclose(row["voc_h"], 2.0 * 3305 / 3600) and row["ratio"] is None
    sem = bench.make_row(bench.SPECS["make_sem_seg"], {"seconds_per_unit": 1.0,
                                                       "artifact_bytes": 1000.0},
                         {"seconds_per_unit": 100.0})
    assert math.isclose(sem["ratio"], 0.01)
    assert math.isclose(sem["coco_h"], 82783 * bench.COCO_AREA / 3600)
    totals = bench.totals([row, sem])
    assert math.isclose(totals["voc_whole_h"], row["voc_h"] + sem["voc_h"])
    assert math.isclose(totals["voc_whole_reference_style_h"], row["voc_h"] + 100 * sem["voc_h"])
    assert math.isclose(totals["voc_disk_gb"], 1000.0 * 1464 / 1e9)


def test_tiny_run(tmp_path, capsys):
    out = tmp_path / "bench.json"
    steps = ["cam_to_ir_label", "eval"]
    report = bench.main(["--device", "cpu", "--size", "48", "64", "--n_images", "1",
                         "--train_iters", "1", "--num_workers", "1", "--steps", ",".join(steps),
                         "--json", str(out)])
    assert [r["step"] for r in report["rows"]] == steps
    for row in report["rows"]:
        assert row["error"] is None
        for key in ("ours_s", "voc_h", "coco_h", "peak_host_mib"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["step"], key)
    assert math.isfinite(report["rows"][0]["artifact_bytes"])
    printed = capsys.readouterr().out
    assert all(f"| {s} |" in printed for s in steps) and "Totals" in printed
    assert [r["step"] for r in json.loads(out.read_text())["rows"]] == steps
