import csv

import numpy as np
import pytest
from PIL import Image

from kit.bench import baseline_encode_label_map, baseline_rle_encode, fake_fisheye_label_map
from kit.rle import (
    SubmissionError,
    SubmissionWriter,
    encode_label_map,
    resize_nearest,
    rle_decode,
    rle_encode,
    validate_submission,
    write_submission,
)


@pytest.mark.parametrize(
    "mask, expected",
    [
        # 2x3, row-major flat = 1 0 0 | 0 1 1 → runs at 1 (len 1) and 5 (len 2)
        ([[1, 0, 0], [0, 1, 1]], "1 1 5 2"),
        # first and last pixels set: flat = 1 0 0 0 0 1
        ([[1, 0, 0], [0, 0, 1]], "1 1 6 1"),
        # a run that wraps from the end of row 0 into row 1 (row-major, not column-major)
        ([[0, 0, 1], [1, 0, 0]], "3 2"),
        ([[1, 1, 1], [1, 1, 1]], "1 6"),
        ([[0, 0, 0], [0, 0, 0]], "-1"),
        # column-major (Kaggle) order would give "1 2" here; row-major gives two runs
        ([[1, 0], [1, 0]], "1 1 3 1"),
    ],
)
def test_rle_encode_hand_worked(mask, expected):
    assert rle_encode(np.array(mask, dtype=np.uint8)) == expected


@pytest.mark.parametrize("seed", range(5))
def test_rle_encode_matches_baseline_and_round_trips(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    mask = (rng.random(shape) < rng.uniform(0.05, 0.95)).astype(np.uint8)
    rle = rle_encode(mask)
    if mask.any():
        assert rle == baseline_rle_encode(mask)
    assert np.array_equal(rle_decode(rle, shape), mask)


def test_rle_decode_hand_worked():
    expected = np.array([[1, 0, 0], [0, 1, 1]], np.uint8)
    assert np.array_equal(rle_decode("1 1 5 2", (2, 3)), expected)
    assert rle_decode("-1", (2, 3)).sum() == 0


@pytest.mark.parametrize(
    "rle, message",
    [
        ("1 2 3", "even count"),
        ("0 2", "start 0 < 1"),
        ("1 0", "length 0 < 1"),
        ("5 2 1 1", "out of order"),
        ("1 3 3 1", "overlapping"),
        ("6 2", "> 6 pixels"),
        ("1 x", "'x' is not an integer"),
    ],
)
def test_rle_decode_rejects_bad_strings(rle, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(rle, (2, 3))


@pytest.mark.parametrize("size_in", [(1920, 1080), (2048, 1024), (480, 270), (1000, 333), (960, 540), (100, 50)])
def test_resize_nearest_matches_pil(size_in):
    rng = np.random.default_rng(1)
    w, h = size_in
    label = rng.integers(0, 13, (h, w)).astype(np.uint8)
    ours = resize_nearest(label, (960, 540))
    pil = np.array(Image.fromarray(label).resize((960, 540), Image.NEAREST))
    assert np.array_equal(ours, pil)


@pytest.mark.parametrize("seed", range(4))
def test_encode_label_map_equals_per_class_encoding_of_resized_map(seed):
    rng = np.random.default_rng(seed)
    label = fake_fisheye_label_map(rng, size=(1920, 1080))
    resized = np.array(Image.fromarray(label).resize((960, 540), Image.NEAREST))
    expected = [rle_encode(resized == c) for c in range(12)]
    assert encode_label_map(label) == expected
    assert encode_label_map(resized) == baseline_encode_label_map(resized)


def test_encode_label_map_absent_class_and_background_only():
    label = np.full((540, 960), 255, np.uint8)
    label[0, :5] = 3
    strings = encode_label_map(label)
    assert strings[3] == "1 5"
    assert all(s == "-1" for c, s in enumerate(strings) if c != 3)


def _sample(tmp_path, n_images):
    path = tmp_path / "sample_submission.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "mask_rle"])
        for i in range(n_images):
            for c in range(12):
                w.writerow([f"TEST_{i:04d}_class_{c}", "-1"])
    return path


def _maps(n, seed=0):
    rng = np.random.default_rng(seed)
    return {f"TEST_{i:04d}": fake_fisheye_label_map(rng, size=(480, 270)) for i in range(n)}


@pytest.mark.parametrize("order", ["sample", "reversed"])
def test_write_submission_decodes_back_in_sample_order(tmp_path, order):
    sample = _sample(tmp_path, 3)
    maps = _maps(3)
    items = list(maps.items())
    if order == "reversed":
        items = items[::-1]
    out = write_submission(tmp_path / "submission.csv", items, sample)
    assert validate_submission(out, sample) == 36
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "mask_rle"]
    assert [r[0] for r in rows[1:]] == [f"TEST_{i:04d}_class_{c}" for i in range(3) for c in range(12)]
    for image_id, label in maps.items():
        resized = resize_nearest(label, (960, 540))
        for c in range(12):
            rle = rows[1 + int(image_id[-4:]) * 12 + c][1]
            assert np.array_equal(rle_decode(rle, (540, 960)), (resized == c).astype(np.uint8))


def test_write_submission_refuses_to_overwrite_and_leaves_nothing_on_failure(tmp_path):
    sample = _sample(tmp_path, 2)
    out = tmp_path / "submission.csv"
    out.write_text("earlier run\n")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_submission(out, _maps(2).items(), sample)
    assert out.read_text() == "earlier run\n"
    # incomplete: one image missing → error, earlier file untouched, no temp files left
    with pytest.raises(ValueError, match="1 image"):
        write_submission(out, list(_maps(2).items())[:1], sample, overwrite=True)
    assert out.read_text() == "earlier run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample_submission.csv", "submission.csv"]


def test_submission_writer_rejects_unknown_and_duplicate_ids(tmp_path):
    sample = _sample(tmp_path, 2)
    label = np.zeros((10, 10), np.uint8)
    with pytest.raises(KeyError, match="TEST_0009"):
        with SubmissionWriter(tmp_path / "s.csv", sample) as w:
            w.add("TEST_0009", label)
    with pytest.raises(ValueError, match="added twice"):
        with SubmissionWriter(tmp_path / "s.csv", sample) as w:
            w.add("TEST_0000", label)
            w.add("TEST_0000", label)
    assert not (tmp_path / "s.csv").exists()


def test_validate_submission_names_offending_rows(tmp_path):
    sample = _sample(tmp_path, 2)
    out = write_submission(tmp_path / "submission.csv", _maps(2).items(), sample)
    rows = list(csv.reader(open(out, newline="")))
    rows[2][1] = "1 2 3"  # line 3: odd count
    rows[5][1] = "518400 5"  # line 6: past the end of a 960x540 mask
    rows[7] = rows[6]  # line 8 duplicates line 7's id, so TEST_0000_class_6 goes missing
    del rows[-1]  # TEST_0001_class_11 missing
    rows.append(["TEST_0042_class_0", "-1"])  # extra
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(SubmissionError) as info:
        validate_submission(bad, sample)
    problems = "\n".join(info.value.problems)
    assert "line 3 (TEST_0000_class_1)" in problems and "even count" in problems
    assert "line 6 (TEST_0000_class_4)" in problems and "> 518400 pixels" in problems
    assert "line 8: duplicate id TEST_0000_class_5 (first on line 7)" in problems
    assert "TEST_0000_class_6" in problems and "TEST_0001_class_11" in problems
    assert "TEST_0042_class_0" in problems
    assert len(info.value.problems) == 5
