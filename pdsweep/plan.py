"""Every config of a space that fits a budget, with the keep rate the policy gives it.

For each architecture of the space, the kept-patch count is searched on the closed-form cost
(:func:`pdsweep.cost.max_keep_count`): the architecture is feasible when its lowest allowed
keep rate fits. Policy ``fill`` (default) trains at the largest keep rate that fits, so every
trial spends its budget, which is the paper's trade-off; ``search`` lets the sampler choose a
keep rate between the space's lowest and that largest one. No torch import: a plan of the whole
paper space takes milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from pdsweep.config import Config, keep_rate_for, patches_kept
from pdsweep.cost import Budget, Cost, estimate, max_keep_count
from pdsweep.errors import PdsweepError
from pdsweep.space import FloatRange, SearchSpace
from pdsweep.validate import check_choice

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
    setup = setup_of(space)
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
        best = max_keep_count(arch, budget, low=low, high=high, **setup_of(space))
        if best is None:
            return None
        return max(axis.low, keep_rate_for(N, best)), axis.low
    rates = sorted(float(v) for v in axis.values())
    fits_up_to = max_keep_count(arch, budget, low=1, high=N, **setup_of(space))
    feasible = [r for r in rates if fits_up_to is not None and patches_kept(N, r) <= fits_up_to]
    return (feasible[-1], rates[0]) if feasible else None


def setup_of(space: SearchSpace) -> dict[str, Any]:
    """The training settings the memory model needs (batch size, precision, optimizer)."""
    training = space.training
    return dict(batch_size=training.batch_size, precision=training.precision, optimizer=training.optimizer)


def _nothing_fits(space: SearchSpace, budget: Budget, architectures: list[Config]) -> str:
    """Which cap rules everything out, the config closest to fitting it, and what to raise."""
    low = space.keep_rate_bounds[0]
    costs = [estimate(replace(arch, keep_rate=low), **setup_of(space)) for arch in architectures]
    cheapest = min(costs, key=lambda cost: (cost.train_gflops, cost.memory.total))
    reasons, fixes = [], []
    if cheapest.train_gflops > budget.gflops:
        reasons.append(f"the cheapest is {cheapest.config.name} at {cheapest.train_gflops:.4g} GFLOPs")
        fixes.append(f"raise --budget-gflops to at least {cheapest.train_gflops:.4g}")
    if budget.memory_gb is not None:
        leanest = min(costs, key=lambda cost: (cost.memory.total, cost.train_gflops))
        if leanest.memory_gb > budget.memory_gb:
            reasons.append(f"the one needing least memory is {leanest.config.name} at {leanest.memory_gb:.3g} GB")
            fixes.append(f"raise --budget-memory-gb to at least {leanest.memory_gb:.3g}")
    if not reasons:
        reasons.append("each cap alone admits some config, but no config meets both")
        fixes.append("raise either cap")
    return (
        f"no config of space {space.name!r} fits a budget of {budget}: {'; '.join(reasons)}; "
        f"{' and '.join(fixes)}, or use a space with smaller configs."
    )
