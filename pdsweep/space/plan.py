"""Every config of a space that fits a budget, with the keep rate the policy gives it.

For each architecture of the space, the kept-patch count is searched on the closed-form cost
(:func:`pdsweep.cost.largest_keep_rate`): the architecture is feasible when its lowest allowed
keep rate fits. Policy ``fill`` (default) trains at the largest keep rate that fits, so every
trial spends its budget, which is the paper's trade-off; ``search`` lets the sampler choose a
keep rate between the space's lowest and that largest one. No torch import: a plan of the whole
paper space takes milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

from pdsweep.config import Config
from pdsweep.cost import Budget, Cost, estimate, largest_keep_rate
from pdsweep.errors import PdsweepError
from pdsweep.space.search_space import SearchSpace
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
    rates = space.keep_rates
    architectures = space.architectures(num_classes)
    planned = []
    for arch in architectures:
        setup = space.step_for(arch)
        keep_rate = largest_keep_rate(arch, budget, setup, rates)
        if keep_rate is not None:
            planned.append(PlannedConfig(estimate(replace(arch, keep_rate=keep_rate), setup), rates.low))
    if not planned:
        raise PdsweepError(_nothing_fits(space, budget, architectures))
    planned.sort(key=lambda p: (p.cost.train_gflops, p.cost.memory.total, p.config.name))
    return Plan(space.name, budget, policy, len(architectures), tuple(planned))


def _nothing_fits(space: SearchSpace, budget: Budget, architectures: list[Config]) -> str:
    """Which cap rules everything out, the config closest to fitting it, and what to raise."""
    low = space.keep_rate_bounds[0]
    costs = [estimate(replace(arch, keep_rate=low), space.step_for(arch)) for arch in architectures]
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
