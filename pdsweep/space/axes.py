"""The kinds of axis a space file gives: a fixed list of choices, or an integer or float range."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pdsweep.cost import KeepRates

Value = int | float | str


@dataclass(frozen=True)
class Categorical:
    """A fixed list of choices; a fixed value is a list of one."""

    choices: tuple[Value, ...]

    def __len__(self) -> int:
        return len(self.choices)

    def values(self) -> tuple[Value, ...]:
        return self.choices


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def __len__(self) -> int:
        return (self.high - self.low) // self.step + 1

    def values(self) -> tuple[int, ...]:
        """Every value; ``log`` shapes how a sampler draws them, not which exist."""
        return tuple(range(self.low, self.high + 1, self.step))


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def __len__(self) -> int:
        if self.step is None:
            raise ValueError("a continuous range has no finite list of values.")
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def values(self) -> tuple[float, ...]:
        """The grid of a stepped range. A continuous range has none: callers ask for bounds."""
        return tuple(round(self.low + i * self.step, 12) for i in range(len(self)))  # type: ignore[operator]


Axis = Categorical | IntRange | FloatRange


def keep_rates(axis: Axis) -> KeepRates:
    """The keep rates a keep-rate axis allows, as the cost model's feasibility search takes them:
    a continuous range, or the values of a list (or a stepped range)."""
    if isinstance(axis, FloatRange) and axis.step is None:
        return KeepRates(axis.low, axis.high)
    return KeepRates.listed(tuple(float(v) for v in axis.values()))
