"""The notebook parameter reference, ``docs/parameters.md``, generated from the notebooks themselves so
that it cannot drift from their parameters cells: ``python -m kit.bench.params`` writes it,
``python -m kit.bench.params --check`` fails when it is stale (as ``tests/test_docs.py`` does).

It holds one table per notebook (``papermill.inspect_notebook``: name, type, default, help), and for
``03_train`` every :class:`kit.train.config.TrainConfig` field (its trailing ``# comment`` in
``kit/train/config.py`` is its help) and the values each preset of :mod:`kit.train.presets` sets.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import sys
import tokenize
from pathlib import Path

import papermill

from kit.common.files import write_text
from kit.train import config as train_config
from kit.train.config import TrainConfig
from kit.train.presets import PRESETS, preset_diff

ROOT = Path(__file__).resolve().parents[2]  # the repository: kit/bench/params.py
NOTEBOOKS = ROOT / "notebooks"
OUTPUT = ROOT / "docs" / "parameters.md"

_INTRO = """\
# Notebook parameters

Generated from the notebooks' parameters cells and `kit/train/config.py` by `python -m kit.bench.params`;
do not edit it by hand (`tests/test_docs.py` fails when it differs from what that command writes).

Every notebook's first code cell is tagged `parameters`; papermill overrides any name in it:
`-p NAME value` turns `True`, `False`, `None` and numbers into Python values and leaves the rest text;
lists and dicts need `-y "NAME: [1, 2]"` (YAML). Each notebook checks its parameters before it does
anything and names the parameter, the value and what it accepts.
"""

_TRAIN_FIELDS = """\
### Every training field

`03_train`'s cell names the parameters most runs change; every other field of `TrainConfig`
(`kit/train/config.py`) is set the same way, by its name in upper case (`-p LR_ENCODER 1e-4`,
`-y "CROP_SIZE: [256, 512]"`), through `OVERRIDES` in lower case, or under `python -m kit.train` /
`torchrun` as `--set NAME=VALUE`. A misspelt name is refused. Defaults are the `cpu_demo` preset's;
a default of `None` marked `METHOD_DEFAULTS` takes the method's own value.
"""

_PRESETS = """\
### What each preset sets

`PRESET` picks a recipe from `kit/train/presets.py`; each states only how it differs from `cpu_demo`
(its base's values included). An empty cell keeps the `cpu_demo` value. Parameters given on top
(`-p`, `OVERRIDES`, `--set`) win over the preset.
"""


def _cell(text: object, code: bool = False) -> str:
    """Text safe inside a markdown table cell (inside a code span: ``code``)."""
    text = str(text).replace("|", "\\|").replace("\n", " ").strip()
    return text if code else text.replace("*", "\\*")


def _code(text: object) -> str:
    return f"`{_cell(text, code=True)}`" if str(text) != "" else ""


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def notebook_table(path: Path) -> str:
    """The parameters cell of one notebook as a table: name, type, default, help."""
    rows = [(_code(p["name"]), _code(p["inferred_type_name"]), _code(p["default"]), _cell(p["help"]))
            for p in papermill.inspect_notebook(str(path)).values()]
    return _table(("name", "type", "default", "what"), rows)


def field_comments(source: str, class_name: str = "TrainConfig") -> dict[str, str]:
    """``field → its trailing # comment`` for the annotated fields of ``class_name`` in ``source``."""
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    klass = next(node for node in ast.parse(source).body
                 if isinstance(node, ast.ClassDef) and node.name == class_name)
    found = {}
    for node in klass.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
            found[node.target.id] = " ".join(comments[n] for n in lines if n in comments)
    return found


def _default(f: dataclasses.Field) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def train_fields_table() -> str:
    """Every TrainConfig field: its help is its trailing comment, else 03_train's help for the name."""
    comments = field_comments(Path(train_config.__file__).read_text())
    cell = {p["name"]: p["help"] for p in papermill.inspect_notebook(str(NOTEBOOKS / "03_train.ipynb")).values()}
    rows = [(_code(f.name.upper()), _code(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", f.type)),
             _code(repr(_default(f))),
             _cell(comments.get(f.name) or cell.get(f.name.upper(), "")))
            for f in dataclasses.fields(TrainConfig)]
    return _table(("-p name", "type", "default (cpu_demo)", "what"), rows)


def presets_table() -> str:
    diffs = {name: preset_diff(name) for name in PRESETS}
    defaults = {f.name: _default(f) for f in dataclasses.fields(TrainConfig)}
    names = [f.name for f in dataclasses.fields(TrainConfig) if any(f.name in d for d in diffs.values())]
    rows = [("what it is",) + tuple(_cell(p.about) for p in PRESETS.values())]
    for name in names:
        rows.append((_code(name.upper()),) + tuple(
            _code(repr(diffs[p][name])) if name in diffs[p] else ("" if p != "cpu_demo" else _code(repr(defaults[name])))
            for p in PRESETS))
    return _table(("field",) + tuple(f"`{p}`" for p in PRESETS), rows)


def parameter_reference() -> str:
    """The text of ``docs/parameters.md``."""
    parts = [_INTRO]
    for path in sorted(NOTEBOOKS.glob("0*.ipynb")):
        parts.append(f"## {path.stem}\n\n[`notebooks/{path.stem}.py`](../notebooks/{path.stem}.py)\n\n"
                     + notebook_table(path))
        if path.stem == "03_train":
            parts += [_TRAIN_FIELDS + "\n" + train_fields_table(), _PRESETS + "\n" + presets_table()]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.bench.params", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help=f"only check that {OUTPUT.relative_to(ROOT)} is current")
    parser.add_argument("--out", type=Path, default=OUTPUT, help="where to write it (default: %(default)s)")
    args = parser.parse_args(argv)
    text = parameter_reference()
    if args.check:
        current = args.out.read_text() if args.out.exists() else None
        if current != text:
            print(f"{args.out} is stale: run python -m kit.bench.params", file=sys.stderr)
            return 1
        print(f"{args.out} is current")
        return 0
    write_text(args.out, text)
    print(f"wrote {args.out} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
