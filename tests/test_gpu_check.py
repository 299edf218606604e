"""bench/gpu_check.py's CPU smoke mode (tiny sizes, one iteration per stage): every stage runs
or says why not, the figures are finite, the maps agree with the reference-style loops, the
projection and the decision rule read them; a failing stage is recorded and the rest still run;
a stage in its own process (the GPU run's way) comes back with its figures."""
from __future__ import annotations

import json
import math

from bench import bench_voc_scale, gpu_check, gpu_stages


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_smoke_run(tmp_path, monkeypatch):
    def broken(env):
        raise RuntimeError("stage broke")
    monkeypatch.setitem(gpu_stages.STAGES, "random_walk", broken)
    settings = dict(bench_voc_scale.S)
    report = gpu_check.main(["--smoke", "--out", str(tmp_path)])
    assert bench_voc_scale.S == settings  # the smoke sizes are undone
    stages = report["stages"]
    assert list(stages) == list(gpu_stages.STAGES)
    assert stages["random_walk"]["status"] == "failed" and "stage broke" in stages["random_walk"]["error"]
    assert stages["torchrun"]["status"] == "skipped"
    assert all(stages[s]["status"] == "ok" for s in gpu_stages.STAGES
               if s not in ("random_walk", "torchrun")), {s: v.get("error") for s, v in stages.items()}
    tests = stages["cuda_tests"]["result"]
    assert "tests/test_cuda.py" in tests["files"] and tests["counts"]["failed"] == 0
    assert tests["counts"]["skipped"] + tests["counts"]["passed"] >= 5
    for step in gpu_stages.TRAIN_STEPS:
        (row,) = stages[step]["result"]["rows"]
        assert _finite(row["images_per_s"]) and row["channels_last"], (step, row)
    for step in ("make_cam", "make_amn_cam"):
        result = stages[step]["result"]
        assert _finite(result["reference"]["seconds_per_unit"])
        assert [(r["batch"], r["precision"], r["channels_last"]) for r in result["rows"]] == [
            (1, "float32", False), (2, "float32", False), (2, "float32", True),
            (2, "bfloat16", True)]
        for row in result["rows"]:
            assert row["check"].startswith("2/2 images' maps equal"), (step, row)
            assert _finite(row["ratio_to_reference"])
    chain = stages["chain_rest"]["result"]["rows"]
    assert all(_finite(chain[s]["seconds_per_unit"]) for s in gpu_stages.CHAIN_RUNNERS)
    fp32 = report["projections"][1]  # float32, channels_last: every step measured
    assert fp32["channels_last"] and fp32["missing"] == []
    assert _finite(fp32["totals"]["voc_to_pseudo_masks_h"])
    assert fp32["totals"]["voc_whole_h"] > fp32["totals"]["voc_to_pseudo_masks_h"]
    assert report["decisions"]["infer_batch_size"]["value"] in (1, 2)
    assert report["decisions"]["amp"]["value"] is None  # bf16 training not measured
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["stages"].keys() == stages.keys()
    md = (tmp_path / "gpu_check.md").read_text()
    assert "CPU smoke run" in md and "| train_seg | float32 | True |" in md
    assert "## Projected hours" in md and "`--infer_batch_size`" in md


def test_a_stage_in_its_own_process(tmp_path):
    report = gpu_check.main(["--smoke", "--in_process", "False", "--out", str(tmp_path),
                             "--stages", "random_walk"])
    walk = report["stages"]["random_walk"]
    assert walk["status"] == "skipped" and _finite(walk["result"]["cpu_s"])  # no GPU here
    assert report["stages"]["device"]["result"]["device"] == "cpu"
