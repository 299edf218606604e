"""coco14/prepare.py, the cases the mutation run (docs/mutation.md) found unpinned: the checks on
annotation files and splits, the crowd default, the multi-hot value, the stats (skipped, seconds,
rate), the summary line and the CLI's error path, on the tiny root of tests/test_coco14.py."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coco14 import prepare as prep
from coco14.dataloader import LABELS_FILE
from tests.test_coco14 import CAT_IDS, rect, write_coco

CATS = [{"id": c, "name": f"cat_{c}"} for c in CAT_IDS]
PATH = Path("instances_x2014.json")


def test_images_per_second_is_written_over_seconds_and_nan_without_time():
    assert prep.PrepareStats(5, 4, 1, True, 0.5).images_per_second == pytest.approx(8.0)
    assert prep.PrepareStats(5, 4, 1, True, 2.0).images_per_second == pytest.approx(2.0)
    assert math.isnan(prep.PrepareStats(5, 0, 5, False, 0.0).images_per_second)


def test_category_ids_must_be_80_distinct():
    names, index = prep.category_table(list(reversed(CATS)), PATH)
    assert names[0] == "cat_1" and index[90] == 79 and index[13] == 11
    twice = CATS[:-1] + [dict(CATS[0])]  # 80 entries, 79 ids
    with pytest.raises(ValueError, match="defines 80 categories"):
        prep.category_table(twice, PATH)


def _data(anns):
    return {"images": [{"id": 9, "height": 4, "width": 5}], "annotations": anns,
            "categories": CATS}


def test_annotations_of_unknown_images_or_categories_are_refused():
    _, index = prep.category_table(CATS, PATH)
    bad_img = _data([{"id": 7, "image_id": 8, "category_id": 1, "segmentation": []}])
    with pytest.raises(ValueError, match="annotation 7 refers to an unknown image"):
        prep.image_records(bad_img, "train", index, PATH)
    bad_cat = _data([{"id": 6, "image_id": 9, "category_id": 12, "segmentation": []}])
    with pytest.raises(ValueError, match="annotation 6 refers to an unknown category"):
        prep.image_records(bad_cat, "train", index, PATH)


def test_an_annotation_without_iscrowd_is_a_single_instance_and_labels_are_0_or_1():
    _, index = prep.category_table(CATS, PATH)
    data = _data([{"id": 1, "image_id": 9, "category_id": 1, "segmentation": rect(0, 0, 2, 2)},
                  {"id": 2, "image_id": 9, "category_id": 1, "segmentation": rect(2, 2, 4, 4)}])
    (rec,) = prep.image_records(data, "train", index, PATH)
    assert [i.crowd for i in rec.instances] == [False, False]
    vec = prep.label_vector(rec)
    assert vec[0] == 1 and vec.sum() == 1 and vec.dtype == np.uint8


def test_every_polygon_of_a_multi_polygon_segmentation_is_painted():
    rec = prep.ImageRecord("000000000009", "train", 6, 8, (
        prep.Instance(2, False, 1, rect(0, 0, 2, 2) + rect(5, 3, 7, 5)),))
    label = prep.render_semantic(rec)
    assert label[1, 1] == 3 and label[4, 6] == 3 and label[4, 1] == 0


def test_segmentation_formats_that_are_refused():
    with pytest.raises(ValueError, match="unknown segmentation format dict"):
        prep.instance_rle({"size": [4, 5]}, 4, 5)
    with pytest.raises(ValueError, match=r"RLE size \[3, 5\] differs"):
        prep.instance_rle({"size": [3, 5], "counts": [20]}, 4, 5)


def test_category_names_with_a_comma_or_a_quote_cannot_go_to_the_csv():
    vec = np.zeros(2, np.uint8)
    assert prep.labels_csv_text(["a", "b"], [("1", vec)]) == "image_id,a,b\n1,0,0\n"
    for bad in ("a,b", 'a"b'):
        with pytest.raises(ValueError, match="cannot be written"):
            prep.labels_csv_text([bad, "c"], [("1", vec)])


def test_unknown_or_no_splits_are_refused(tmp_path):
    with pytest.raises(ValueError, match="choose among"):
        prep.annotation_paths(tmp_path, None, ["test"])
    with pytest.raises(ValueError, match="choose among"):
        prep.annotation_paths(tmp_path, None, [])


def test_gt_folder_removes_a_half_written_csv(tmp_path):
    stale = tmp_path / f".{LABELS_FILE}.abc.csv.tmp"
    stale.write_text("half")
    prep.gt_folder(tmp_path)
    assert not stale.exists()


class _Layout:
    base, kind = Path("/nowhere"), "official"

    def path(self, img_id, split):
        return Path("/nowhere") / split / img_id


def test_missing_images_name_the_split_and_the_first_three():
    recs = [prep.ImageRecord(f"{i:012d}", "val", 1, 1, ()) for i in range(1, 5)]
    with pytest.raises(FileNotFoundError) as err:
        prep.check_images_exist(_Layout(), recs, PATH)
    text = str(err.value)
    assert "4 of the 4 images" in text and "unzip val2014.zip" in text
    assert "000000000003" in text and "000000000004" not in text
    with pytest.raises(FileNotFoundError, match="unzip val2014.zip"):
        prep.check_images_exist(_Layout(), recs[:1], PATH)


def test_stats_count_skipped_images_and_sum_the_seconds_of_both_splits(tmp_path, monkeypatch):
    root = write_coco(tmp_path / "coco")
    clock = iter([10.0, 13.0, 20.0, 24.5])
    monkeypatch.setattr(prep.time, "perf_counter", lambda: next(clock))
    first = prep.prepare(root)
    assert (first.images, first.written, first.skipped, first.seconds) == (5, 5, 0, 7.5)


def test_the_summary_line_and_the_cli_error_path(tmp_path, capsys):
    root = write_coco(tmp_path / "coco")
    prep.main(["--coco14_root", str(root)])
    out = capsys.readouterr().out
    assert out.startswith("5 images: 5 PNGs written (") and " img/s), 0 already present" in out
    assert out.rstrip().endswith("; labels written")
    prep.main(["--coco14_root", str(root)])
    assert capsys.readouterr().out == \
        "5 images: 0 PNGs written, 5 already present; labels unchanged\n"
    with pytest.raises(SystemExit):
        prep.parse_args([])
    run = subprocess.run([sys.executable, "-m", "coco14.prepare", "--coco14_root",
                          str(tmp_path / "none")], capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("coco14.prepare: ")


def test_differing_categories_name_both_files(tmp_path):
    root = write_coco(tmp_path / "coco")
    val = root / "annotations" / "instances_val2014.json"
    data = json.loads(val.read_text())
    data["categories"][0]["name"] = "other"
    val.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="instances_val2014.json and .*instances_train2014.json"):
        prep.prepare(root)
