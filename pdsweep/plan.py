"""Every config of a space that fits a budget, with the keep rate the policy gives it.

For each architecture of the space, the kept-patch count is searched on the closed-form cost
(:func:`pdsweep.cost.max_patches_kept`): the architecture is feasible when its lowest allowed
keep rate fits. Policy ``fill`` (default) trains at the largest keep rate that fits, so every
trial spends its budget, which is the paper's trade-off; ``search`` lets the sampler choose a
keep rate between the space's lowest and that largest one. No torch import: a plan of the whole
paper space takes milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from pdsweep.config import Config, check_choice, keep_rate_for, patches_kept
from pdsweep.cost import Budget, Cost, estimate, max_patches_kept
from pdsweep.errors import PdsweepError
from pdsweep.space import FloatRange, SearchSpace

KeepPolicy = Literal["fill", "search"]
KEEP_POLICIES: tuple[str, ...] = get_args(KeepPolicy)


@dataclass(frozen=True)
class PlannedConfig:
    """A feasible config at its largest keep rate that fits, and its cost there.

    ``keep_rate_low`` is the lowest keep rate the space allows for it (policy ``search`` samples
    between the two).
    """

    cost: Cost
    keep_rate_low: float

    @property
    def config(self) -> Config:
        return self.cost.config


@dataclass(frozen=True)
class Plan:
    """The feasible configs of a space under one budget, cheapest first."""

    space: str
    budget: Budget
    policy: KeepPolicy
    architectures: int
    configs: tuple[PlannedConfig, ...]


def plan(
    space: SearchSpace,
    budget: Budget,
    *,
    policy: KeepPolicy = "fill",
    num_classes: int = 10,
) -> Plan:
    """Every architecture of ``space`` that fits ``budget``, at its largest feasible keep rate.

    Raises :class:`PdsweepError` when nothing fits, naming the cheapest config and its cost.
    """
    check_choice("keep policy", policy, KEEP_POLICIES)
    setup = _setup(space)
    architectures = space.architectures(num_classes)
    planned = []
    for arch in architectures:
        rates = largest_keep_rate(arch, space, budget)
        if rates is not None:
            keep_rate, keep_rate_low = rates
            planned.append(PlannedConfig(estimate(replace(arch, keep_rate=keep_rate), **setup), keep_rate_low))
    if not planned:
        raise PdsweepError(_nothing_fits(space, budget, architectures))
    planned.sort(key=lambda p: (p.cost.train_gflops, p.cost.memory.total, p.config.name))
    return Plan(space.name, budget, policy, len(architectures), tuple(planned))


def largest_keep_rate(arch: Config, space: SearchSpace, budget: Budget) -> tuple[float, float] | None:
    """``(largest keep rate that fits, lowest the axis allows)`` for ``arch``; None if none fits.

    A continuous range may keep any count between its ends; the rate returned for a count is
    the smallest that yields it (:func:`keep_rate_for`), never below the range's ``low``. A list
    (or a stepped range) keeps its own values.
    """
    axis = space.keep_rate
    N = arch.num_patches
    if isinstance(axis, FloatRange) and axis.step is None:
        low, high = patches_kept(N, axis.low), patches_kept(N, axis.high)
        best = max_patches_kept(arch, budget, low=low, high=high, **_setup(space))
        if best is None:
            return None
        return max(axis.low, keep_rate_for(N, best)), axis.low
    rates = sorted(float(v) for v in axis.values())
    fits_up_to = max_patches_kept(arch, budget, low=1, high=N, **_setup(space))
    feasible = [r for r in rates if fits_up_to is not None and patches_kept(N, r) <= fits_up_to]
    return (feasible[-1], rates[0]) if feasible else None


def _setup(space: SearchSpace) -> dict[str, Any]:
    training = space.training
    return dict(batch_size=training.batch_size, precision=training.precision, optimizer=training.optimizer)


def _lowest_keep_rate(space: SearchSpace) -> float:
    axis = space.keep_rate
    return axis.low if isinstance(axis, FloatRange) else min(float(v) for v in axis.values())


def _nothing_fits(space: SearchSpace, budget: Budget, architectures: list[Config]) -> str:
    low = _lowest_keep_rate(space)
    cheapest = min(
        (estimate(replace(arch, keep_rate=low), **_setup(space)) for arch in architectures),
        key=lambda cost: (cost.train_gflops, cost.memory.total),
    )
    need = f"{cheapest.train_gflops:.4g} GFLOPs"
    fix = f"raise --budget-gflops to at least {cheapest.train_gflops:.4g}"
    if budget.memory_gb is not None:
        need += f" and {cheapest.memory_gb:.3g} GB"
        if cheapest.memory_gb > budget.memory_gb:
            fix += f" and --budget-memory-gb to at least {cheapest.memory_gb:.3g}"
    return (
        f"no config of space {space.name!r} fits a budget of {budget}: the cheapest is "
        f"{cheapest.config.name} at {need}; {fix}, or use a space with smaller configs."
    )
