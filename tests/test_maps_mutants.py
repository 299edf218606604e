"""The map file codec (misc/io/maps.py): 16-bit quantisation of [0, 1], second differences along
both axes, low and high byte planes. Each expected value is worked out by hand from that format;
fast, the tests tools/mutate.py runs against maps.py's mutants."""
import numpy as np
import pytest

from misc.errors import BadInput, MissingInput
from misc.io.maps import load_maps, save_maps


def _hand_file(path, keys, cam_lo, cam_hi, hr_lo=None, hr_hi=None, **extra):
    """A map file written from byte planes worked out by hand (the stored format)."""
    hr_lo = cam_lo if hr_lo is None else hr_lo
    hr_hi = cam_hi if hr_hi is None else hr_hi
    np.savez_compressed(path, keys=np.asarray(keys, np.int64),
                        cam_lo=np.asarray(cam_lo, np.uint8), cam_hi=np.asarray(cam_hi, np.uint8),
                        high_res_lo=np.asarray(hr_lo, np.uint8),
                        high_res_hi=np.asarray(hr_hi, np.uint8), **extra)


def test_the_stored_planes_are_second_differences_of_the_16_bit_levels(tmp_path):
    # one row 0, 1, 2, 3 levels: first differences 0 1 1 1, second 0 1 0 0; one row, so the
    # vertical differences leave it as it is; all below 256: high bytes 0
    maps = np.array([[[0, 1, 2, 3]]], np.float32) / 65535
    save_maps(tmp_path / "a.npz", np.array([4]), maps, maps)
    with np.load(tmp_path / "a.npz") as data:
        assert sorted(data.files) == ["cam_hi", "cam_lo", "high_res_hi", "high_res_lo", "keys"]
        np.testing.assert_array_equal(data["cam_lo"], [[[0, 1, 0, 0]]])
        np.testing.assert_array_equal(data["cam_hi"], [[[0, 0, 0, 0]]])
        assert data["keys"].dtype == np.int64 and data["keys"].tolist() == [4]
    # a column 0, 300: first difference 300 = 1 * 256 + 44, then second -300 = 65236 (mod 2^16)
    col = np.array([[[0.0], [300 / 65535], [0.0]]], np.float32)
    save_maps(tmp_path / "b.npz", np.array([0]), col, col)
    with np.load(tmp_path / "b.npz") as data:
        # levels 0 300 0 -> first diffs 0 300 -300 -> second 0 300 -600 (= 64936 = 253*256 + 168)
        np.testing.assert_array_equal(data["cam_lo"][0, :, 0], [0, 44, 168])
        np.testing.assert_array_equal(data["cam_hi"][0, :, 0], [0, 1, 253])


def test_a_file_written_by_hand_in_the_format_decodes_to_its_levels(tmp_path):
    # levels [[65535, 0], [0, 65535]]; second differences along W: [[65535, -131070],
    # [0, 65535]]; then along H, twice: [[65535, -131070], [-131070, 327675]]; mod 2^16:
    # [[65535, 2], [2, 65531]]: low bytes [[255, 2], [2, 251]], high [[255, 0], [0, 255]]
    _hand_file(tmp_path / "h.npz", [1], [[[255, 2], [2, 251]]], [[[255, 0], [0, 255]]])
    out = load_maps(tmp_path / "h.npz")
    np.testing.assert_array_equal(out["high_res"], [[[1.0, 0.0], [0.0, 1.0]]])
    np.testing.assert_array_equal(out["cam"], [[[1.0, 0.0], [0.0, 1.0]]])
    assert out["cam"].dtype == np.float32 and out["keys"].tolist() == [1]
    assert "label" not in out
    # the one-row file of the test above, by hand: levels 0 1 2 3
    _hand_file(tmp_path / "r.npz", [0], [[[0, 1, 0, 0]]], [[[0, 0, 0, 0]]])
    np.testing.assert_array_equal(load_maps(tmp_path / "r.npz")["cam"] * 65535, [[[0, 1, 2, 3]]])


def test_maps_come_back_within_half_a_level_and_clipped_to_zero_one(tmp_path):
    rng = np.random.default_rng(0)
    cam = rng.random((3, 5, 7)).astype(np.float32)
    cam[0, 0, 0], cam[1, 2, 3], cam[2, 4, 6] = 1.0, 0.0, 1.0
    high = rng.random((3, 9, 11)).astype(np.float32)
    high[0, 1, 1], high[1, 1, 1], high[2, 0, 0] = 1.7, -0.4, 1.0  # outside [0, 1]: clipped
    save_maps(tmp_path / "m.npz", np.array([2, 7, 14]), cam, high)
    out = load_maps(tmp_path / "m.npz")
    assert out["keys"].tolist() == [2, 7, 14] and out["keys"].dtype == np.int64
    assert out["cam"].shape == (3, 5, 7) and out["high_res"].shape == (3, 9, 11)
    assert np.abs(out["cam"] - cam).max() <= 0.5 / 65535 + 1e-7
    want = np.clip(high, 0, 1)
    assert np.abs(out["high_res"] - want).max() <= 0.5 / 65535 + 1e-7
    assert out["high_res"][0, 1, 1] == 1.0 and out["high_res"][1, 1, 1] == 0.0
    assert out["cam"][0, 0, 0] == 1.0 and out["cam"][2, 4, 6] == 1.0
    # the nearest level: 0.25 is 16383.75 levels -> 16384
    quarter = np.full((1, 2, 2), 0.25, np.float32)
    save_maps(tmp_path / "q.npz", np.array([0]), quarter, quarter)
    assert load_maps(tmp_path / "q.npz")["cam"][0, 0, 0] * 65535 == pytest.approx(16384, abs=1e-3)


def test_hard_labels_are_stored_exactly_when_given(tmp_path):
    maps = np.zeros((2, 3, 3), np.float32)
    label = np.array([[0, 1, 255], [2, 2, 0], [1, 0, 21]], np.uint8)
    save_maps(tmp_path / "l.npz", np.array([0, 1]), maps, maps, label=label)
    out = load_maps(tmp_path / "l.npz")
    assert out["label"].dtype == np.uint8
    np.testing.assert_array_equal(out["label"], label)
    save_maps(tmp_path / "n.npz", np.array([0, 1]), maps, maps)
    assert "label" not in load_maps(tmp_path / "n.npz")


def test_a_missing_map_file_names_the_step_that_makes_it(tmp_path):
    with pytest.raises(MissingInput) as err:
        load_maps(tmp_path / "cam" / "2007_000032.npz")
    assert str(tmp_path / "cam" / "2007_000032.npz") in str(err.value)
    assert "make_cam" in str(err.value) and "make_amn_cam" in str(err.value)


def test_a_corrupt_map_file_is_a_bad_input_that_says_to_delete_and_rerun(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="delete it and rerun"):
        load_maps(path)
    np.savez_compressed(path, keys=np.array([0]))  # planes missing
    with pytest.raises(BadInput, match=str(path)):
        load_maps(path)


def test_a_map_file_carrying_pickled_objects_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "p.npz"
    _hand_file(path, [0], [[[0]]], [[[0]]])
    with np.load(path) as data:
        arrays = dict(data)
    arrays["keys"] = np.array([{"a": 1}], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(BadInput):
        load_maps(path)
