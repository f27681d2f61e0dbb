import hashlib
import json

import albumentations as A
import numpy as np
import pandas as pd
import pytest
import torch

from kit.common.files import write_image
from kit.competition.labels import CLASSES, IGNORE_INDEX
from kit.competition.layout import read_image, read_label, read_split
from kit.data.datasets import RareClassSampler, SegmentationDataset
from kit.data.stats import SOURCE_MEAN, SOURCE_STD, STATS_FILE, channel_stats, class_pixel_counts, domain_stats
from kit.report.palette import PALETTE


def test_class_table():
    assert CLASSES[0] == "Road" and CLASSES[8] == "Sky" and CLASSES[11] == "Car"
    assert len(CLASSES) == 12 and IGNORE_INDEX == 255
    assert PALETTE.shape == (12, 3) and len({tuple(c) for c in PALETTE}) == 12


@pytest.fixture
def layout(tmp_path):
    """A two-image competition-layout root written by hand."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        image = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
        label = rng.choice([0, 4, 11, 255], size=(6, 8)).astype(np.uint8)
        write_image(tmp_path / "train_source_image" / f"TRAIN_SOURCE_{i:04d}.png", image)
        write_image(tmp_path / "train_source_gt" / f"TRAIN_SOURCE_{i:04d}.png", label)
        rows.append((f"TRAIN_SOURCE_{i:04d}", f"./train_source_image/TRAIN_SOURCE_{i:04d}.png",
                     f"./train_source_gt/TRAIN_SOURCE_{i:04d}.png", image, label))
    pd.DataFrame([r[:3] for r in rows], columns=["id", "img_path", "gt_path"]).to_csv(
        tmp_path / "train_source.csv", index=False)
    pd.DataFrame([r[:2] for r in rows], columns=["id", "img_path"]).to_csv(tmp_path / "test.csv", index=False)
    return tmp_path, rows


def test_read_split_resolves_paths_and_round_trips_pixels(layout):
    root, rows = layout
    frame = read_split(root, "train_source")
    assert list(frame.columns) == ["id", "img_path", "gt_path"]
    assert frame.loc[1, "img_path"] == str((root / "train_source_image" / "TRAIN_SOURCE_0001.png").resolve())
    for (_, _, _, image, label), (_, row) in zip(rows, frame.iterrows()):
        assert np.array_equal(read_image(row.img_path), image)  # RGB order preserved
        assert np.array_equal(read_label(row.gt_path), label)
    assert "gt_path" not in read_split(root, "test").columns


def test_read_split_errors_name_the_file(layout, tmp_path):
    root, _ = layout
    with pytest.raises(FileNotFoundError, match=r"val_source\.csv.*train_source\.csv"):
        read_split(root, "val_source")
    pd.DataFrame({"id": ["a"], "img_path": ["./a.png"]}).to_csv(root / "val_source.csv", index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['gt_path'\]"):
        read_split(root, "val_source")


def test_missing_corrupt_and_out_of_range_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match="label file not found.*nope.png"):
        read_label(tmp_path / "nope.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ValueError, match="could not decode image.*corrupt.png"):
        read_image(corrupt)
    with pytest.raises(ValueError, match="could not decode label.*corrupt.png"):
        read_label(corrupt)
    label = np.zeros((4, 4), np.uint8)
    label[0, 0] = 37
    label[1, :2] = 200
    write_image(tmp_path / "bad_gt.png", label)
    with pytest.raises(ValueError, match=r"bad_gt\.png.*37 \(1 px\), 200 \(2 px\)"):
        read_label(tmp_path / "bad_gt.png")


def test_dataset_applies_transform_normalisation_and_background(layout):
    root, rows = layout
    frame = read_split(root, "train_source")
    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    ds = SegmentationDataset(frame, transform=flip, mean=SOURCE_MEAN, std=SOURCE_STD, background=12)
    item = ds[0]
    image, label = rows[0][3], rows[0][4]
    expected = (image[:, ::-1].astype(np.float32) / 255 - np.array(SOURCE_MEAN, np.float32)) / np.array(SOURCE_STD, np.float32)
    assert item["image"].shape == (3, 6, 8) and item["image"].dtype == torch.float32
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), expected, rtol=1e-5, atol=1e-5)
    flipped = label[:, ::-1].astype(np.int64)
    flipped[flipped == 255] = 12
    assert item["label"].dtype == torch.int64 and np.array_equal(item["label"].numpy(), flipped)
    assert item["id"] == "TRAIN_SOURCE_0000"


def test_unlabelled_dataset_and_label_fn(layout):
    root, rows = layout
    unlabelled = SegmentationDataset(read_split(root, "test"))
    assert not unlabelled.labelled and "label" not in unlabelled[1]
    to_road = SegmentationDataset(read_split(root, "train_source"), label_fn=lambda l: np.where(l == 11, 0, l).astype(np.uint8))
    got = to_road[0]["label"].numpy()
    assert not (got == 11).any() and (got == 255).sum() == (rows[0][4] == 255).sum()


def test_dataset_rejects_label_of_other_size(tmp_path):
    write_image(tmp_path / "i.png", np.zeros((6, 8, 3), np.uint8))
    write_image(tmp_path / "g.png", np.zeros((5, 8), np.uint8))
    frame = pd.DataFrame({"id": ["x"], "img_path": [str(tmp_path / "i.png")], "gt_path": [str(tmp_path / "g.png")]})
    with pytest.raises(ValueError, match=r"g\.png is 8x5 but image .*i\.png is 8x6"):
        SegmentationDataset(frame)[0]


def test_class_pixel_share_counts_background_last(tmp_path):
    write_image(tmp_path / "a.png", np.array([[0, 0, 255], [11, 11, 11]], np.uint8))
    write_image(tmp_path / "b.png", np.array([[0, 255]], np.uint8))
    from kit.data.stats import class_pixel_share

    share = class_pixel_share([tmp_path / "a.png", tmp_path / "b.png"])
    expected = np.zeros(13)
    expected[0], expected[11], expected[12] = 3 / 8, 3 / 8, 2 / 8
    np.testing.assert_allclose(share, expected)


HEADER = "id,img_path,gt_path\n"
ROW = "TRAIN_SOURCE_{0},./train_source_image/TRAIN_SOURCE_{0}.png,./train_source_gt/TRAIN_SOURCE_{0}.png\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"train_source\.csv is empty; expected a header line id,img_path,gt_path and one row per image"),
        (HEADER, r"train_source\.csv has no rows; expected at least one image$"),
        (HEADER + "\n", r"train_source\.csv has no rows"),  # a blank line is no row
        (HEADER + ROW.format("0000") + "TRAIN_SOURCE_0001,./train_source_image/TRAIN_SOURCE_0001.png,\n",
         r"train_source\.csv line 3: empty gt_path; expected a value in every cell of \['id', 'img_path', 'gt_path'\]"),
        (HEADER + "\n" + " ,./a.png,./b.png\n" + ROW.format("0000") + ",,\n",  # line 3 (after a blank line 2)
         r"train_source\.csv line 3: empty id, line 5: empty id, line 5: empty img_path, line 5: empty gt_path;"),
        (HEADER + ROW.format("0000") + ROW.format("0001") + ROW.format("0000") + ROW.format("0001"),
         r"train_source\.csv: duplicate id 'TRAIN_SOURCE_0000' \(lines 2, 4\), 'TRAIN_SOURCE_0001' \(lines 3, 5\); "
         r"expected each id once"),
        (HEADER + ROW.format("0000") + "TRAIN_SOURCE_0001,./a.png,./b.png,extra\n",
         r"train_source\.csv line 3: 4 fields \['TRAIN_SOURCE_0001', .*'extra'\]; expected 3, as in the header"),
        ("id,img_path,gt_path,id\n" + ROW.format("0000").rstrip() + ",x\n", r"train_source\.csv: column\(s\) \['id'\] twice"),
        (b"\xff\xfe".decode("latin-1") + HEADER, r"train_source\.csv is not a UTF-8 CSV file"),
    ],
    ids=["empty_file", "header_only", "blank_line_only", "empty_path", "empty_ids", "duplicate_ids", "extra_field",
         "repeated_column", "not_utf8"],
)
def test_read_split_names_the_csv_line_and_value_of_bad_input(layout, text, message):
    root, _ = layout
    (root / "train_source.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=message):
        read_split(root, "train_source")


def test_read_split_keeps_ids_pandas_would_read_as_missing(layout):
    root, _ = layout
    (root / "test.csv").write_text("id,img_path\nNA,./a.png\nnull,./b.png\n")
    assert read_split(root, "test").id.tolist() == ["NA", "null"]


def test_statistics_are_measured_again_when_the_split_csv_changes(layout):
    root, rows = layout
    mean, _ = domain_stats(root, "train_source", limit=None)
    assert class_pixel_counts(root, "train_source").shape == (2, 13)
    pd.DataFrame([r[:3] for r in rows[1:]], columns=["id", "img_path", "gt_path"]).to_csv(
        root / "train_source.csv", index=False)  # e.g. a regenerated dataset with fewer images
    expected = channel_stats([root / rows[1][1]])
    np.testing.assert_allclose(domain_stats(root, "train_source", limit=None)[0], expected[0])
    assert domain_stats(root, "train_source", limit=None)[0] != mean
    counts = class_pixel_counts(root, "train_source")
    assert counts.shape == (1, 13) and counts[0, 11] == (rows[1][4] == 11).sum()
    cache = json.loads((root / STATS_FILE).read_text())
    digest = hashlib.sha1((root / "train_source.csv").read_bytes()).hexdigest()
    assert {entry["csv_sha1"] for entry in cache.values()} == {digest}


def test_unreadable_or_unfingerprinted_statistics_cache_is_measured_again(layout):
    root, rows = layout
    expected = channel_stats([root / r[1] for r in rows])
    (root / STATS_FILE).write_text(json.dumps({"train_source/None": {"mean": [9, 9, 9], "std": [9, 9, 9]}}))
    np.testing.assert_allclose(domain_stats(root, "train_source", limit=None)[0], expected[0])  # an old cache
    (root / STATS_FILE).write_text('{"train_source/None": ')
    np.testing.assert_allclose(domain_stats(root, "train_source", limit=None)[1], expected[1])  # a broken one


# Rare-class sampling at T = 0.5 on three images; rows: images, columns: pixels of classes 0..3 (3 is absent).
RCS_PIXELS = [[60, 0, 0, 0], [20, 15, 0, 0], [0, 0, 5, 0]]
# f = (0.80, 0.15, 0.05); (1 - f) / T = (0.4, 1.7, 1.9); e^… = (1.491825, 5.473947, 6.685894), sum 13.651666
RCS_CLASS_PROB = [0.109278, 0.400973, 0.489749, 0.0]
# an image is drawn through each of its classes, uniformly among the images holding that class:
# image 0: P0 / 2; image 1: P0 / 2 + P1; image 2: P2
RCS_IMAGE_PROB = [0.054639, 0.455612, 0.489749]


def test_rare_class_sampling_draws_classes_by_exp_of_one_minus_frequency_over_t():
    sampler = RareClassSampler(np.array(RCS_PIXELS), temperature=0.5, num_samples=1, generator=torch.Generator())
    np.testing.assert_allclose(sampler.class_prob.numpy(), RCS_CLASS_PROB, atol=1e-6)


def test_rare_class_sampling_draws_images_as_often_as_their_classes_say():
    draws = 20_000
    sampler = RareClassSampler(np.array(RCS_PIXELS), temperature=0.5, num_samples=draws,
                               generator=torch.Generator().manual_seed(0))
    drawn = list(sampler)
    assert len(drawn) == draws
    share = np.bincount(drawn, minlength=3) / draws
    expected = np.array(RCS_IMAGE_PROB)
    tolerance = 4 * np.sqrt(expected * (1 - expected) / draws)  # 4 binomial standard deviations
    assert (np.abs(share - expected) <= tolerance).all(), f"drawn {share}, expected {expected} ± {tolerance}"
