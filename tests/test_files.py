"""Atomic writes and kit output folders (kit.common.files): what OVERWRITE removes, and what it never touches."""

import json

import pytest

from kit.common.files import MANIFEST, atomic_path, clear_outputs, copy_file, prepare_output_dir, write_json, write_text


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_write_json_is_strict_json_with_nan_as_null(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"iou": {"Road": 0.5, "Rider": float("nan")}, "list": [float("inf"), 1], "n": 3})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"iou": {"Road": 0.5, "Rider": None}, "list": [None, 1], "n": 3}


def test_prepare_output_dir_refuses_earlier_results(tmp_path):
    out = prepare_output_dir(tmp_path / "run")
    (out / "executed.ipynb").write_text("{}")
    assert prepare_output_dir(out) == out  # a notebook papermill is writing is not a result
    write_json(out / "stats.json", {"a": 1})
    with pytest.raises(FileExistsError, match=r"run already holds .*stats\.json.*OVERWRITE = True"):
        prepare_output_dir(out)


def test_overwrite_removes_exactly_what_the_kit_wrote(tmp_path):
    out = prepare_output_dir(tmp_path / "eda")
    write_text(out / "old_figure.png", "earlier run")
    write_json(out / "figures" / "deep.json", {"a": 1})  # a sub-folder the kit made while writing
    copy_file(out / "old_figure.png", out / "copy.png")
    (out / "executed.ipynb").write_text("{}")  # papermill's notebook: never the kit's to remove
    assert prepare_output_dir(out, overwrite=True) == out
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "executed.ipynb"]  # no stale figure stays
    write_text(out / "new.png", "x")
    assert prepare_output_dir(out, overwrite=True) == out and not (out / "new.png").exists()


def test_overwrite_refuses_a_folder_that_is_not_the_kits(tmp_path):
    (tmp_path / "benchmark.md").write_text("someone's results")
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileExistsError, match=r"holds files the kit did not write \(benchmark\.md, runs; it has no "
                                              r"\.kit-outputs.*nothing was removed"):
        prepare_output_dir(tmp_path, overwrite=True)
    assert (tmp_path / "benchmark.md").read_text() == "someone's results"


def test_overwrite_keeps_the_users_files_in_a_kit_folder(tmp_path):
    out = prepare_output_dir(tmp_path / "predict")
    write_text(out / "submission.csv", "id,mask_rle\n")
    (out / "notes.txt").write_text("mine")
    assert prepare_output_dir(out, overwrite=True) == out
    assert not (out / "submission.csv").exists() and (out / "notes.txt").read_text() == "mine"


def test_clear_outputs_recurses_into_kit_folders_and_keeps_foreign_content(tmp_path):
    out = prepare_output_dir(tmp_path / "job")
    run = prepare_output_dir(out / "runs" / "r1")  # runs/ and r1/ become kit folders inside job/
    write_text(run / "config.json", "{}")
    figures = prepare_output_dir(out / "figures")
    write_text(figures / "a.png", "x")
    (figures / "user.txt").write_text("mine")  # a sub-folder with a user's file is kept, file and all
    assert clear_outputs(out) == ["runs/"]
    assert (figures / "user.txt").read_text() == "mine" and not (figures / "a.png").exists()
    assert not (out / "runs").exists()


def test_manifest_entries_cannot_point_outside(tmp_path):
    out = prepare_output_dir(tmp_path / "o")
    (tmp_path / "precious").write_text("keep")
    with open(out / MANIFEST, "a") as f:
        f.write("../precious\n")
    with pytest.raises(ValueError, match=r"entry '\.\./precious' is not a plain file or folder name"):
        clear_outputs(out)
    assert (tmp_path / "precious").read_text() == "keep"
