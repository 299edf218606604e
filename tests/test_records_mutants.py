"""Output records, unit by unit (misc/io/records.py, docs/outputs.md): the record's place and
identity, what counts as a difference, and what a begin/end pair keeps, marks stale and removes.
Fast (no pipeline run): these are the tests tools/mutate.py runs against records.py's mutants."""
import hashlib
import json
import os

from misc.io.records import (
    begin_output,
    differences,
    end_output,
    file_digest,
    file_input,
    folder_input,
    is_done,
    make_record,
    mismatch,
    read_record,
    record_of,
    record_path,
    write_record,
)


def _old(folder, *names):
    """Files written long before (the filesystem clock may not tick between two writes)."""
    for name in names:
        (folder / name).write_bytes(b"old")
        os.utime(folder / name, ns=(10**9, 10**9))


def _rec(sha="1", scales=(1.0, 0.5), step="make_cam", **extra):
    return make_record(step, {"w": {"path": "w.pth", "sha256": sha}}, {"scales": scales, **extra})


def test_a_file_digest_is_the_sha256_of_its_whole_content_even_past_one_read_block(tmp_path):
    path = tmp_path / "big.bin"
    content = bytes(range(256)) * (5 * 4096 + 3)  # over 4 MiB: more than one block read
    path.write_bytes(content)
    assert file_digest(path) == hashlib.sha256(content).hexdigest()
    small = tmp_path / "small.bin"
    small.write_bytes(b"abc")
    assert file_digest(small) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_rewritten_file_gets_a_new_digest_and_an_unchanged_one_comes_from_the_cache(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"one")
    first = file_digest(path)
    assert file_digest(path) == first  # a cached answer is the same answer
    path.write_bytes(b"second version")
    assert file_digest(path) == hashlib.sha256(b"second version").hexdigest() != first


def test_a_folder_keeps_its_record_inside_and_a_file_next_to_it(tmp_path):
    folder = tmp_path / "cam.v2"  # an existing folder, even with a suffix
    folder.mkdir()
    assert record_path(folder) == folder / ".record.json"
    ckpt = tmp_path / "ckpt"  # an existing file, even without a suffix
    ckpt.write_bytes(b"w")
    assert record_path(ckpt) == tmp_path / "ckpt.record.json"
    # not there yet: a suffix means a file, none a folder
    assert record_path(tmp_path / "res50_cam.pth") == tmp_path / "res50_cam.pth.record.json"
    assert record_path(tmp_path / "ir_label") == tmp_path / "ir_label" / ".record.json"


def test_the_id_is_the_sha1_of_step_content_ids_and_settings_with_sorted_keys():
    rec = make_record("make_cam", {"w": {"path": "a/w.pth", "sha256": "abc"},
                                   "cam": {"path": "result/cam", "record": "r1"}},
                      {"scales": (1.0, 0.5), "thres": 0.3})
    identity = {"inputs": {"cam": "r1", "w": "abc"}, "settings": {"scales": [1.0, 0.5], "thres": 0.3},
                "step": "make_cam"}
    text = ('{"inputs": {"cam": "r1", "w": "abc"}, "settings": {"scales": [1.0, 0.5], '
            '"thres": 0.3}, "step": "make_cam"}')
    assert json.dumps(identity, sort_keys=True) == text
    assert rec["id"] == hashlib.sha1(text.encode()).hexdigest()
    assert rec["settings"]["scales"] == [1.0, 0.5]  # a tuple is stored as the list it reads back


def test_the_id_does_not_depend_on_the_order_flags_or_inputs_were_given_in():
    a = make_record("s", {"x": {"path": "x", "sha256": "1"}, "y": {"path": "y", "record": "2"}},
                    {"a": 1, "b": 2})
    b = make_record("s", {"y": {"path": "y", "record": "2"}, "x": {"path": "x", "sha256": "1"}},
                    {"b": 2, "a": 1})
    assert a["id"] == b["id"]


def test_the_id_changes_with_the_step_a_file_content_a_folder_record_or_a_setting():
    def rec(step="s", sha="1", folder="r", value=1):
        return make_record(step, {"w": {"path": "w", "sha256": sha},
                                  "f": {"path": "f", "record": folder}}, {"v": value})["id"]
    base = rec()
    assert len({base, rec(step="t"), rec(sha="2"), rec(folder="q"), rec(value=2)}) == 5
    # but not with where the inputs are
    moved = make_record("s", {"w": {"path": "elsewhere", "sha256": "1"},
                              "f": {"path": "other", "record": "r"}}, {"v": 1})["id"]
    assert moved == base


def test_file_and_folder_inputs_name_their_content_or_none_when_unknown(tmp_path):
    path = tmp_path / "w.pth"
    assert file_input(path) == {"path": str(path), "sha256": None}
    path.write_bytes(b"abc")
    assert file_input(path) == {"path": str(path), "sha256": hashlib.sha256(b"abc").hexdigest()}
    folder = tmp_path / "cam"
    assert folder_input(folder) == {"path": str(folder), "record": None}
    write_record(folder, {"id": "r7"}, complete=True)
    assert folder_input(folder) == {"path": str(folder), "record": "r7"}


def test_a_missing_or_unreadable_record_reads_as_none(tmp_path):
    assert read_record(tmp_path / "cam") is None
    (tmp_path / "cam").mkdir()
    (tmp_path / "cam" / ".record.json").write_text("{not json")
    assert read_record(tmp_path / "cam") is None


def test_a_record_keeps_its_start_time_when_completed_and_restarts_it_when_begun_again(tmp_path):
    folder = tmp_path / "cam"
    write_record(folder, {"id": "a"}, complete=False)
    stored = read_record(folder)
    assert stored["complete"] is False and "finished" not in stored and stored["id"] == "a"
    stored["started"] = "2000-01-01T00:00:00"  # an earlier start, as a long run has
    (folder / ".record.json").write_text(json.dumps(stored))
    write_record(folder, {"id": "a"}, complete=True)
    done = read_record(folder)
    assert done["complete"] is True and done["started"] == "2000-01-01T00:00:00"
    assert len(done["finished"]) == len("2026-11-21T15:02:40")  # to the second
    assert (folder / ".record.json").read_text().endswith("}\n")
    write_record(folder, {"id": "a"}, complete=False)  # a new run begins
    assert read_record(folder)["started"] != "2000-01-01T00:00:00"
    assert "finished" not in read_record(folder)


def test_differences_name_the_changed_inputs_and_flags_with_old_and_new_values():
    old = _rec(sha="1", scales=(1.0, 0.5), thres=0.3)
    new = _rec(sha="2", scales=(1.0,), thres=0.35)
    assert differences(old, new) == ["w.pth changed", "--scales 1.0 0.5 -> 1.0",
                                     "--thres 0.3 -> 0.35"]
    assert differences(old, old) == []
    assert differences(old, _rec(step="make_amn_cam")) == [
        "it was made by make_cam, not make_amn_cam"]


def test_a_changed_upstream_record_id_is_a_difference_and_an_unknown_one_is_not():
    def rec(record):
        return make_record("ir", {"cam": {"path": "result/cam", "record": record}}, {})
    assert differences(rec("r1"), rec("r2")) == ["result/cam changed"]
    assert differences(rec("r1"), rec(None)) == []  # the upstream folder has no record now
    assert differences(rec(None), rec("r1")) == ["result/cam changed"]
    missing = make_record("ir", {"w": {"path": "w", "sha256": None}}, {})
    assert differences(_rec(), {**missing, "step": "make_cam"}) == []


def test_a_new_flag_or_input_missing_from_the_old_record_is_a_difference():
    old = {"step": "s"}  # a record from before inputs and settings were stored
    new = make_record("s", {"w": {"path": "w", "sha256": "1"}}, {"beta": None})
    assert differences(old, new) == ["w changed", "--beta None -> None"]


def test_a_new_folder_is_begun_without_reason_and_its_record_is_incomplete(tmp_path):
    folder = tmp_path / "cam"
    a = _rec()
    assert begin_output(folder, a, ".npz", overwrite=False) is None
    assert read_record(folder)["complete"] is False and read_record(folder)["id"] == a["id"]
    assert not (folder / ".remake").exists()
    assert mismatch(folder, a) == f"{folder} is unfinished (its step was interrupted)"
    assert end_output(folder, a, ".npz") == 0
    assert read_record(folder)["complete"] is True and mismatch(folder, a) is None


def test_a_folder_of_files_without_a_record_is_remade(tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    _old(folder, "x.npz")
    (folder / "notes.txt").write_text("kept")
    reason = begin_output(folder, _rec(), ".npz", overwrite=False)
    assert reason == f"{folder} has no record of what made its files"
    assert not is_done(folder / "x.npz")
    assert end_output(folder, _rec(), ".npz") == 1  # never rewritten: removed
    assert not (folder / "x.npz").exists() and (folder / "notes.txt").exists()
    assert not (folder / ".remake").exists()


def test_a_folder_without_a_record_but_without_output_files_is_begun_without_reason(tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an output")
    assert begin_output(folder, _rec(), ".npz", overwrite=False) is None
    assert not (folder / ".remake").exists()


def test_a_matching_record_keeps_the_files_and_another_one_marks_them_stale(tmp_path):
    folder = tmp_path / "cam"
    a, b = _rec(sha="1"), _rec(sha="2")
    begin_output(folder, a, ".npz", overwrite=False)
    _old(folder, "x.npz")
    end_output(folder, a, ".npz")
    assert begin_output(folder, a, ".npz", overwrite=False) is None
    assert is_done(folder / "x.npz") and not (folder / ".remake").exists()
    assert mismatch(folder, b) == f"w.pth changed since {folder} was made"
    assert begin_output(folder, b, ".npz", overwrite=False) == f"w.pth changed since {folder} was made"
    assert (folder / "x.npz").read_bytes() == b"old" and not is_done(folder / "x.npz")
    assert read_record(folder)["id"] == b["id"] and read_record(folder)["complete"] is False


def test_overwrite_remakes_files_that_match(tmp_path):
    folder = tmp_path / "cam"
    a = _rec()
    begin_output(folder, a, ".npz", overwrite=False)
    _old(folder, "x.npz", "y.npz")
    end_output(folder, a, ".npz")
    assert begin_output(folder, a, ".npz", overwrite=True) == "--overwrite True"
    assert not is_done(folder / "x.npz")
    marker = folder / ".remake"
    os.utime(folder / "y.npz", ns=(marker.stat().st_mtime_ns + 10**9,) * 2)  # y rewritten
    assert end_output(folder, a, ".npz") == 1
    assert sorted(p.name for p in folder.glob("*.npz")) == ["y.npz"]


def test_a_repeated_remake_restamps_the_marker_so_files_of_the_first_try_are_stale(tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    (folder / "x.npz").write_bytes(b"x")
    begin_output(folder, _rec(), ".npz", overwrite=True)
    marker = folder / ".remake"
    os.utime(marker, ns=(10**18, 10**18))  # a marker of 2001
    os.utime(folder / "x.npz", ns=(15 * 10**17, 15 * 10**17))  # x rewritten in 2017
    assert is_done(folder / "x.npz")
    begin_output(folder, _rec(), ".npz", overwrite=True)  # a new --overwrite run: a new marker
    assert not is_done(folder / "x.npz")


def test_a_file_written_at_the_marker_time_is_done_and_one_before_is_not(tmp_path):
    (tmp_path / ".remake").touch()
    os.utime(tmp_path / ".remake", ns=(5 * 10**17, 5 * 10**17))
    for name, t in (("same.npz", 5 * 10**17), ("before.npz", 5 * 10**17 - 1),
                    ("after.npz", 5 * 10**17 + 1)):
        (tmp_path / name).write_bytes(b"m")
        os.utime(tmp_path / name, ns=(t, t))
    assert is_done(tmp_path / "same.npz") and is_done(tmp_path / "after.npz")
    assert not is_done(tmp_path / "before.npz")
    assert not is_done(tmp_path / "absent.npz")
    (tmp_path / ".remake").unlink()
    assert is_done(tmp_path / "before.npz")  # no remake in progress: every file there is done


def test_end_output_removes_only_stale_files_of_the_suffix_and_counts_them(tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    _old(folder, "a.npz", "b.npz", "c.png")
    (folder / "d.npz").mkdir()  # not a file: never removed
    begin_output(folder, _rec(), ".npz", overwrite=True)
    later = (folder / ".remake").stat().st_mtime_ns + 10**9
    os.utime(folder / "b.npz", ns=(later, later))
    assert end_output(folder, _rec(), ".npz") == 1
    assert sorted(p.name for p in folder.iterdir()) == [".record.json", "b.npz", "c.png", "d.npz"]


def test_end_output_without_a_remake_removes_nothing(tmp_path):
    folder = tmp_path / "cam"
    begin_output(folder, _rec(), ".npz", overwrite=False)
    (folder / "a.npz").write_bytes(b"a")
    os.utime(folder / "a.npz", ns=(1, 1))
    assert end_output(folder, _rec(), ".npz") == 0 and (folder / "a.npz").exists()


def test_a_checkpoint_record_names_the_file_it_replaces_and_then_its_content(tmp_path):
    ckpt = tmp_path / "res50_cam.pth"
    ckpt.write_bytes(b"old weights")
    rec = _rec()
    begin_output(ckpt, rec, "", overwrite=False)
    stored = read_record(ckpt)
    assert stored["replaces"] == hashlib.sha256(b"old weights").hexdigest()
    assert stored["complete"] is False
    assert record_of(ckpt)["id"] == rec["id"]  # unfinished, the file it was begun on is there
    ckpt.write_bytes(b"new weights")
    assert record_of(ckpt) is None  # unfinished, and the file is not the one it replaces
    assert end_output(ckpt, rec) == 0
    done = read_record(ckpt)
    assert done["sha256"] == hashlib.sha256(b"new weights").hexdigest() and done["complete"]
    assert record_of(ckpt)["id"] == rec["id"] and mismatch(ckpt, rec) is None
    assert mismatch(ckpt, _rec(sha="9")) == f"w.pth changed since {ckpt} was made"


def test_a_checkpoint_replaced_by_hand_after_its_record_has_no_record(tmp_path):
    ckpt = tmp_path / "res50_cam.pth"
    ckpt.write_bytes(b"trained")
    rec = _rec()
    begin_output(ckpt, rec, "", overwrite=False)
    end_output(ckpt, rec)
    ckpt.write_bytes(b"released reference weights")
    assert record_of(ckpt) is None
    assert mismatch(ckpt, _rec(sha="9")) is None  # given by hand: not judged
    # a complete record without a content hash describes whatever file is there
    write_record(ckpt, rec, complete=True)
    assert record_of(ckpt)["id"] == rec["id"]


def test_a_new_checkpoint_file_is_recorded_with_its_content_and_without_replaces(tmp_path):
    ckpt = tmp_path / "new.pth"
    rec = _rec()
    assert begin_output(ckpt, rec, "", overwrite=False) is None
    assert "replaces" not in read_record(ckpt)
    assert record_of(ckpt) == read_record(ckpt)  # not a file yet: the record as stored
    ckpt.write_bytes(b"w")
    end_output(ckpt, rec)
    assert not (tmp_path / "new.pth" / ".remake").exists()
    assert read_record(ckpt)["sha256"] == hashlib.sha256(b"w").hexdigest()


def test_a_folder_record_of_a_folder_is_read_as_stored_whatever_its_state(tmp_path):
    folder = tmp_path / "cam"
    write_record(folder, {"id": "x", "step": "s", "inputs": {}, "settings": {}}, complete=False)
    assert record_of(folder)["id"] == "x"
    assert mismatch(tmp_path / "nothing", _rec()) is None  # no record: not judged


def test_every_reason_of_a_remake_is_listed_comma_separated(tmp_path):
    folder = tmp_path / "cam"
    a, b = _rec(sha="1", scales=(1.0,)), _rec(sha="2", scales=(0.5,))
    begin_output(folder, a, ".npz", overwrite=False)
    end_output(folder, a, ".npz")
    want = f"w.pth changed, --scales 1.0 -> 0.5 since {folder} was made"
    assert mismatch(folder, b) == want
    assert begin_output(folder, b, ".npz", overwrite=False) == want


def test_end_output_counts_every_stale_file_it_removes(tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    _old(folder, "a.npz", "b.npz", "c.npz")
    begin_output(folder, _rec(), ".npz", overwrite=False)  # no record: remade
    assert end_output(folder, _rec(), ".npz") == 3 and not list(folder.glob("*.npz"))


def test_a_record_that_does_not_say_it_is_complete_is_unfinished(tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    rec = _rec()
    (folder / ".record.json").write_text(json.dumps(rec))  # no "complete" field
    assert mismatch(folder, rec) == f"{folder} is unfinished (its step was interrupted)"


def test_end_output_without_a_suffix_removes_every_stale_file_of_the_folder(tmp_path):
    folder = tmp_path / "pred"
    folder.mkdir()
    _old(folder, "a.png", "b.npz")
    begin_output(folder, _rec(), ".png", overwrite=True)
    assert end_output(folder, _rec()) == 2
