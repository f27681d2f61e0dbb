"""``python -m kit.data.resize``: a downscaled copy of a dataset in the same layout."""

import cv2
import numpy as np
import pytest

from kit.competition.layout import read_image, read_label, read_split
from kit.data.resize import main, parse_size, resize_dataset


def test_a_resized_copy_has_the_layout_the_sizes_and_the_exact_label_values(tiny, tmp_path):
    out = tmp_path / "half"
    main([str(tiny), str(out), "--source-size", "48x32", "--target-size", "40x30", "--workers", "1"])
    for split in ("train_source", "val_source", "train_target", "test", "train_target_gt", "test_gt"):
        before, after = read_split(tiny, split), read_split(out, split)
        assert list(after["id"]) == list(before["id"]) and all(str(p).startswith(str(out)) for p in after["img_path"])
        assert (out / f"{split}.csv").read_text().splitlines()[1].split(",")[1].startswith("./")
    row, was = read_split(out, "train_source").iloc[1], read_split(tiny, "train_source").iloc[1]
    assert read_image(row.img_path).shape == (32, 48, 3)
    expected = cv2.resize(read_image(was.img_path), (48, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(read_image(row.img_path), expected)
    np.testing.assert_array_equal(read_label(row.gt_path),
                                  cv2.resize(read_label(was.gt_path), (48, 32), interpolation=cv2.INTER_NEAREST))
    target = read_split(out, "train_target_gt").iloc[0]
    assert read_image(target.img_path).shape == read_label(target.gt_path).shape + (3,) == (30, 40, 3)
    test, test_was = read_split(out, "test").iloc[0], read_split(tiny, "test").iloc[0]
    assert read_image(test.img_path).shape == read_image(test_was.img_path).shape  # scored at its own size: linked
    assert (out / "sample_submission.csv").read_bytes() == (tiny / "sample_submission.csv").read_bytes()
    assert not (out / "kit_stats.json").exists()  # measured at the other sizes
    if (tiny / ".kit-outputs").exists():  # the copy's own manifest, not a link to the source's
        assert (out / ".kit-outputs").stat().st_ino != (tiny / ".kit-outputs").stat().st_ino
    with pytest.raises(FileExistsError):
        resize_dataset(tiny, out, (48, 32))
    resize_dataset(tiny, out, (24, 16), workers=1, overwrite=True)
    assert read_image(read_split(out, "val_source").iloc[0].img_path).shape == (16, 24, 3)
    assert read_image(read_split(out, "train_target").iloc[0].img_path).shape == \
        read_image(read_split(tiny, "train_target").iloc[0].img_path).shape  # no --target-size: as it was


def test_bad_sizes_and_roots_are_refused(tmp_path):
    assert parse_size("1024x512") == (1024, 512)
    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path / "out"), "--source-size", "1024"])
    with pytest.raises(FileNotFoundError, match="no train_source.csv"):
        resize_dataset(tmp_path, tmp_path / "out", (8, 8))


def test_a_copy_inside_its_dataset_or_around_it_is_refused(tiny):
    for dst in (tiny, tiny / "small", tiny.parent):
        with pytest.raises(ValueError, match="would be inside the dataset"):
            resize_dataset(tiny, dst, (8, 8), overwrite=True)
    assert (tiny / "train_source.csv").is_file()
