"""Does a config fit a budget, and what is the largest keep rate at which it does.

The one place that answers both, for every sampling strategy and keep mode: the planner, the
sampler and the grid all ask here. Cost rises with the kept count (the count asked of the
strategy; the top of the range under keep mode uniform), so a binary search over counts is
exact: about log2(N) closed-form evaluations, with no config objects built. A keep rate is then
the smallest float that yields the count (:func:`pdsweep.config.keep_rate_for`), never below the
lowest rate the space allows. A Swin keeps whole rows and columns per window: its rates are
the few a window expresses (:func:`window_rates`), each tried.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pdsweep.config import Config, keep_rate_for, patches_kept, strategy_count
from pdsweep.cost.arrangement import loosest
from pdsweep.cost.budget import Budget, estimate
from pdsweep.cost.flops import GIGA, _arch, _train_member_flops
from pdsweep.cost.memory import member_memory
from pdsweep.cost.setup import StepSetup
from pdsweep.errors import PdsweepError
from pdsweep.validate import is_rate
from pdsweep.windows import rates_within


@dataclass(frozen=True)
class KeepRates:
    """The keep rates a space allows: any in ``[low, high]`` (``values`` None), or those listed."""

    low: float
    high: float
    values: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not (is_rate(self.low) and is_rate(self.high) and self.low <= self.high):
            raise PdsweepError(f"`0 < low <= high <= 1` must hold for keep rates, but got {self.low=}, {self.high=}.")

    @classmethod
    def listed(cls, values: tuple[float, ...]) -> KeepRates:
        ordered = tuple(sorted(float(v) for v in values))
        return cls(ordered[0], ordered[-1], ordered)


def fits(config: Config, budget: Budget, setup: StepSetup = StepSetup()) -> bool:
    """Whether ``config`` trains within ``budget`` (its step arranged to, where it may be)."""
    return budget.admits(estimate(config, setup, budget.memory_gb))


def max_keep_count(config: Config, budget: Budget, setup: StepSetup = StepSetup(), *, low: int, high: int) -> int | None:
    """The largest count in ``[low, high]`` to ask of ``config``'s strategy within ``budget``."""
    a = _arch(config)
    least = loosest(setup, a.K)  # memory falls with the arrangement: some fits if the loosest does

    def count_fits(count: int) -> bool:
        T = strategy_count(config.grid_size, count, config.sampling) + 1
        # The same comparisons as Budget.admits, so the two never disagree at the boundary.
        if a.K * _train_member_flops(a, config, count) / GIGA > budget.gflops:
            return False
        return budget.memory_gb is None or member_memory(a, T, least).gb <= budget.memory_gb

    if not 1 <= low <= high <= a.N:
        raise PdsweepError(f"`1 <= low <= high <= {a.N}` must hold, but got {low=}, {high=}.")
    # Cost rises with the count except at N itself (no dropout, no index tensor): test it first.
    if count_fits(high):
        return high
    if not count_fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if count_fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def largest_keep_rate(arch: Config, budget: Budget, setup: StepSetup, rates: KeepRates) -> float | None:
    """The largest keep rate of ``rates`` at which ``arch`` fits ``budget``; None if none does.

    A continuous range may keep any count between its ends; a list keeps its own values.
    """
    if arch.family == "swin":
        fitting = [r for r in window_rates(arch, rates) if fits(replace(arch, keep_rate=r), budget, setup)]
        return fitting[-1] if fitting else None
    N = arch.num_patches
    if rates.values is None:
        best = max_keep_count(arch, budget, setup, low=patches_kept(N, rates.low), high=patches_kept(N, rates.high))
        return None if best is None else max(rates.low, keep_rate_for(N, best))
    fits_up_to = max_keep_count(arch, budget, setup, low=1, high=N)
    feasible = [r for r in rates.values if fits_up_to is not None and patches_kept(N, r) <= fits_up_to]
    return feasible[-1] if feasible else None


def keep_rate_between(arch: Config, rates: KeepRates, highest: float, fraction: float) -> float:
    """The keep rate ``fraction`` of the way from ``rates.low`` to ``highest``, as ``rates`` allow."""
    if arch.family == "swin":
        feasible = [r for r in window_rates(arch, rates) if r <= highest] or [highest]
        return feasible[min(len(feasible) - 1, int(fraction * len(feasible)))]
    N = arch.num_patches
    if rates.values is None:
        low, high = patches_kept(N, rates.low), patches_kept(N, highest)
        count = low + round(fraction * (high - low))
        return max(rates.low, keep_rate_for(N, count)) if count < high else highest
    feasible = [v for v in rates.values if v <= highest]
    return feasible[min(len(feasible) - 1, int(fraction * len(feasible)))]


def window_rates(arch: Config, rates: KeepRates) -> list[float]:
    """The keep rates a Swin's window expresses, (n / W)^2, within ``rates``' span (listed or a
    range alike: a window cannot keep 0.5 or 0.25), lowest first."""
    return rates_within(rates.low, rates.high, arch.preset.window)  # type: ignore[union-attr]


def excess(config: Config, budget: Budget, setup: StepSetup = StepSetup()) -> float:
    """How far ``config`` is over ``budget``, relatively (> 0 when it does not fit)."""
    cost = estimate(config, setup, budget.memory_gb)
    over = cost.train_gflops / budget.gflops - 1
    if budget.memory_gb is not None:
        over = max(over, cost.memory_gb / budget.memory_gb - 1)
    return over


