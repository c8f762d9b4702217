"""Every config of a space that fits a budget, with the keep rate the policy gives it.

For each architecture of the space, the kept-patch count is searched on the closed-form cost
(:func:`pdsweep.cost.largest_keep_rate`): the architecture is feasible when its lowest allowed
keep rate fits. Policy ``fill`` (default) trains at the largest keep rate that fits, so every
trial spends its budget, which is the paper's trade-off; ``search`` lets the sampler choose a
keep rate between the space's lowest and that largest one. Under a memory cap a config whose step
does not fit as it is trains as arranged to fit (:func:`pdsweep.cost.arrange`: its members in
turns, its batch in micro-batches), and is infeasible only when no arrangement fits. No torch import: a plan of the whole
paper space takes milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

from pdsweep.config import Config
from pdsweep.cost import Budget, Cost, estimate, largest_keep_rate, window_rates
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
    label: str = ""  # a listed config's label and group (a space's ``configs``)
    group: str = ""

    @property
    def config(self) -> Config:
        return self.cost.config


@dataclass(frozen=True)
class Plan:
    """The feasible configs of a space under one budget, cheapest first (listed configs: as
    listed; ``budget_given`` False: the budget is their dearest one's cost)."""

    space: str
    budget: Budget
    policy: KeepPolicy
    architectures: int
    configs: tuple[PlannedConfig, ...]
    listed: bool = False
    budget_given: bool = True
    notes: tuple[str, ...] = ()  # what the space's axes mean for some of its models (a Swin's)


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
    if space.configs:
        return _plan_listed(space, budget, policy, num_classes)
    rates = space.keep_rates
    architectures = space.architectures(num_classes)
    planned = []
    for arch in architectures:
        setup = space.step_for(arch)
        keep_rate = largest_keep_rate(arch, budget, setup, rates)
        if keep_rate is not None:
            low = window_rates(arch, rates)[0] if arch.family == "swin" else rates.low
            planned.append(PlannedConfig(estimate(replace(arch, keep_rate=keep_rate), setup, budget.memory_gb), low))
    if not planned:
        raise PdsweepError(_nothing_fits(space, budget, architectures))
    planned.sort(key=lambda p: (p.cost.train_gflops, p.cost.memory.total, p.config.name))
    return Plan(space.name, budget, policy, len(architectures), tuple(planned), notes=space.notes)


def listed_budget(space: SearchSpace, num_classes: int = 10, memory_gb: float | None = None) -> Budget:
    """The budget a space of listed configs runs under when no GFLOPs are given: its dearest
    config's train GFLOPs (and ``memory_gb``, if given)."""
    if not space.configs:
        raise PdsweepError(f"space {space.name!r} searches axes, so it needs a budget; give --budget-gflops "
                           "(e.g. 17.6, DeiT-B at 224 px).")
    return Budget(max(estimate(c, space.step_for(c)).train_gflops for c in space.listed(num_classes)), memory_gb)


def _plan_listed(space: SearchSpace, budget: Budget, policy: KeepPolicy, num_classes: int) -> Plan:
    """A space's listed configs, as listed, each checked against ``budget``: a comparison loses its
    point if one of its configs is left out, so one over the budget is an error that names it."""
    planned = []
    for index, config in enumerate(space.listed(num_classes)):
        cost = estimate(config, space.step_for(config), budget.memory_gb)
        if not budget.admits(cost):
            label = space.configs[index].label
            named = f"configs[{index}] ({label}: {config.name})" if label else f"configs[{index}] ({config.name})"
            over, fixes = [], []
            if cost.train_gflops > budget.gflops:
                over.append(f"{cost.train_gflops:.4g} GFLOPs")
                fixes.append(f"raise --budget-gflops to at least {cost.train_gflops:.4g} or drop it (a space of "
                             "listed configs needs none)")
            if budget.memory_gb is not None and cost.memory_gb > budget.memory_gb:
                over.append(f"{cost.memory_gb:.3g} GB")
                fixes.append(f"raise --budget-memory-gb to at least {cost.memory_gb:.3g}")
            raise PdsweepError(
                f"{named} of space {space.name!r} does not fit a budget of {budget} (it needs {' and '.join(over)}); "
                f"{' and '.join(fixes)}, or drop the config."
            )
        low = config.keep_range_low if config.keep_mode == "uniform" else config.keep_rate
        entry = space.configs[index]
        planned.append(PlannedConfig(cost, low, entry.label, entry.group))  # type: ignore[arg-type]
    return Plan(space.name, budget, policy, len(planned), tuple(planned), listed=True, notes=space.notes)


def _nothing_fits(space: SearchSpace, budget: Budget, architectures: list[Config]) -> str:
    """Which cap rules everything out, the config closest to fitting it, and what to raise."""
    low, rates = space.keep_rate_bounds[0], space.keep_rates
    costs = [estimate(replace(arch, keep_rate=window_rates(arch, rates)[0] if arch.family == "swin" else low),
                      space.step_for(arch), budget.memory_gb) for arch in architectures]
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
