"""repeat.py and misc/report/repeats.py: seed folders, finished seeds, the aggregation over seeds, and
two tiny CAM-only seeds end to end with a rerun that skips both."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

import repeat
import run_sample
from misc.report.repeats import (
    aggregate,
    claims,
    is_finished,
    mark_finished,
    threshold_bands,
    write_summary,
)
from step.driver.resolve import insert_folder, is_output_flag, parse, separate_outputs
from tests.tiny import flags


def test_insert_folder_and_dataset_folders_agree():
    ins = insert_folder
    assert ins("result/cam", "coco14", "result") == "result/coco14/cam"
    assert ins("result", "coco14", "result") == "result/coco14"
    assert ins("sess/res50_cam.pth", "coco14", "result") == "sess/coco14/res50_cam.pth"
    assert ins("/o/sess/a.pth", "seeds/seed1", "/o") == "/o/seeds/seed1/sess/a.pth"
    assert ins("/w/x.pth", "seeds/seed1", "/o") == "/w/seeds/seed1/x.pth"
    args = parse(run_sample.PIPELINE, ["--dataset", "coco14", "--cam_out_dir", "mine"])
    separate_outputs(run_sample.PIPELINE, args)
    assert (args.cam_out_dir, args.cocoann_out_dir, args.amn_weights_name) == (
        "mine", "result/coco14", "sess/coco14/res50_amn.pth")
    parts = parse(run_sample.PIPELINE, ["--toy_dataset", "parts"])
    separate_outputs(run_sample.PIPELINE, parts)  # the embedded parts dataset: a folder of its own
    assert (parts.cam_out_dir, parts.seg_gt_weights_name) == ("result/parts/cam",
                                                              "sess/parts/deeplabv2_gt.pth")
    own_root = parse(run_sample.PIPELINE, ["--toy_dataset", "parts",
                                                     "--voc12_root", "/v"])
    separate_outputs(run_sample.PIPELINE, own_root)  # a root given: --toy_dataset plays no part
    assert own_root.cam_out_dir == "result/cam"
    seed = _parsed(repeat.seed_argv(["--toy_dataset", "parts"], 2))
    assert seed.cam_out_dir == "result/parts/seeds/seed2/cam"


def _parsed(argv: list[str]):
    return parse(run_sample.PIPELINE, argv)


def test_seed_argv_moves_every_output_into_the_seed_folder(tmp_path):
    toy = _parsed(repeat.seed_argv([], 3))
    assert toy.seed == 3 and toy.cam_out_dir == "result/seeds/seed3/cam"
    assert toy.metrics_file == "result/seeds/seed3/metrics.jsonl"
    assert toy.cocoann_out_dir == "result/seeds/seed3"
    assert toy.cam_weights_name == "sess/seeds/seed3/res50_cam.pth"
    coco = _parsed(repeat.seed_argv(["--dataset", "coco14"], 0))
    assert coco.sem_seg_out_dir == "result/coco14/seeds/seed0/sem_seg"
    assert coco.seg_weights_name == "sess/coco14/seeds/seed0/deeplabv2.pth"
    out = tmp_path / "out"
    given = _parsed(repeat.seed_argv(flags(tmp_path / "voc", out, tmp_path / "w.pth"), 1))
    assert given.metrics_file == str(out / "seeds/seed1/metrics.jsonl")
    assert given.cam_weights_name == str(out / "seeds/seed1/sess/res50_cam.pth")
    outputs = [v for k, v in vars(given).items() if is_output_flag(k)]
    assert outputs and all("seeds/seed1" in v for v in outputs)
    with pytest.raises(SystemExit):
        repeat.parse(["--seeds", "0", "--seed", "1"])


def _write(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_aggregate_is_exact_over_hand_written_files(tmp_path):
    cam = lambda miou, s10, s20: {"step": "eval_cam", "split": "train", "miou": miou,
                                  "iou": {"background": 0.8, "cat": None}, "best_miou": s20,
                                  "sweep": {"0.10": s10, "0.20": s20}}
    files = {
        0: _write(tmp_path / "s0/metrics.jsonl", [cam(0.1, 0.0, 0.0), cam(0.40, 0.30, 0.50)]),
        1: _write(tmp_path / "s1/metrics.jsonl", [cam(0.50, 0.20, 0.60)]),
        2: _write(tmp_path / "s2/metrics.jsonl", [cam(0.60, 0.10, 0.40),
                                                  {"step": "train_cam", "mAP": 55.0,
                                                   "ok": True}]),
    }
    table = aggregate(files)
    miou = table["eval_cam.miou"]  # the latest record of seed 0 only
    assert miou["n"] == 3 and miou["min"] == 0.40 and miou["max"] == 0.60
    assert miou["mean"] == pytest.approx(0.50, abs=1e-15)
    assert miou["std"] == pytest.approx(math.sqrt((0.1 ** 2 + 0 + 0.1 ** 2) / 2), abs=1e-15)
    assert miou["values"] == {0: 0.40, 1: 0.50, 2: 0.60}
    assert table["eval_cam.iou.background"]["std"] == 0.0
    assert "eval_cam.iou.cat" not in table and "train_cam.ok" not in table
    assert table["train_cam.mAP"] == {"n": 1, "mean": 55.0, "std": None, "min": 55.0,
                                      "max": 55.0, "values": {2: 55.0}}
    # the derived plateau: seed 0's 0.30 is 20 points below its best, seed 2's 0.10 too
    assert table["eval_cam.plateau_width"]["values"] == {0: 0.0, 1: 0.0, 2: 0.0}
    bands = threshold_bands(table)["CAM"]
    assert [b[0] for b in bands] == [0.10, 0.20]
    assert bands[1][1:] == pytest.approx((0.50, 0.40, 0.60))
    md = write_summary(files, tmp_path / "seeds")
    assert "| eval_cam.miou | 3 | 0.5 ± 0.1 | 0.4–0.6 |" in md
    assert "| train_cam.mAP | 1 | 55 ± - | 55–55 |" in md
    saved = json.loads((tmp_path / "seeds/summary.json").read_text())
    assert saved["metrics"]["eval_cam.miou"]["n"] == 3 and saved["band"] == "min-max"
    assert (tmp_path / "seeds/threshold_band.png").stat().st_size > 0


def test_claims_are_paired_effects_with_a_two_std_verdict(tmp_path):
    def seed(cam, amn, pseudo, seg, gt):
        return [{"step": "eval_cam", "best_miou": cam, "sweep": {"0.10": cam, "0.20": cam - 0.1}},
                {"step": "eval_amn_cam", "best_miou": amn, "sweep": {"0.10": amn, "0.20": amn}},
                {"step": "eval_sem_seg", "miou": pseudo}, {"step": "eval_seg", "miou": seg},
                {"step": "eval_seg_gt", "miou": gt}]
    runs = [(0.40, 0.50, 0.52, 0.30, 0.60), (0.42, 0.51, 0.50, 0.35, 0.61),
            (0.41, 0.53, 0.55, 0.40, 0.59)]
    files = {s: _write(tmp_path / f"s{s}/metrics.jsonl", seed(*v)) for s, v in enumerate(runs)}
    rows = {r["a"]: r for r in claims(aggregate(files))}
    amn = rows["eval_amn_cam.best_miou"]  # AMN - CAM: +10, +9, +12 points
    assert amn["values"] == pytest.approx({0: 10.0, 1: 9.0, 2: 12.0})
    assert amn["std"] == pytest.approx(math.sqrt(7 / 3)) and amn["holds"] is True
    width = rows["eval_amn_cam.plateau_width"]  # AMN flat over 0.1-0.2, CAM drops 10 points
    assert width["values"] == pytest.approx({0: 0.1, 1: 0.1, 2: 0.1}) and width["holds"] is True
    walk = rows["eval_sem_seg.miou"]  # +2, -1, +2: mean 1 < 2 std
    assert walk["mean"] == pytest.approx(1.0) and walk["holds"] is False
    assert rows["eval_seg_gt.miou"]["values"] == pytest.approx({0: 30.0, 1: 26.0, 2: 19.0})
    one = claims(aggregate({0: files[0]}))
    assert all(r["holds"] is None and r["n"] == 1 for r in one[:4])  # no spread from one seed
    md = write_summary(files, tmp_path / "seeds")
    assert "| AMN seed > CAM seed, each at its best threshold (points) | 3 | +10.33 ± " in md
    assert "| pseudo-mask > AMN seed at its best threshold (points) | 3 | +1.00 ± 1.73 |" in md
    assert "| DeepLab on the ground truth mIoU | 3 | 60.00 ± 1.00 | 59.00–61.00 |" in md
    saved = json.loads((tmp_path / "seeds/summary.json").read_text())
    assert [r["holds"] for r in saved["claims"]][:4] == [True, True, False, True]


def test_finished_means_report_and_marker_of_the_same_command(tmp_path):
    argv = ["--seed", "0"]
    assert not is_finished(tmp_path, argv)
    mark_finished(tmp_path, argv, 0, 1.0)
    assert not is_finished(tmp_path, argv)  # no report yet
    (tmp_path / "report.md").write_text("x")
    assert is_finished(tmp_path, argv) and not is_finished(tmp_path, argv + ["--x", "1"])
    (tmp_path / "repeat.json").write_text('{"argv": ["--se')  # cut short by a kill
    assert not is_finished(tmp_path, argv)


CAM_PASSES = ["--train_cam_pass", "True", "--make_cam_pass", "True", "--eval_cam_pass", "True"]


def test_two_tiny_seeds_then_a_rerun_skips_both(tiny_toy, tmp_path, r50, capsys):
    out = tmp_path / "out"  # random backbone weights (r50): enough to check the mechanics
    # train on the 8-image train list (one batch), one scale: seconds per seed
    small = ["--train_list", str(tiny_toy / "ImageSets/Segmentation/train.txt"),
             "--cam_scales", "1.0"]
    argv = ["--seeds", "0", "1", *flags(tiny_toy, out, r50), *CAM_PASSES, *small]
    start = time.time()
    files = repeat.main(argv)
    first = time.time() - start
    assert sorted(p.name for p in (out / "seeds").glob("seed*")) == ["seed0", "seed1"]
    assert files[1] == out / "seeds/seed1/metrics.jsonl"
    assert (out / "seeds/seed1/sess/res50_cam.pth").is_file()
    summary = json.loads((out / "seeds/summary.json").read_text())
    assert summary["metrics"]["eval_cam.miou"]["n"] == 2
    assert (out / "seeds/threshold_band.png").is_file()
    md = (out / "seeds/summary.md").read_text()
    assert "| eval_cam.miou | 2 |" in md
    capsys.readouterr()
    print(f"first run {first:.1f} s")
    repeat.main(argv)
    log = capsys.readouterr().out
    assert "repeat: seed 0 finished earlier" in log and "repeat: seed 1 finished earlier" in log
    assert "== train_cam" not in log


def test_an_arm_reads_the_main_runs_outputs_and_redoes_only_what_it_changes(
        tiny_toy, tmp_path, r50, capsys):
    out = tmp_path / "out"
    small = ["--train_list", str(tiny_toy / "ImageSets/Segmentation/train.txt"),
             "--cam_scales", "1.0", "--sweep_thres", "0.2", "0.3"]
    argv = ["--seeds", "0", *flags(tiny_toy, out, r50), *CAM_PASSES, *small,
            "--arm", "lo", "--cam_eval_thres 0.05"]
    repeat.main(argv)
    log = capsys.readouterr().out
    arm_log = log.split("repeat: arm lo, seed 0")[1]
    assert "== eval_cam" in arm_log and "== train_cam" not in arm_log
    assert "== make_cam" not in arm_log
    assert not (out / "seeds/lo/seed0/cam").exists()  # the arm read seed 0's CAMs
    line = [json.loads(x) for x in (out / "seeds/lo/seed0/metrics.jsonl").read_text().splitlines()]
    main = [json.loads(x) for x in (out / "seeds/seed0/metrics.jsonl").read_text().splitlines()]
    assert [r["threshold"] for r in line if r["step"] == "eval_cam"] == [0.05]
    assert [r["threshold"] for r in main if r["step"] == "eval_cam"] == [0.25]
