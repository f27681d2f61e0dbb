"""Parameter checks for the notebooks and configs: each names the parameter, the value found and what
was expected. Imports nothing beyond the standard library, so a notebook that only checks its
parameters loads no torch.
"""

from __future__ import annotations

import math
import numbers
import re


def check_choice(name: str, value: object, choices: tuple) -> None:
    """``value`` must be one of ``choices``."""
    if not any(c == value and type(c) is type(value) for c in choices):  # 1 is no True, 0.0 no False
        raise ValueError(f"{name} = {value!r} is not one of {', '.join(map(repr, choices))}")


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} = {value!r}: expected True or False")


def check_device(name: str, value: object) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError(f"{name} = {value!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def check_name(name: str, value: object) -> None:
    """A folder name that stays inside its parent: letters, digits, ``._-``, not starting with a dot."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", value):
        raise ValueError(f"{name} = {value!r}: expected a plain folder name (letters, digits, '.', '_', '-'; "
                         f"no '/', no leading '.')")


def check_int(name: str, value: object, low: int | None = None, high: int | None = None, optional: bool = False) -> None:
    """An integer (not a bool, not 2.5) in ``[low, high]``; None too when ``optional``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or \
            (low is not None and value < low) or (high is not None and value > high):
        allowed = "an integer" + (f" ≥ {low}" if low is not None else "") + (f" and ≤ {high}" if high is not None else "")
        raise ValueError(f"{name} = {value!r}: expected {allowed}" + (" or None" if optional else ""))


def check_number(name: str, value: object, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, optional: bool = False) -> None:
    """A finite number in the interval from ``low`` to ``high`` (open ends excluded); None when ``optional``."""
    if value is None and optional:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        lower = "" if low is None else f"{'>' if low_open else '≥'} {low:g}"
        upper = "" if high is None else f"{'<' if high_open else '≤'} {high:g}"
        bounds = " and ".join(b for b in (lower, upper) if b)
        raise ValueError(f"{name} = {value!r}: expected a finite number{' ' + bounds if bounds else ''}"
                         + (" or None" if optional else ""))
