"""Writing results safely: every file through a temporary file and a rename, and output folders that
know what the kit wrote into them.

- :func:`atomic_path` (and :func:`write_json`, :func:`write_csv`, :func:`write_text`,
  :func:`write_image` on top of it): a crash or an error never leaves half a file, and an earlier
  file stays as it was until the new one is complete.
- :func:`prepare_output_dir`: a folder the kit writes into carries a manifest, ``.kit-outputs``,
  naming every file and sub-folder the kit wrote there (each atomic write into a folder with a
  manifest appends its name). ``overwrite=True`` removes exactly those entries, so that no stale
  figure of an earlier run stays beside new ones and nothing the user put there is ever deleted;
  a non-empty folder without a manifest is refused, since it is not one of the kit's.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import pandas as pd

T = TypeVar("T")
MANIFEST = ".kit-outputs"
_HEADER = "# written by fisheye-da-kit; OVERWRITE removes exactly the entries below (folders end in /)\n"
_UMASK = os.umask(0)
os.umask(_UMASK)


def _manifest_entries(folder: Path) -> list[str]:
    path = folder / MANIFEST
    if not path.is_file():
        return []
    lines = [line.rstrip("\n") for line in path.read_text().splitlines()]
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def _safe_entry(folder: Path, name: str) -> Path:
    """A manifest entry as a path inside ``folder``; a name that leaves it is refused."""
    if not name or name in (".", "..") or "/" in name.rstrip("/") or "\\" in name:
        raise ValueError(f"{folder / MANIFEST}: entry {name!r} is not a plain file or folder name")
    return folder / name.rstrip("/")


def is_output_dir(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is one the kit made (it holds a manifest)."""
    return (Path(folder) / MANIFEST).is_file()


def record_output(path: str | os.PathLike) -> None:
    """Note ``path`` (a file, or a folder when it is one) in its folder's manifest, if that folder is one
    of the kit's; otherwise do nothing. Appends are single short writes, safe beside other processes."""
    path = Path(path)
    folder = path.parent
    if path.name == MANIFEST or not is_output_dir(folder):
        return
    name = path.name + ("/" if path.is_dir() else "")
    if f"\n{name}\n" in (folder / MANIFEST).read_text():  # each name once (plain text search: cheap)
        return
    with open(folder / MANIFEST, "a") as f:
        f.write(name + "\n")


def clear_outputs(folder: str | os.PathLike) -> list[str]:
    """Remove what the manifest of ``folder`` names (folders recursively, through their own manifests;
    a sub-folder left non-empty is kept) and return the removed names. Anything else stays."""
    folder = Path(folder)
    removed = []
    for name in _manifest_entries(folder):
        path = _safe_entry(folder, name)
        if name.endswith("/"):
            if path.is_dir():
                if is_output_dir(path):
                    clear_outputs(path)
                    (path / MANIFEST).unlink()
                with contextlib.suppress(OSError):  # not empty: something of the user's is in there
                    path.rmdir()
                    removed.append(name)
        elif path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(name)
    if is_output_dir(folder):
        (folder / MANIFEST).write_text(_HEADER)
    return removed


def results_in(folder: str | os.PathLike) -> list[str]:
    """The entries of ``folder`` that are results, sorted: all but executed ``.ipynb`` notebooks (papermill
    writes them before the notebook runs) and the manifest; none when the folder does not exist."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".ipynb" and p.name != MANIFEST) \
        if folder.is_dir() else []


def make_dirs(folder: str | os.PathLike) -> Path:
    """``mkdir -p`` that makes every new folder inside a kit output folder a kit output folder too
    (manifest, and its name in its parent's manifest), so that OVERWRITE can remove it again."""
    target = folder = Path(folder)
    missing = []
    while not folder.is_dir() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        if is_output_dir(new.parent):
            with contextlib.suppress(FileExistsError), open(new / MANIFEST, "x") as f:  # once, even in a race
                f.write(_HEADER)
            record_output(new)
    return target


def check_output_dir(path: str | os.PathLike, overwrite: bool = False) -> list[str]:
    """The refusals of :func:`prepare_output_dir`, without writing anything (to check before long work):
    a file in the way, earlier results without ``overwrite``, or ``overwrite`` on a folder the kit did
    not write. Returns the earlier results (empty if none)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"output folder {path} is a file; choose a folder name")
    earlier = results_in(path) if path.is_dir() else []
    if earlier and not overwrite:
        raise FileExistsError(
            f"output folder {path} already holds an earlier run's results ({', '.join(earlier[:5])}"
            f"{', ...' if len(earlier) > 5 else ''}); choose another folder or set OVERWRITE = True"
        )
    if earlier and not is_output_dir(path):
        raise FileExistsError(
            f"OVERWRITE = True, but {path} holds files the kit did not write ({', '.join(earlier[:5])}"
            f"{', ...' if len(earlier) > 5 else ''}; it has no {MANIFEST} listing the kit's outputs): it is not "
            f"one of the kit's output folders, so nothing was removed. Choose another folder or empty it yourself"
        )
    return earlier


def prepare_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Create ``path`` as a kit output folder (with a manifest) and return it.

    A folder that already holds results (any entry but executed ``.ipynb`` notebooks, which papermill
    writes before the notebook runs) is refused unless ``overwrite``; then the kit's own earlier
    outputs are removed (:func:`clear_outputs`) and anything else in it is kept. ``overwrite`` on a
    non-empty folder without a manifest is refused: it is not one of the kit's output folders
    (:func:`check_output_dir`).
    """
    path = Path(path)
    check_output_dir(path, overwrite)
    if path.is_dir():
        clear_outputs(path)
    make_dirs(path)
    if not is_output_dir(path):
        (path / MANIFEST).write_text(_HEADER)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds (and
    note it in the folder's manifest, when the folder is a kit output folder)."""
    path = Path(path)
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes the file owner-only; give it the usual umask permissions
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
        record_output(path)
    finally:
        tmp.unlink(missing_ok=True)


def copy_file(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copy ``source`` to ``destination`` atomically."""
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)


def link_file(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Make ``destination`` the same file as ``source`` atomically: a hard link (no second copy of a
    checkpoint of a gigabyte), or a copy where the file system has no hard links (some network drives).
    Replacing ``source`` later (:func:`atomic_path` renames a new file onto it) leaves ``destination`` as it was."""
    with atomic_path(destination) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _strict_json(obj):
    """NaN and ±inf (e.g. the IoU of a class absent from truth and prediction) become null: strict
    JSON has no such numbers, and other readers reject Python's ``NaN``."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented, strict JSON (NaN/inf as null), atomically."""
    write_text(path, json.dumps(_strict_json(obj), indent=2, allow_nan=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (markdown tables, reports) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write ``frame`` as CSV without its index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write ``uint8 (H, W, 3) RGB`` (or ``(H, W)`` grey/label) atomically; format from the suffix."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"{path}: expected uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    with atomic_path(path) as tmp:
        ok, encoded = cv2.imencode(Path(path).suffix or ".png", data)
        if not ok:
            raise ValueError(f"could not encode image for {path}")
        tmp.write_bytes(encoded.tobytes())


def prefetched(read: Callable[[str], T], paths: Sequence[str], ahead: int = 2) -> Iterator[T]:
    """``read(path)`` for each of ``paths`` in order, up to ``ahead`` of them read in a background thread
    before they are asked for (OpenCV's decoders release the GIL: decoding overlaps the model's work)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = collections.deque(pool.submit(read, p) for p in paths[:ahead])
        for path in paths[ahead:]:
            pending.append(pool.submit(read, path))
            yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
