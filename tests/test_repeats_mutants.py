"""Repeats over seeds (misc/report/repeats.py), unit by unit: finished seeds, the numbers of a
seed, their statistics, the claims' two-std verdict, the tables and the band plot. Every expected
value is worked out by hand; fast, the tests tools/mutate.py runs against repeats.py's mutants."""
from __future__ import annotations

import json
import math

import pytest

from misc.report import repeats
from misc.report.repeats import (
    CLAIMS,
    aggregate,
    claims,
    claims_markdown,
    flatten,
    headline_markdown,
    is_finished,
    mark_finished,
    plot_bands,
    seed_numbers,
    stats,
    summary_markdown,
    threshold_bands,
    write_summary,
)


def _write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _is_markdown_table(text: str) -> bool:
    """Every line a row of cells between pipes, all rows as wide, the second a separator."""
    lines = text.splitlines()
    if len(lines) < 2 or any(not (ln.startswith("| ") and ln.endswith(" |")) for ln in lines):
        return False
    widths = {ln.count(" | ") for ln in lines}
    separator = [c.strip() for c in lines[1].strip("|").split("|")]
    return len(widths) == 1 and all(c in ("---", "---:") for c in separator)


def _table(values: dict[str, dict[int, float]]) -> dict:
    return {name: stats(v) for name, v in values.items()}


def test_a_seed_is_finished_only_with_its_report_and_a_marker_of_the_same_command(tmp_path):
    argv = ["--seed", "3", "--cam_scales", "1.0"]
    (tmp_path / "report.md").write_text("r")
    assert not is_finished(tmp_path, argv)  # no marker
    mark_finished(tmp_path, tuple(argv), 3, 12.5)
    assert json.loads((tmp_path / "repeat.json").read_text()) == {
        "seed": 3, "argv": argv, "seconds": 12.5}
    assert is_finished(tmp_path, tuple(argv))
    assert not is_finished(tmp_path, argv[:2])
    (tmp_path / "repeat.json").write_text('{"seed": 3, "argv": ["--se')  # cut short by a kill
    assert not is_finished(tmp_path, argv)
    mark_finished(tmp_path, argv, 3, 1.0)
    (tmp_path / "report.md").unlink()
    assert not is_finished(tmp_path, argv)
    (tmp_path / "report.md").mkdir()  # not a file
    assert not is_finished(tmp_path, argv)


def test_flatten_keeps_numbers_by_dotted_key_and_drops_booleans_none_and_text():
    record = {"miou": 0.5, "n": 3, "ok": True, "cat": None, "split": "train",
              "iou": {"background": 0.8, "cat": None, "deep": {"x": 2}}}
    assert flatten(record, "eval_cam") == {"eval_cam.miou": 0.5, "eval_cam.n": 3.0,
                                           "eval_cam.iou.background": 0.8,
                                           "eval_cam.iou.deep.x": 2.0}
    assert isinstance(flatten({"n": 3}, "s")["s.n"], float)


def test_seed_numbers_add_the_random_walk_gain_and_both_plateaus(tmp_path):
    path = _write(tmp_path / "metrics.jsonl", [
        {"step": "eval_cam", "best_miou": 0.40, "sweep": {"0.10": 0.30, "0.20": 0.40, "0.30": 0.38,
                                                          "0.40": 0.20}},
        {"step": "eval_amn_cam", "best_miou": 0.50, "sweep": {"0.30": 0.50, "0.50": 0.49}},
        {"step": "eval_sem_seg", "miou": 0.625}])
    numbers = seed_numbers(path)
    assert "eval_cam.step" not in numbers
    assert numbers["eval_sem_seg.random_walk_gain"] == pytest.approx(0.125)
    # CAM: best 0.40 at 0.20; 0.38 within 3 points, 0.30 and 0.20 not: 0.20-0.30
    assert (numbers["eval_cam.plateau_lo"], numbers["eval_cam.plateau_hi"]) == (0.20, 0.30)
    assert numbers["eval_cam.plateau_width"] == pytest.approx(0.10)
    assert (numbers["eval_amn_cam.plateau_lo"], numbers["eval_amn_cam.plateau_hi"]) == (0.3, 0.5)
    assert numbers["eval_amn_cam.plateau_width"] == pytest.approx(0.2)
    only_cam = seed_numbers(_write(tmp_path / "b.jsonl", [{"step": "eval_cam", "miou": 0.1}]))
    assert only_cam == {"eval_cam.miou": 0.1}  # no sweep, no AMN: nothing derived


def test_stats_are_n_mean_sample_std_min_max_and_no_std_for_one_seed():
    s = stats({0: 1.0, 1: 2.0, 2: 4.0})
    assert (s["n"], s["min"], s["max"]) == (3, 1.0, 4.0)
    assert s["mean"] == pytest.approx(7 / 3)
    assert s["std"] == pytest.approx(math.sqrt(7 / 3))  # ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2
    assert s["values"] == {0: 1.0, 1: 2.0, 2: 4.0}
    assert stats({5: 0.5}) == {"n": 1, "mean": 0.5, "std": None, "min": 0.5, "max": 0.5,
                               "values": {5: 0.5}}


def test_aggregate_lists_metrics_in_order_of_first_appearance_over_the_seeds(tmp_path):
    files = {0: _write(tmp_path / "0.jsonl", [{"step": "b", "x": 1}]),
             1: _write(tmp_path / "1.jsonl", [{"step": "a", "y": 2}, {"step": "b", "x": 3}])}
    table = aggregate(files)
    assert list(table) == ["b.x", "a.y"]
    assert table["b.x"]["values"] == {0: 1.0, 1: 3.0} and table["a.y"]["values"] == {1: 2.0}


def test_a_claim_holds_only_when_its_mean_effect_is_above_two_stds():
    def verdict(a, b):
        table = _table({"eval_seg_gt.miou": a, "eval_seg.miou": b})
        return next(r for r in claims(table) if r["a"] == "eval_seg_gt.miou")
    # effects 100 * (a - b): 26, 50, 74 points: mean 50 > 2 * 24
    row = verdict({0: 0.5, 1: 0.75, 2: 1.0}, {0: 0.24, 1: 0.25, 2: 0.26})
    assert row["values"] == pytest.approx({0: 26.0, 1: 50.0, 2: 74.0})
    assert row["mean"] == pytest.approx(50.0) and row["std"] == pytest.approx(24.0)
    assert row["holds"] is True and row["n"] == 3
    assert row["b"] == "eval_seg.miou"
    # 25, 50, 75: mean 50 = 2 * 25, not above
    assert verdict({0: 0.5, 1: 0.75, 2: 1.0}, {0: 0.25, 1: 0.25, 2: 0.25})["holds"] is False
    # a reversed effect (AMN below CAM by as much) does not hold
    assert verdict({0: 0.24, 1: 0.25, 2: 0.26}, {0: 0.5, 1: 0.75, 2: 1.0})["holds"] is False


def test_claims_pair_only_the_seeds_having_both_metrics_and_scale_per_claim():
    table = _table({"eval_amn_cam.plateau_width": {0: 0.25, 1: 0.5, 3: 1.0},
                    "eval_cam.plateau_width": {0: 0.125, 1: 0.25, 2: 0.0}})
    rows = {r["a"]: r for r in claims(table)}
    table.update(_table({"eval_amn_cam.best_miou": {0: 0.75, 1: 0.5},
                         "eval_cam.best_miou": {0: 0.5, 1: 0.25}}))
    rows = {r["a"]: r for r in claims(table)}
    assert rows["eval_amn_cam.best_miou"]["values"] == {0: 25.0, 1: 25.0}  # in points
    assert rows["eval_amn_cam.best_miou"]["b"] == "eval_cam.best_miou"
    width = rows["eval_amn_cam.plateau_width"]  # scale 1 (threshold units), seeds 0 and 1
    assert width["values"] == {0: 0.125, 1: 0.25}
    assert width["n"] == 2 and width["holds"] is True  # mean 0.1875 > 2 * 0.0884
    empty = {r["a"]: r for r in claims({})}["eval_amn_cam.best_miou"]
    assert empty == {"claim": empty["claim"], "a": "eval_amn_cam.best_miou",
                     "b": "eval_cam.best_miou", "n": 0, "holds": None, "verdict": "not run"}
    one = claims(_table({"eval_sem_seg.miou": {0: 0.6}, "eval_amn_cam.best_miou": {0: 0.5}}))
    walk = next(r for r in one if r["a"] == "eval_sem_seg.miou")
    assert walk["n"] == 1 and walk["holds"] is None and walk["mean"] == pytest.approx(10.0)
    # AMN's four claims first (PMM's rows follow: tests/test_pmm_claims.py)
    assert [r["a"] for r in claims({})][:4] == ["eval_amn_cam.best_miou", "eval_amn_cam.plateau_width",
                                                "eval_sem_seg.miou", "eval_seg_gt.miou"]
    assert [r["b"] for r in claims({})][:4] == ["eval_cam.best_miou", "eval_cam.plateau_width",
                                                "eval_amn_cam.best_miou", "eval_seg.miou"]


def test_the_claims_table_shows_signed_effects_spread_range_and_verdict():
    rows = [{"claim": "c1", "n": 3, "mean": 50.0, "std": 24.0, "min": 26.0, "max": 74.0,
             "holds": True},
            {"claim": "c2", "n": 2, "mean": -1.004, "std": 0.5, "min": -1.5, "max": -0.001,
             "holds": False, "verdict": "reversed"},
            {"claim": "c3", "n": 1, "mean": 0.0, "std": None, "min": 0.0, "max": 0.0,
             "holds": None},
            {"claim": "c4", "n": 0},
            {"claim": "c5", "n": 2, "mean": 2.0, "std": 0.0, "min": 2.0, "max": 2.0,
             "holds": True}]
    md = claims_markdown(rows)
    assert _is_markdown_table(md)
    assert md.splitlines()[2:] == ["| c1 | 3 | +50.00 ± 24.00 | +26.00 to +74.00 | yes |",
                                   "| c2 | 2 | -1.00 ± 0.50 | -1.50 to +0.00 | no: reversed |",
                                   "| c3 | 1 | +0.00 ± - | +0.00 to +0.00 | - |",
                                   "| c4 | 0 | - | - | - |",
                                   "| c5 | 2 | +2.00 ± 0.00 | +2.00 to +2.00 | yes |"]
    assert md.splitlines()[0].count(" | ") == 4


def test_the_headline_table_scales_miou_to_points_and_skips_missing_metrics():
    table = _table({"eval_cam.best_miou": {0: 0.5, 1: 0.75}, "train_cam.mAP": {0: 55.0},
                    "eval_cam.best_threshold": {0: 0.25, 1: 0.25}})
    md = headline_markdown(table)
    assert _is_markdown_table(md)
    # 100 * (0.5, 0.75): mean 62.50, sample std 17.68 (25 / sqrt 2)
    assert md.splitlines()[2:] == ["| classifier val mAP (%) | 1 | 55.00 ± - | 55.00–55.00 |",
                                   "| CAM seed mIoU, best threshold | 2 | 62.50 ± 17.68 | "
                                   "50.00–75.00 |",
                                   "| CAM best threshold | 2 | 0.25 ± 0.00 | 0.25–0.25 |"]


def test_every_headline_metric_scales_mious_and_map_to_points_and_thresholds_not():
    names = [m for _, m, _ in repeats.HEADLINE]
    md = headline_markdown(_table({m: {0: 0.5} for m in names}))
    shown = [line.split(" | ")[2] for line in md.splitlines()[2:]]
    unit = {"train_cam.mAP": "0.50 ± -"}  # already in %
    for m in names:
        if m.endswith(("best_threshold", "plateau_width")):
            unit[m] = "0.50 ± -"  # threshold units
    assert shown == [unit.get(m, "50.00 ± -") for m in names]
    assert len(set(names)) == 14 and "eval_sem_seg.random_walk_gain" in names
    assert {"eval_seg_gt.miou", "eval_ins_seg.map", "cam_to_ir_label.miou",
            "amn_cam_to_ir_label.miou", "eval_amn_cam.best_miou", "eval_amn_cam.plateau_width",
            "eval_cam.plateau_width", "eval_seg.miou", "eval_sem_seg.miou",
            "eval_amn_cam.best_threshold"} <= set(names)


def test_the_summary_table_lists_every_metric_with_four_significant_digits():
    table = _table({"eval_cam.miou": {0: 0.4, 1: 0.6}, "train_cam.seconds": {1: 123456.0}})
    md = summary_markdown(table, [0, 1])
    first, blank, *rows = md.splitlines()
    assert first.startswith("Seeds 0, 1: ") and blank == ""
    assert _is_markdown_table("\n".join(rows))
    assert rows[2:] == ["| eval_cam.miou | 2 | 0.5 ± 0.1414 | 0.4–0.6 |",
                        "| train_cam.seconds | 1 | 1.235e+05 ± - | 1.235e+05–1.235e+05 |"]


def test_threshold_bands_are_mean_min_max_per_swept_threshold_in_threshold_order():
    table = _table({"eval_cam.sweep.0.30": {0: 0.2, 1: 0.4},
                    "eval_cam.sweep.0.05": {0: 0.1, 1: 0.3},
                    "eval_cam.best_miou": {0: 0.9},
                    "eval_amn_cam.sweep.0.5": {0: 0.5},
                    "eval_transcam.sweep.0.5": {0: 0.5}})
    bands = threshold_bands(table)
    assert list(bands) == ["CAM", "AMN"]
    assert bands["CAM"] == [(0.05, pytest.approx(0.2), 0.1, 0.3), (0.3, pytest.approx(0.3), 0.2, 0.4)]
    assert bands["AMN"] == [(0.5, 0.5, 0.5, 0.5)]
    assert threshold_bands(_table({"eval_cam.miou": {0: 0.1}})) == {}


def test_the_band_plot_draws_each_method_mean_in_percent_with_its_min_max_band(tmp_path,
                                                                               monkeypatch):
    drawn, save = {}, repeats._save_figure

    def keep(fig, out_png):
        ax = fig.axes[0]
        drawn["lines"] = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata()))
                          for ln in ax.lines}
        drawn["bands"] = {c.get_label(): c.get_paths()[0].vertices for c in ax.collections}
        drawn["labels"] = (ax.get_xlabel(), ax.get_ylabel())
        return save(fig, out_png)

    monkeypatch.setattr(repeats, "_save_figure", keep)
    table = _table({"eval_cam.sweep.0.25": {0: 0.25, 1: 0.75}, "eval_cam.sweep.0.5": {0: 0.5}})
    assert plot_bands(table, tmp_path / "b.png") == tmp_path / "b.png"
    assert (tmp_path / "b.png").stat().st_size > 0
    assert drawn["lines"] == {"CAM mean": ([0.25, 0.5], [50.0, 50.0])}
    band = drawn["bands"]["CAM min–max"]
    assert {tuple(v) for v in band} >= {(0.25, 25.0), (0.25, 75.0), (0.5, 50.0)}
    assert band[:, 1].min() == 25.0 and band[:, 1].max() == 75.0
    assert plot_bands(_table({"eval_cam.miou": {0: 0.1}}), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_write_summary_writes_the_tables_the_plot_link_and_the_json(tmp_path):
    files = {0: _write(tmp_path / "s0.jsonl", [{"step": "eval_cam", "best_miou": 0.5,
                                                "sweep": {"0.25": 0.5}}]),
             4: _write(tmp_path / "s4.jsonl", [{"step": "eval_cam", "best_miou": 0.75,
                                                "sweep": {"0.25": 0.75}}])}
    out = tmp_path / "result" / "toy" / "seeds"  # nested folders made as needed
    write_summary(files, out)
    text = write_summary(files, out)  # a rerun rewrites them
    md = (out / "summary.md").read_text()
    assert md == text + "\n\n![mIoU vs threshold over seeds](threshold_band.png)\n"
    assert (out / "threshold_band.png").stat().st_size > 0
    parts = text.split("\n\n")
    assert parts[0] == headline_markdown(aggregate(files))
    assert parts[2] == claims_markdown(claims(aggregate(files)))
    assert text.endswith(summary_markdown(aggregate(files), [0, 4]))
    assert "| CAM seed mIoU, best threshold | 2 | 62.50 ± 17.68 | 50.00–75.00 |" in text
    saved = json.loads((out / "summary.json").read_text())
    assert saved["seeds"] == [0, 4]
    assert saved["metrics_files"] == {"0": str(files[0]), "4": str(files[4])}
    assert saved["metrics"]["eval_cam.best_miou"]["values"] == {"0": 0.5, "4": 0.75}
    assert [r["n"] for r in saved["claims"]] == [0] * len(CLAIMS)
    # no sweep: no plot, and the markdown ends with its tables
    plain = {0: _write(tmp_path / "p.jsonl", [{"step": "eval_seg", "miou": 0.5}])}
    text = write_summary(plain, tmp_path / "plain")
    assert (tmp_path / "plain" / "summary.md").read_text() == text + "\n"
    assert not (tmp_path / "plain" / "threshold_band.png").exists()


def test_a_reversed_verdict_needs_the_effect_strictly_below_minus_two_stds():
    assert repeats.verdict(-2.0, 1.0) == "within noise"  # equal is not beyond
    assert repeats.verdict(-2.5, 1.0) == "reversed"
    assert repeats.verdict(2.0, 1.0) == "within noise"
    assert repeats.verdict(-3.0, None) == "one seed"


def test_every_within_one_point_claim_allows_exactly_one_point():
    # every "a within 1 point of b" claim on effects of -1.4, -1.5, -1.6 points (std 0.1):
    # -1.5 + 1 = -0.5 is below -2 x 0.1, reversed; a 2-point margin would make it hold
    within = [c for c in CLAIMS if "within 1 point" in c[0]]
    assert len(within) == 5  # BAO's, BAO-on-AMN (a) three ways, (b)
    values = {}
    for _, a, b, _, *_ in within:
        values[a] = {0: 0.486, 1: 0.485, 2: 0.484}
        values[b] = {0: 0.5, 1: 0.5, 2: 0.5}
    rows = [r for r in claims(_table(values)) if "within 1 point" in r["claim"]]
    assert len(rows) == 5
    for row in rows:
        assert row["margin"] == 1.0
        assert row["mean"] == pytest.approx(-1.5) and row["std"] == pytest.approx(0.1)
        assert row["verdict"] == "reversed" and row["holds"] is False, row["claim"]


def test_summary_json_names_each_arm_s_metrics_file_per_seed(tmp_path):
    files = {0: _write(tmp_path / "s0.jsonl", [{"step": "eval_seg", "miou": 0.5}])}
    arm = {0: _write(tmp_path / "ce" / "s0.jsonl", [{"step": "eval_seg", "miou": 0.25}])}
    write_summary(files, tmp_path / "out", arms={"ce": arm})
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["arms"] == {"ce": {"0": str(arm[0])}}
    assert saved["metrics"]["ce.eval_seg.miou"]["values"] == {"0": 0.25}
