import csv
import re

import numpy as np
import pytest
from PIL import Image

from kit.bench.cli import baseline_encode_label_map, baseline_rle_encode, fake_fisheye_label_map
from kit.competition import submission as kit_submission
from kit.competition.rle import encode_label_map, resize_nearest, rle_decode, rle_encode
from kit.competition.submission import SubmissionError, SubmissionWriter, validate_submission, write_submission


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
        ("1 x", "RLE token 'x' is not a non-negative integer"),
        # tokens Python's int() or str.isdigit() take but the format does not: only ASCII digits
        ("1 ²", "RLE token '²' is not a non-negative integer"),  # isdigit() is True, int() fails
        ("1 0_5", "RLE token '0_5' is not a non-negative integer"),  # int() reads 5
        ("1 +5", "RLE token '[+]5' is not a non-negative integer"),
        ("1 ٥", "RLE token '٥' is not a non-negative integer"),  # Arabic-Indic 5: int() reads 5
        ("-1 2", "RLE token '-1' is not a non-negative integer"),  # only the whole string -1 is the empty mask
        # numbers that no 6-pixel mask has: one past int64, one past int()'s 4300-digit limit
        ("99999999999999999999 1", "RLE number 99999999999999999999 is larger than the mask's 6 pixels"),
        ("1 " + "9" * 5000, "RLE number 9{5000} is larger than the mask's 6 pixels"),
    ],
)
def test_rle_decode_rejects_bad_strings(rle, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(rle, (2, 3))


def test_rle_decode_accepts_zero_padded_numbers():
    assert rle_decode("0001 " + "0" * 5000 + "2", (2, 3)).tolist() == [[1, 1, 0], [0, 0, 0]]


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


@pytest.mark.parametrize(
    "label, described",
    [
        (np.zeros((4, 6), np.float32), r"dtype float32 and shape \(4, 6\)"),  # would give RLE like "1.0 3.0"
        (np.zeros((4, 6), bool), r"dtype bool and shape \(4, 6\)"),
        (np.zeros((4, 6, 3), np.uint8), r"dtype uint8 and shape \(4, 6, 3\)"),  # an RGB image, not class ids
        (np.zeros(24, np.uint8), r"dtype uint8 and shape \(24,\)"),
    ],
)
def test_encode_label_map_refuses_what_is_not_a_label_map(label, described):
    with pytest.raises(ValueError, match=described + r": expected an integer \(H, W\) map of class ids"):
        encode_label_map(label, (6, 4))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.uint16])
def test_encode_label_map_takes_any_integer_dtype(dtype):
    label = np.array([[3, 3, 255], [0, 3, 3]], dtype)
    strings = encode_label_map(label, (3, 2))
    assert strings[3] == "1 2 5 2" and strings[0] == "4 1"


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


def test_submission_writer_names_the_image_of_a_bad_label_map(tmp_path):
    sample = _sample(tmp_path, 1)
    with pytest.raises(ValueError, match=r"image 'TEST_0000': label map of dtype float64 and shape \(4, 4\)"):
        with SubmissionWriter(tmp_path / "s.csv", sample) as w:
            w.add("TEST_0000", np.zeros((4, 4)))
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("earlier", [None, "earlier run\n"])
def test_submission_writer_validates_before_moving_into_place(tmp_path, monkeypatch, earlier):
    sample = _sample(tmp_path, 2)
    out = tmp_path / "submission.csv"
    if earlier is not None:
        out.write_text(earlier)
    # an encoder bug: class 0 of every image gets a 0-based start
    monkeypatch.setattr(kit_submission, "encode_label_map", lambda label_map, size: ["0 5"] + ["-1"] * 11)
    with pytest.raises(SubmissionError, match=r"submission.csv was not written: 2 problem\(s\)") as info:
        write_submission(out, _maps(2).items(), sample, overwrite=True)
    assert info.value.problems == [
        "line 2 (TEST_0000_class_0): RLE start 0 < 1 (starts are 1-based)",
        "line 14 (TEST_0001_class_0): RLE start 0 < 1 (starts are 1-based)",
    ]
    assert (out.read_text() if out.exists() else None) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample_submission.csv"] + (["submission.csv"] if earlier else [])


def _rewrite(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_validate_submission_reports_bad_numbers_with_their_line(tmp_path):
    sample = _sample(tmp_path, 1)
    rows = list(csv.reader(open(write_submission(tmp_path / "s.csv", _maps(1).items(), sample), newline="")))
    rows[1][1] = "99999999999999999999 1"  # past int64: was an OverflowError without a line number
    rows[3][1] = "1 ²"  # str.isdigit() is True: was a StopIteration
    rows[4][1] = "1_0 5"  # int() reads 10: was accepted
    with pytest.raises(SubmissionError) as info:
        validate_submission(_rewrite(tmp_path / "bad.csv", rows), sample)
    assert info.value.problems == [
        "line 2 (TEST_0000_class_0): RLE number 99999999999999999999 is larger than the mask's 518400 pixels",
        "line 4 (TEST_0000_class_2): RLE token '²' is not a non-negative integer (ASCII digits 0-9 only)",
        "line 5 (TEST_0000_class_3): RLE token '1_0' is not a non-negative integer (ASCII digits 0-9 only)",
    ]


def test_validate_submission_requires_the_sample_row_order(tmp_path):
    sample = _sample(tmp_path, 2)
    rows = list(csv.reader(open(write_submission(tmp_path / "s.csv", _maps(2).items(), sample), newline="")))
    with pytest.raises(SubmissionError) as info:  # every id present, in reverse order
        validate_submission(_rewrite(tmp_path / "reversed.csv", rows[:1] + rows[:0:-1]), sample)
    assert info.value.problems == [
        "line 2: id TEST_0001_class_11, expected TEST_0000_class_0 (rows must follow sample_submission.csv's order)"
    ]
    rows[3], rows[4] = rows[4], rows[3]  # two classes swapped, and an id missing: both reported
    with pytest.raises(SubmissionError) as info:
        validate_submission(_rewrite(tmp_path / "swapped.csv", rows[:-1]), sample)
    assert info.value.problems == [
        "1 id(s) of the sample are missing, e.g. ['TEST_0001_class_11']",
        "line 4: id TEST_0000_class_3, expected TEST_0000_class_2 (rows must follow sample_submission.csv's order)",
    ]


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


@pytest.mark.parametrize(
    "content, problem",
    [
        ("ID,mask_rle\nTEST_0000_class_0,-1\n", ": expected a header starting with 'id', found ['ID', 'mask_rle']"),
        ("TEST_0000_class_0,-1\n", ": expected a header starting with 'id', found ['TEST_0000_class_0', '-1']"),
        ("", ": expected a header starting with 'id', found None"),
        ("id,mask_rle\n", " has no rows after its header; expected <image id>_class_<k> rows"),
        ("id,mask_rle\nTEST_0000_class_0,-1\nTEST_0000_klass_1,-1\n", " line 3: row id 'TEST_0000_klass_1' is not"),
        ("id,mask_rle\nTEST_0000_class_12,-1\n", " line 2: row id 'TEST_0000_class_12' is not"),  # classes 0..11
        ("id,mask_rle\nTEST_0000_class_01,-1\n", " line 2: row id 'TEST_0000_class_01' is not"),  # never written so
        ("id,mask_rle\nTEST_0000_class_²,-1\n", " line 2: row id 'TEST_0000_class_²' is not"),  # isdigit() is True
        ("id,mask_rle\n_class_3,-1\n", " line 2: row id '_class_3' is not"),  # no image id
        ("id,mask_rle\n\nTEST_0000,-1\n", " line 3: row id 'TEST_0000' is not"),  # blank lines still count
    ],
)
def test_a_bad_sample_is_refused_naming_the_file_the_line_and_what_it_holds(tmp_path, content, problem):
    """Both the writer and the validator read the sample; either names it, the line and the value found."""
    sample = tmp_path / "sample_submission.csv"
    sample.write_text(content, encoding="utf-8")
    submission = _rewrite(tmp_path / "submission.csv", [["id", "mask_rle"], ["TEST_0000_class_0", "-1"]])
    expected = re.escape(f"{sample}{problem}")
    if " is not" in problem:
        expected += re.escape(" of the form <image id>_class_<k> with k in 0..11") + "$"
    with pytest.raises(ValueError, match=expected):
        SubmissionWriter(tmp_path / "new.csv", sample)
    with pytest.raises(ValueError, match=expected):
        validate_submission(submission, sample)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample_submission.csv", "submission.csv"]


def test_validate_submission_names_a_bad_header_and_a_row_of_the_wrong_width(tmp_path):
    sample = _sample(tmp_path, 1)
    rows = list(csv.reader(open(write_submission(tmp_path / "s.csv", _maps(1).items(), sample), newline="")))
    rows[0] = ["id", "rle"]
    rows[2] = [*rows[2], "extra"]
    with pytest.raises(SubmissionError) as info:
        validate_submission(_rewrite(tmp_path / "bad.csv", rows), sample)
    assert info.value.problems == [
        "line 1: header ['id', 'rle'], expected ['id', 'mask_rle']",
        f"line 3: 3 fields, expected 2 (id,mask_rle): {rows[2]}",
        "1 id(s) of the sample are missing, e.g. ['TEST_0000_class_1']",
    ]
    assert str(info.value).startswith(f"{tmp_path / 'bad.csv'}: 3 problem(s):")
