"""The documentation: the generated parameter reference is current, the README stays short, every
relative link lands on a file (and heading), and the package installs every subpackage."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kit.bench.params import OUTPUT, field_comments, parameter_reference
from kit.train.presets import PRESETS

ROOT = Path(__file__).parents[1]
README_LIMIT = 12_000  # bytes
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_the_parameter_reference_is_generated_from_the_notebooks():
    assert OUTPUT.read_text() == parameter_reference(), (
        "docs/parameters.md differs from the notebooks' parameters cells or kit/train/config.py: "
        "run `python -m kit.bench.params` and commit docs/parameters.md")


def test_the_reference_lists_every_notebook_parameter_and_training_field():
    text = OUTPUT.read_text()
    for name in ("PRESET", "OVERRIDES", "PREVIEW_COUNT", "BN_STATS", "LR_ENCODER", "QUANTILE", "RUN_NAMES"):
        assert f"| `{name}` |" in text, name
    header = next(line for line in text.splitlines() if line.startswith("| field |"))
    assert all(f"`{name}`" in header for name in PRESETS), header  # one column per preset


def test_field_comments_are_read_from_the_source():
    source = ("class TrainConfig:\n"
              "    a: int = 1  # the first\n"
              "    b: str = 'x#y'\n"
              "    c: tuple = (\n"
              "        1, 2)  # spans lines\n"
              "    # a section comment\n"
              "    d: int = 0\n")
    assert field_comments(source) == {"a": "the first", "b": "", "c": "spans lines", "d": ""}


def test_the_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, over {README_LIMIT}: move detail into docs/"


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(doc):
    broken = []
    for link in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            broken.append(f"{link} (no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{link} (no heading #{anchor} in {path.name})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {broken}"


def test_the_link_check_can_fail(tmp_path):
    doc = tmp_path / "a.md"
    (tmp_path / "b.md").write_text("# A heading: `code` here\n")
    doc.write_text("[x](b.md#a-heading-code-here) [y](missing.md) ![z](b.md)\n```\n[not](a link)\n```\n")
    assert _links(doc) == ["b.md#a-heading-code-here", "missing.md", "b.md"]
    assert _anchors(tmp_path / "b.md") == {"a-heading-code-here"}


def _packages() -> set[str]:
    return {str(p.parent.relative_to(ROOT)).replace("/", ".") for p in (ROOT / "kit").rglob("__init__.py")}


@pytest.mark.slow
def test_the_wheel_holds_every_subpackage(tmp_path):
    # a copy of what the build reads, so that building leaves no build/ or *.egg-info in the repository
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "kit", source / "kit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(p for p in _packages() if p.replace(".", "/") + "/__init__.py" not in names)
    assert not missing, f"the wheel lacks {missing}: pyproject.toml must find packages (include = ['kit*'])"
    assert len(_packages()) >= 10  # kit and its subpackages
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "kit").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    metadata = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("METADATA"))
    assert "Requires-Dist: torch" in metadata and "Requires-Dist: papermill" in metadata
