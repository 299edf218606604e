"""PMM's claims rows (docs/pmm.md §10) on hand-made per-seed numbers: one that holds, one
reversed, one within noise, PUF against the `ce` arm; and repeat.py's --arm plumbing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import repeat
import run_sample
from misc.report.repeats import aggregate, claims, claims_markdown, verdict
from step.driver.resolve import parse


def _write(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _seed(ppmg_seed, ir, ir_ref, final, seg, cp):
    """One seed's records (mIoU as fractions): the PPMG and constant rows of each plug point."""
    return [{"step": "eval_amn_cam", "best_miou": 0.40, "ppmg_best": {"miou": ppmg_seed}},
            {"step": "amn_cam_to_ir_label", "miou": ir, "coverage": 0.50,
             "reference": {"miou": ir_ref, "coverage": 0.60}},
            {"step": "make_sem_seg", "ppmg": final, "best_miou": 0.45},
            {"step": "eval_seg", "miou": seg}, {"step": "eval_seg_cp", "miou": cp}]


def test_pmm_rows_hold_reverse_or_stay_within_noise(tmp_path):
    values = [  # (i) +3 +4 +5; (ii) +1 -1 +2; (iii) -3 -4 -5; CP +2 +2.5 +3; PUF +1 -1 +2
        (0.43, 0.71, 0.70, 0.42, 0.50, 0.52, 0.49),
        (0.44, 0.69, 0.70, 0.41, 0.51, 0.535, 0.52),
        (0.45, 0.72, 0.70, 0.40, 0.52, 0.55, 0.50)]
    files = {s: _write(tmp_path / f"seed{s}/metrics.jsonl", _seed(*v[:6]))
             for s, v in enumerate(values)}
    ce = {s: _write(tmp_path / f"ce/seed{s}/metrics.jsonl", [{"step": "eval_seg", "miou": v[6]}])
          for s, v in enumerate(values)}
    rows = {(r["a"], r["b"]): r for r in claims(aggregate(files, {"ce": ce}))}
    seed_row = rows[("eval_amn_cam.ppmg_best.miou", "eval_amn_cam.best_miou")]
    assert seed_row["values"] == pytest.approx({0: 3.0, 1: 4.0, 2: 5.0})
    assert seed_row["std"] == pytest.approx(1.0) and seed_row["verdict"] == "holds"
    ir = rows[("amn_cam_to_ir_label.miou", "amn_cam_to_ir_label.reference.miou")]
    assert ir["mean"] == pytest.approx(2 / 3) and ir["verdict"] == "within noise"
    coverage = rows[("amn_cam_to_ir_label.coverage", "amn_cam_to_ir_label.reference.coverage")]
    assert coverage["values"] == pytest.approx({0: -10.0, 1: -10.0, 2: -10.0})
    final = rows[("make_sem_seg.ppmg", "make_sem_seg.best_miou")]
    assert final["mean"] == pytest.approx(-4.0) and final["verdict"] == "reversed"
    assert final["holds"] is False
    cp = rows[("eval_seg_cp.miou", "eval_seg.miou")]
    assert cp["values"] == pytest.approx({0: 2.0, 1: 2.5, 2: 3.0}) and cp["verdict"] == "holds"
    puf = rows[("eval_seg.miou", "ce.eval_seg.miou")]
    assert puf["values"] == pytest.approx({0: 1.0, 1: -1.0, 2: 2.0})
    assert puf["verdict"] == "within noise"
    md = claims_markdown(list(rows.values()))
    assert "| PMM (iii): PPMG final masks > the best constant score on the same walks (points) " \
           "| 3 | -4.00 ± 1.00 | -5.00 to -3.00 | no: reversed |" in md
    # without the arm the PUF row is not run; one seed has no spread
    alone = {(r["a"], r["b"]): r for r in claims(aggregate(files))}
    assert alone[("eval_seg.miou", "ce.eval_seg.miou")]["verdict"] == "not run"
    one = {(r["a"], r["b"]): r for r in claims(aggregate({0: files[0]}))}
    assert one[("eval_seg_cp.miou", "eval_seg.miou")]["verdict"] == "one seed"
    assert (verdict(1.0, 0.5), verdict(0.9, 0.5), verdict(-1.1, 0.5)) == \
        ("within noise", "within noise", "reversed")


def test_an_arm_runs_the_call_with_its_flags_in_folders_of_its_own():
    seeds, rest, arms = repeat.parse(["--seeds", "0", "2", "--seg_puf", "clamp",
                                      "--arm", "ce", "--seg_puf none --eval_seg_cp_pass False"])
    assert seeds == [0, 2] and arms == {"ce": ["--seg_puf", "none", "--eval_seg_cp_pass", "False"]}
    main = parse(run_sample.PIPELINE, repeat.seed_argv(rest, 2))
    arm = parse(run_sample.PIPELINE, repeat.seed_argv(rest, 2, "ce", arms["ce"]))
    assert (main.seg_puf, arm.seg_puf) == ("clamp", "none")
    assert arm.metrics_file == "result/seeds/ce/seed2/metrics.jsonl"
    assert arm.seg_weights_name == "sess/seeds/ce/seed2/deeplabv2.pth"
    assert main.seg_weights_name == "sess/seeds/seed2/deeplabv2.pth"
    # the arm redoes what --seg_puf shapes, DeepLab and its evaluation; the rest is the main
    # run's: those passes are off and their outputs are read from the seed's folders
    assert arm.seg_pred_out_dir == "result/seeds/ce/seed2/seg_pred"
    assert (arm.cam_weights_name, arm.sem_seg_out_dir) == (
        "sess/seeds/seed2/res50_cam.pth", "result/seeds/seed2/sem_seg")
    ran = {name for name in run_sample.PIPELINE.steps if getattr(arm, f"{name}_pass")}
    assert ran == {"train_seg", "eval_seg"}
    assert main.train_cam_pass is None and arm.train_cam_pass is False
    # every CP output is per seed too (an *_out_dir / *_weights_name flag)
    assert (main.seg_cp_out_dir, main.seg_cp_weights_name, main.seg_cp_pred_out_dir) == (
        "result/seeds/seed2/seg_cp_label", "sess/seeds/seed2/deeplabv2_cp.pth",
        "result/seeds/seed2/seg_pred_cp")
    for bad in (["--arm", "seed1", "--seg_puf none"], ["--arm", "ce", "--seed 3"],
                ["--arm", "ce", "--seg_puf none", "--arm", "ce", "--seg_puf pow"],
                ["--arm", "ce", "--seg_puf nonsense"]):
        with pytest.raises(SystemExit):
            repeat.parse(["--seeds", "0", *bad])


def test_an_arm_redoes_every_pass_downstream_of_a_changed_flag():
    # --cam_network shapes train_cam: everything after it reads what it made, so nothing is
    # the main run's; a flag of the last pass leaves all but that pass to the main run
    early = repeat.reused_passes([], ["--sem_seg_bg_thres", "0.3"])
    assert "make_sem_seg" not in early and "train_seg" not in early and "eval_seg" not in early
    assert {"train_cam", "make_cam", "train_amn", "train_irn"} <= early
    assert repeat.reused_passes([], ["--cam_batch_size", "8"]) == set()
    # a pass the main run does not run is never reused
    assert "make_seg_cp" not in repeat.reused_passes([], ["--make_seg_cp_pass", "True"])
