"""The report: the results table from metrics.jsonl and the example picture grid."""
import json

import numpy as np
from PIL import Image

from misc.io.maps import save_maps
from misc.io.png import save_png
from misc.report.run_report import foreground_heatmap, latest_records, plot_examples, results_table


def test_table_takes_the_latest_record_and_survives_a_cut_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    old = {"step": "eval_sem_seg", "split": "train", "miou": 0.1}
    new = {**old, "miou": 0.574}
    metrics.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n" + '{"step": "eval_se')
    records = latest_records(metrics)
    assert records["eval_sem_seg"]["miou"] == 0.574
    table = results_table(records, {"train_seg": 12.0}, ["eval_sem_seg", "train_seg", "eval_seg"])
    assert "| eval_sem_seg | earlier | pseudo-mask mIoU 57.4 (train) |" in table
    assert "| train_seg | 12.0 |" in table and "eval_seg" not in table
    assert table.splitlines()[-1] == "| total | 12.0 | |"


def test_heatmap_uses_foreground_channels_only(tmp_path):
    fg = np.full((1, 4, 5), 0.3, np.float32)
    save_maps(tmp_path / "cam.npz", np.array([2]), fg, fg)
    amn = np.concatenate([np.ones_like(fg), fg])  # a saturated background channel first
    save_maps(tmp_path / "amn.npz", np.array([2]), amn, amn)
    for name in ("cam.npz", "amn.npz"):
        np.testing.assert_allclose(foreground_heatmap(tmp_path / name), 0.3, atol=1e-5)  # 16-bit
    assert foreground_heatmap(tmp_path / "missing.npz") is None


def test_example_grid_leaves_out_missing_columns(tmp_path):
    images, cam = {}, tmp_path / "cam"
    for i in ("a", "b"):
        images[i] = tmp_path / f"{i}.jpg"
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(images[i])
        save_maps(cam / f"{i}.npz", np.array([0]), np.zeros((1, 6, 8), np.float32),
                  np.ones((1, 24, 32), np.float32))
        save_png(tmp_path / "gt" / f"{i}.png", np.ones((24, 32), np.uint8))
    assert plot_examples(images, {"AMN": tmp_path / "none"}, {}, tmp_path / "x.png") is None
    png = plot_examples(images, {"CAM": cam, "AMN": tmp_path / "none"},
                        {"ground truth": tmp_path / "gt"}, tmp_path / "grid.png")
    with Image.open(png) as grid:
        width, height = grid.size
    assert abs(width / height - 3 / 2) < 0.05  # two rows of 3 panels: image, CAM, ground truth
    (cam / "b.npz").unlink()  # a map missing for one image: a blank cell, the columns stay put
    png = plot_examples(images, {"CAM": cam}, {"ground truth": tmp_path / "gt"},
                        tmp_path / "grid2.png")
    with Image.open(png) as grid:
        assert grid.size == (width, height)


def test_instance_row_and_column(tmp_path):
    from misc.irn.ins_seg import InstanceResult, save_instances
    from misc.report.run_report import colour_instances
    rec = {"step": "eval_ins_seg", "split": "train", "map": 0.377, "map@0.5": 0.377,
           "map@0.25": 0.5, "map@0.75": None}
    table = results_table({"eval_ins_seg": rec}, {}, ["eval_ins_seg"])
    assert "| eval_ins_seg | earlier | instance mAP@0.5 37.7 (@0.25 50.0, @0.75 -; train) |" in table
    labels = np.zeros((24, 32), np.uint16)
    labels[2:10, 3:12], labels[12:20, 15:30] = 1, 2
    rgb = colour_instances(labels)
    assert (rgb[0, 0] == 0).all() and len({tuple(rgb[5, 5]), tuple(rgb[15, 20])}) == 2
    images = {}
    for i in ("a", "b"):
        images[i] = tmp_path / f"{i}.jpg"
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(images[i])
        save_png(tmp_path / "gt" / f"{i}.png", np.ones((24, 32), np.uint8))
    save_instances(tmp_path / "ins" / "a.npz", InstanceResult(
        labels, np.array([0.9, 0.5], np.float32), np.array([0, 1])))
    png = plot_examples(images, {}, {"ground truth": tmp_path / "gt"}, tmp_path / "grid.png",
                        instance_dirs={"instances": tmp_path / "ins"})
    with Image.open(png) as grid:  # two rows of 3 panels; b's instance cell is blank
        assert abs(grid.size[0] / grid.size[1] - 3 / 2) < 0.05
    assert plot_examples(images, {}, {}, tmp_path / "x.png",
                         instance_dirs={"instances": tmp_path / "ins"}) is not None


def _sweep(values: list[float], start: float = 0.05) -> dict[str, float]:
    """A hand-made sweep: thresholds start, start + 0.05, ... with the given mIoUs."""
    return {f"{start + 0.05 * i:.2f}": v for i, v in enumerate(values)}


def test_plateau_contiguous_and_detached():
    from misc.report.run_report import plateau
    # best 0.50 @ 0.20; 0.47 (exactly 3 points lower) is in, 0.46 out
    assert plateau(_sweep([0.30, 0.46, 0.48, 0.50, 0.47, 0.40])) == (0.15, 0.25)
    # a detached bump at 0.35 qualifies but lies beyond a dip: only the run around the best
    assert plateau(_sweep([0.40, 0.49, 0.50, 0.30, 0.30, 0.30, 0.48])) == (0.10, 0.15)
    # a tie of bests: the run around the lowest one
    assert plateau(_sweep([0.50, 0.20, 0.50])) == (0.05, 0.05)
    assert plateau(_sweep([0.50, 0.49, 0.48]), within=0.01) == (0.05, 0.10)
    assert plateau({"0.30": 0.2, "0.05": 0.1, "0.10": 0.19}) == (0.10, 0.30)  # unsorted keys
    assert plateau({}) is None


def test_random_walk_gain():
    from misc.report.run_report import random_walk_gain
    records = {"eval_sem_seg": {"miou": 0.60}, "eval_amn_cam": {"best_miou": 0.52, "miou": 0.4}}
    assert abs(random_walk_gain(records) - 0.08) < 1e-12
    assert random_walk_gain({"eval_sem_seg": {"miou": 0.6}}) is None


def test_report_shows_gain_and_plateaus(tmp_path):
    from misc.report.run_report import write_report
    metrics = tmp_path / "metrics.jsonl"
    cam = {"step": "eval_cam", "split": "train", "threshold": 0.15, "miou": 0.40,
           "best_miou": 0.42, "best_threshold": 0.20,
           "sweep": _sweep([0.30, 0.40, 0.41, 0.42, 0.38, 0.35])}
    amn = {"step": "eval_amn_cam", "split": "train", "threshold": 0.25, "miou": 0.50,
           "best_miou": 0.517, "best_threshold": 0.40,
           "sweep": _sweep([0.40, 0.45, 0.49, 0.50, 0.51, 0.515, 0.517, 0.516, 0.40])}
    sem = {"step": "eval_sem_seg", "split": "train", "miou": 0.593}
    metrics.write_text("".join(json.dumps(r) + "\n" for r in (cam, amn, sem)))
    out = tmp_path / "report.md"
    write_report(metrics, {}, out, ["eval_cam", "eval_amn_cam", "eval_sem_seg"])
    text = out.read_text()
    assert ("- random walk gain: +7.6 points (pseudo-mask mIoU 59.3 on train minus AMN seed "
            "best 51.7 on train)") in text
    within = "plateau (mIoU within 3 points of its best, contiguous around it): "
    assert f"- CAM {within}0.10-0.20, width 0.10" in text
    assert f"- AMN {within}0.15-0.40, width 0.25" in text
    only_cam = tmp_path / "cam.jsonl"
    only_cam.write_text(json.dumps(cam) + "\n")
    write_report(only_cam, {}, out, ["eval_cam"])
    assert "random walk gain" not in out.read_text() and "CAM plateau" in out.read_text()


def test_the_example_grid_shows_irn_boundaries_when_each_image_has_one(tmp_path):
    images = {}
    for i in ("a", "b"):
        images[i] = tmp_path / f"{i}.jpg"
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(images[i])
        save_png(tmp_path / "gt" / f"{i}.png", np.ones((24, 32), np.uint8))
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (24, 1))
    png = plot_examples(images, {}, {"ground truth": tmp_path / "gt"}, tmp_path / "grid.png",
                        boundaries={"a": ramp, "b": ramp})
    with Image.open(png) as grid:  # two rows of image, boundary, ground truth
        assert abs(grid.size[0] / grid.size[1] - 3 / 2) < 0.05
    png = plot_examples(images, {}, {"ground truth": tmp_path / "gt"}, tmp_path / "grid2.png",
                        boundaries={"a": ramp})  # one image without: no boundary column
    with Image.open(png) as grid:
        assert abs(grid.size[0] / grid.size[1] - 2 / 2) < 0.05


def test_pmm_rows_name_ppmgs_final_masks_and_the_second_round():
    records = {"make_sem_seg": {"step": "make_sem_seg", "split": "train", "images": 100,
                                "ppmg": 0.4012, "best_miou": 0.3718, "best_threshold": 0.25},
               "eval_seg_cp": {"step": "eval_seg_cp", "split": "val", "miou": 0.412, "crf": True},
               "train_seg_cp": {"step": "train_seg_cp", "final_train_loss": 0.5}}
    table = results_table(records, {}, ["make_sem_seg", "train_seg_cp", "eval_seg_cp"])
    assert ("| make_sem_seg | earlier | PPMG masks 40.1 vs the constant score's best 37.2 at "
            "0.25, same walks (100 train images) |") in table
    assert ("| eval_seg_cp | earlier | DeepLab round 2, on round 1's masks (CP) mIoU 41.2 "
            "(val, CRF) |") in table
    assert "| train_seg_cp | earlier | final train loss 0.500 |" in table
