"""The few checks every value object and parser shares, so each rule is written once."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from pdsweep.errors import PdsweepError


def is_number(value: object) -> bool:
    """A finite real number (not a bool, not NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def is_rate(value: object) -> bool:
    """A keep rate: a number in (0, 1]."""
    return is_number(value) and 0 < value <= 1  # type: ignore[operator]


def check_choice(name: str, value: object, allowed: Collection[str]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise PdsweepError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}.")


def check_positive_int(name: str, value: object) -> None:
    if not is_positive_int(value):
        raise PdsweepError(f"`{name}` must be a positive integer, but got {name}={value!r}.")


def describe_value(value: Any) -> str:
    """A value as an error message shows it: its type and repr, with a hint for YAML's traps."""
    if value is None:
        return "nothing"
    hint = ""
    if isinstance(value, str):
        try:
            float(value)
            hint = " (YAML reads numbers like 5e-2 as text: write 5.0e-2 or 0.05)"
        except ValueError:
            pass
    return f"{type(value).__name__} {value!r}{hint}"

