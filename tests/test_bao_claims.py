"""BAO's rows of the repeats summary and the run report (docs/bao.md §7) on hand-made per-seed
numbers: the "within 1 point" claims (a margin), BAO over TransCAM, BAO on our AMN (a) and
(b); and repeat.py moving every BAO output into the seed's folders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import repeat
import run_sample
from misc.report.repeats import aggregate, claims, claims_markdown, headline_markdown
from misc.report.run_report import RESULTS
from step.driver.resolve import parse


def _write(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _seed(transcam, bao, bao_maps, amn, argmax, min_max_crf, bao_amn, min_max) -> list[dict]:
    """One seed's records (mIoU as fractions) of the BAO chain's evaluations."""
    return [{"step": "eval_transcam", "best_miou": transcam},
            {"step": "eval_bao", "miou": bao, "maps": {"best_miou": bao_maps}},
            {"step": "eval_amn_cam", "best_miou": amn,
             "threshold_free": {"softmax_argmax": {"miou": argmax},
                                "bao_min_max": {"miou": min_max},
                                "bao_min_max_crf": {"miou": min_max_crf}}},
            {"step": "eval_bao_amn", "miou": bao_amn}]


# per seed, in points against b: BAO - its maps' best -0.2 -0.4 -0.3 (within 1 point: holds,
# though BAO is below); BAO - TransCAM +3 +4 +5 (holds); (a) argmax -5 -6 -4 (more than 1
# point below: reversed); (a) min-max + CRF -1 0 -2 (exactly at the margin on average: within
# noise); (b) +1 +2 +3 (holds); (a) min-max alone -0.1 -0.2 -0.3 (holds)
SEEDS = [(0.40, 0.430, 0.432, 0.50, 0.45, 0.49, 0.51, 0.499),
         (0.40, 0.440, 0.444, 0.50, 0.44, 0.50, 0.52, 0.498),
         (0.40, 0.450, 0.453, 0.50, 0.46, 0.48, 0.53, 0.497)]


def _rows(tmp_path: Path, seeds=SEEDS) -> dict[tuple[str, str], dict]:
    files = {s: _write(tmp_path / f"seed{s}/metrics.jsonl", _seed(*v)) for s, v in enumerate(seeds)}
    return {(r["a"], r["b"]): r for r in claims(aggregate(files))}


def test_threshold_free_within_one_point_is_a_margin_of_one(tmp_path):
    rows = _rows(tmp_path)
    within = rows[("eval_bao.miou", "eval_bao.maps.best_miou")]
    assert within["values"] == pytest.approx({0: -0.2, 1: -0.4, 2: -0.3})
    assert within["mean"] == pytest.approx(-0.3) and within["std"] == pytest.approx(0.1)
    # -0.3 + 1 = 0.7 > 2 x 0.1; without the margin the same effects would be "reversed"
    assert within["margin"] == 1.0 and within["holds"] is True and within["verdict"] == "holds"
    over = rows[("eval_bao.miou", "eval_transcam.best_miou")]
    assert "margin" not in over and over["mean"] == pytest.approx(4.0)
    assert over["verdict"] == "holds"


def test_bao_on_amn_rows_hold_reverse_or_stay_within_noise(tmp_path):
    rows = _rows(tmp_path)
    argmax = rows[("eval_amn_cam.threshold_free.softmax_argmax.miou", "eval_amn_cam.best_miou")]
    assert argmax["values"] == pytest.approx({0: -5.0, 1: -6.0, 2: -4.0})
    assert argmax["verdict"] == "reversed" and argmax["holds"] is False  # -5 + 1 < -2 x 1
    crf = rows[("eval_amn_cam.threshold_free.bao_min_max_crf.miou", "eval_amn_cam.best_miou")]
    assert crf["mean"] == pytest.approx(-1.0) and crf["verdict"] == "within noise"
    min_max = rows[("eval_amn_cam.threshold_free.bao_min_max.miou", "eval_amn_cam.best_miou")]
    assert min_max["mean"] == pytest.approx(-0.2) and min_max["verdict"] == "holds"
    trained = rows[("eval_bao_amn.miou", "eval_amn_cam.best_miou")]
    assert trained["values"] == pytest.approx({0: 1.0, 1: 2.0, 2: 3.0})
    assert trained["verdict"] == "holds"
    md = claims_markdown(list(rows.values()))
    assert ("| BAO-on-AMN (a): softmax argmax within 1 point of AMN's best threshold (points; "
            "holds: > -1) | 3 | -5.00 ± 1.00 | -6.00 to -4.00 | no: reversed |") in md
    assert ("| BAO: threshold-free mask within 1 point of its maps at their best threshold "
            "(points; holds: > -1) | 3 | -0.30 ± 0.10 | -0.40 to -0.20 | yes |") in md


def test_one_seed_has_no_verdict_and_a_chain_without_bao_is_not_run(tmp_path):
    one = _rows(tmp_path, SEEDS[:1])[("eval_bao_amn.miou", "eval_amn_cam.best_miou")]
    assert one["n"] == 1 and one["holds"] is None and one["verdict"] == "one seed"
    amn_only = {0: _write(tmp_path / "amn/metrics.jsonl",
                          [{"step": "eval_amn_cam", "best_miou": 0.5}])}
    rows = {(r["a"], r["b"]): r for r in claims(aggregate(amn_only))}
    assert rows[("eval_bao_amn.miou", "eval_amn_cam.best_miou")]["verdict"] == "not run"


def test_the_headline_shows_every_bao_row_in_points(tmp_path):
    files = {s: _write(tmp_path / f"seed{s}/metrics.jsonl", _seed(*v))
             for s, v in enumerate(SEEDS[:2])}
    md = headline_markdown(aggregate(files))
    for row in ("| TransCAM seed mIoU, best threshold | 2 | 40.00 ± 0.00 | 40.00–40.00 |",
                "| BAO threshold-free mask mIoU | 2 | 43.50 ± 0.71 | 43.00–44.00 |",
                "| BAO maps mIoU, best threshold | 2 | 43.80 ± 0.85 | 43.20–44.40 |",
                "| BAO-on-AMN (a) softmax argmax mIoU | 2 | 44.50 ± 0.71 | 44.00–45.00 |",
                "| BAO-on-AMN (a) min-max mIoU | 2 | 49.85 ± 0.07 | 49.80–49.90 |",
                "| BAO-on-AMN (a) min-max + CRF mIoU | 2 | 49.50 ± 0.71 | 49.00–50.00 |",
                "| BAO-on-AMN (b) self-trained mask mIoU | 2 | 51.50 ± 0.71 | 51.00–52.00 |"):
        assert row in md, row


def test_the_run_report_shows_bao_on_amn_a_and_b():
    scored = {"miou": 0.512, "mean_fp": 0.2, "mean_fn": 0.25, "no_crf": {"miou": 0.49},
              "maps": {"miou": 0.47, "threshold": 0.5, "best_miou": 0.505, "best_threshold": 0.35}}
    assert RESULTS["eval_bao_amn"](scored) == (
        "BAO-on-AMN threshold-free mIoU 51.2 (FP 20.0, FN 25.0; 49.0 before the CRF); "
        "BAO-on-AMN maps seed mIoU 47.0 @ 0.50, best 50.5 @ 0.35")
    amn = {"miou": 0.40, "threshold": 0.25, "best_miou": 0.45, "best_threshold": 0.30,
           "threshold_free": {"softmax_argmax": {"miou": 0.41}, "bao_min_max_crf": {"miou": 0.44}}}
    assert RESULTS["eval_amn_cam"](amn) == (
        "AMN seed mIoU 40.0 @ 0.25, best 45.0 @ 0.30; threshold-free softmax argmax 41.0, "
        "bao min max crf 44.0")


def test_repeat_moves_every_bao_output_into_the_seed_folder_and_keeps_the_inputs():
    argv = repeat.seed_argv(["--train_transcam_pass", "True", "--conformer_weights", "c.pth"], 1)
    args = parse(run_sample.PIPELINE, argv)
    assert (args.transcam_weights_name, args.bao_weights_name, args.bao_amn_weights_name) == (
        "sess/seeds/seed1/transcam.pth", "sess/seeds/seed1/bao.pth",
        "sess/seeds/seed1/res50_bao_amn.pth")
    assert (args.transcam_out_dir, args.bao_cam_out_dir, args.bao_out_dir) == (
        "result/seeds/seed1/transcam", "result/seeds/seed1/bao_cam", "result/seeds/seed1/bao_label")
    assert (args.bao_amn_cam_out_dir, args.bao_amn_out_dir) == (
        "result/seeds/seed1/bao_amn_cam", "result/seeds/seed1/bao_amn_label")
    assert args.conformer_weights == "c.pth" and args.seed == 1  # an input: shared by the seeds
