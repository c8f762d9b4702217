"""Budget-aware sampling: every config this module yields fits its budget, by construction.

Optuna must see a *static* search space: TPE models each parameter's distribution across
trials, and Optuna rejects a categorical whose choices change between trials. Yet which
architectures fit depends on the budget, and the keep rate that fills a budget depends on the
architecture. The formulation that keeps both:

- every architecture axis (model, resolution, patch size, depth, ensemble size, sampling,
  keep mode) is suggested from its full, fixed list (or range), whatever the budget;
- the keep rate is not a free parameter. Under policy ``fill`` it is *derived*: the largest keep
  rate in the space's range whose cost the budget admits (closed form, exact). Under ``search``
  Optuna suggests ``keep_fraction`` in [0, 1], a position between the space's lowest keep rate
  and that largest one, so the parameter means the same thing ("how much of the affordable range
  to use") for every architecture;
- an architecture that does not fit even at the lowest keep rate is told to the study at once,
  inside the same ``suggest``, as a pruned trial whose constraint (``trial.set_constraint``, the
  Optuna 5 way) is its relative excess over the budget. TPE ranks such trials below every
  feasible one, so it learns where the budget ends, and no Ray trial is created for it.

:class:`BudgetSampler` does this for one Optuna trial; :mod:`pdsweep.sweep.searcher` wraps it into Ray
Tune's searcher interface.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Literal, get_args

from pdsweep.config import Config, architecture_axes
from pdsweep.config import keep_rate_for, patches_kept
from pdsweep.cost import Budget, excess, keep_rate_between, largest_keep_rate, window_rates
from pdsweep.errors import PdsweepError
from pdsweep.space import Categorical, FloatRange, IntRange, KeepPolicy, SearchSpace, plan

if TYPE_CHECKING:
    import optuna

SearchKind = Literal["tpe", "random", "grid"]
SEARCH_KINDS: tuple[str, ...] = get_args(SearchKind)
MAX_ASKS_PER_SUGGESTION = 10_000
STARTUP_SHARE = 1 / 3  # of a tier's trials, from the space-filling design (see startup_trials)


@dataclass(frozen=True)
class BudgetSampler:
    """Turns an Optuna trial into a config that fits ``budget``, or into an infeasible verdict."""

    space: SearchSpace
    budget: Budget
    policy: KeepPolicy = "fill"
    num_classes: int = 10

    def suggest(self, trial: optuna.Trial) -> Config | None:
        """A feasible config for ``trial``; None (constraint set on the trial) if none fits."""
        # Suggested first and for every trial, feasible or not, so TPE models it with the rest.
        fraction = trial.suggest_float("keep_fraction", 0.0, 1.0) if self.policy == "search" else None
        values = {}
        for name in architecture_axes():
            if name in self.space.axes:
                values[name] = _suggest_axis(trial, name, self.space.axes[name])
        low, high = self.space.keep_rate_bounds
        arch = Config(
            keep_rate=high, num_classes=self.num_classes,
            keep_range_low=low if values.get("keep_mode") == "uniform" else None, **self.space.complete(values),  # type: ignore[arg-type]
        )
        setup, rates = self.space.step_for(arch), self.space.keep_rates
        keep_rate = largest_keep_rate(arch, self.budget, setup, rates)
        if keep_rate is None:
            # Optuna holds a constraint > 0 as infeasible: the relative excess, however small.
            lowest = window_rates(arch, rates)[0] if arch.family == "swin" else low  # the least it can keep
            over = excess(replace(arch, keep_rate=lowest), self.budget, setup)
            trial.set_constraint("budget", max(over, 1e-9))
            return None
        if fraction is not None:
            keep_rate = keep_rate_between(arch, rates, keep_rate, fraction)
        return replace(arch, keep_rate=keep_rate)

    @property
    def finite(self) -> bool:
        """Whether :attr:`candidates` is every config the tier can be given (not so when the
        policy searches a continuous keep-rate range)."""
        return self.policy == "fill" or self.space.keep_rates.values is not None

    @cached_property
    def candidates(self) -> list[Config]:
        """The configs this tier can train: each feasible architecture at its ``fill`` keep rate,
        or, under policy ``search`` with listed keep rates, at each rate it can afford."""
        if self.policy == "search":
            return self.grid()
        return [planned.config for planned in plan(self.space, self.budget, policy="fill", num_classes=self.num_classes).configs]

    def params(self, config: Config) -> dict[str, object]:
        """The Optuna parameters that :meth:`suggest` turns into ``config`` (to enqueue it)."""
        values: dict[str, object] = {name: getattr(config, name) for name in architecture_axes() if name in self.space.axes}
        # Axes a Swin ignores, and a uniform range that collapsed to one rate (a fixed config): any
        # of the space's values gives it.
        for name in ("patch_size", "sampling", "keep_mode") if config.family == "swin" else ("keep_mode",):
            choices = self.space.axes[name].values() if name in self.space.axes else [values.get(name)]
            if name in values and values[name] not in choices:
                values[name] = choices[0]
        if self.policy == "search":
            values["keep_fraction"] = _fraction_of(config, self.space.keep_rates, self.highest(config) or config.keep_rate)
        return values

    def untried_neighbour(self, config: Config, taken: set[str]) -> Config | None:
        """Under a continuous keep range (policy ``search``): ``config``'s architecture at the
        untried keep count nearest its own (``config`` itself if untried), within what the budget
        affords; None if every count was tried. TPE near its optimum draws the same few token
        counts again and again; this turns such a draw into a new config at once, not after
        many redraws."""
        rates = self.space.keep_rates
        if self.policy != "search" or rates.values is not None:
            return None
        highest = self.highest(config)
        if highest is None:
            return None
        if config.family == "swin":  # the few rates a window expresses, nearest first
            near = sorted((r for r in window_rates(config, rates) if r <= highest), key=lambda r: abs(r - config.keep_rate))
            return next((c for c in (replace(config, keep_rate=r) for r in near) if c.name not in taken), None)
        n = config.num_patches
        low, high = patches_kept(n, rates.low), patches_kept(n, highest)
        drawn = min(max(patches_kept(n, config.keep_rate), low), high)
        for distance in range(0, high - low + 1):
            for count in sorted({drawn - distance, drawn + distance}):
                if low <= count <= high:
                    rate = highest if count == high else max(rates.low, keep_rate_for(n, count))
                    candidate = replace(config, keep_rate=rate)
                    if candidate.name not in taken:
                        return candidate
        return None

    def at_fraction(self, config: Config, fraction: float) -> Config:
        """``config``'s architecture at ``fraction`` of the way from the space's lowest keep rate
        to the highest the budget affords it (as :meth:`suggest` maps ``keep_fraction``)."""
        highest = self.highest(config) or config.keep_rate
        return replace(config, keep_rate=keep_rate_between(config, self.space.keep_rates, highest, fraction))

    def highest(self, config: Config) -> float | None:
        """The largest keep rate of the space that the budget affords ``config``'s architecture
        (None if not even the lowest)."""
        rates = self.space.keep_rates
        return largest_keep_rate(replace(config, keep_rate=rates.high), self.budget, self.space.step_for(config), rates)

    def grid(self) -> list[Config]:
        """Every feasible config once: each architecture at its ``fill`` keep rate, or at each
        listed keep rate it can afford when the space lists keep rates; a space's listed configs
        as listed."""
        configs = []
        axis = self.space.keep_rate
        if self.space.configs:  # listed configs run as listed
            return [p.config for p in plan(self.space, self.budget, num_classes=self.num_classes).configs]
        for planned in plan(self.space, self.budget, policy="fill", num_classes=self.num_classes).configs:
            if isinstance(axis, FloatRange) and axis.step is None:
                configs.append(planned.config)
            elif planned.config.family == "swin":  # the window's rates within the listed span
                rates = window_rates(planned.config, self.space.keep_rates)
                configs += [replace(planned.config, keep_rate=r) for r in rates if r <= planned.config.keep_rate]
            else:
                configs += [
                    replace(planned.config, keep_rate=float(v))
                    for v in sorted(axis.values())
                    if float(v) <= planned.config.keep_rate
                ]
        return list(dict.fromkeys(configs))  # a uniform range of one rate is the fixed config


def _fraction_of(config: Config, rates, highest: float) -> float:
    """The ``keep_fraction`` that :func:`keep_rate_between` maps to ``config.keep_rate``."""
    if rates.values is not None or config.family == "swin":
        values = window_rates(config, rates) if config.family == "swin" else rates.values
        feasible = [v for v in values if v <= highest] or [highest]
        index = min(range(len(feasible)), key=lambda i: abs(feasible[i] - config.keep_rate))
        return (index + 0.5) / len(feasible)
    n = config.num_patches
    low, high = patches_kept(n, rates.low), patches_kept(n, highest)
    return 1.0 if high <= low else min(1.0, max(0.0, (patches_kept(n, config.keep_rate) - low) / (high - low)))


def startup_trials(quota: int, concurrency: int = 1) -> int:
    """How many of a tier's ``quota`` trials start the search from a space-filling design before
    TPE models the results: a third, at least 2 and at most 10 (Optuna's default, which alone
    would leave a sweep of 8 trials a random search), and at least ``concurrency``: every slot's
    first trial is a point of the design, and TPE's first ask comes once one of them has ended."""
    return min(quota, max(concurrency, 2, min(10, math.ceil(quota * STARTUP_SHARE))))


def _suggest_axis(trial: optuna.Trial, name: str, axis: Categorical | IntRange | FloatRange) -> object:
    if isinstance(axis, IntRange):
        return trial.suggest_int(name, axis.low, axis.high, step=axis.step, log=axis.log)
    if isinstance(axis, Categorical):
        return trial.suggest_categorical(name, list(axis.choices))
    raise TypeError(f"axis {name} cannot be a float range.")


def make_optuna_sampler(kind: SearchKind, seed: int, startup: int = 0) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, constant liar for parallel trials) after ``startup`` random trials, or
    random (also for a grid, whose points the searcher enqueues itself). The searcher's own
    design is TPE's start-up, so it takes none of Optuna's: Optuna counts only ended trials
    (infeasible draws among them) towards its random start-up, so asks made while the design
    runs would be random draws; with none, they are TPE's, each kept away from the trials still
    running by the constant liar. Optuna's GPSampler was tried in ``bench/search.py`` and left
    out: on a CPU driver each of its suggestions took seconds (a GP fit), against milliseconds
    for TPE."""
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=startup)
    if kind in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    raise PdsweepError(f"unknown search {kind!r}; choose one of: {', '.join(SEARCH_KINDS)}.")


def ask_feasible(study: optuna.Study, sampler: BudgetSampler) -> tuple[optuna.Trial, Config]:
    """Ask ``study`` until a trial maps to a feasible config; infeasible ones are told at once."""
    import optuna

    for _ in range(MAX_ASKS_PER_SUGGESTION):
        trial = study.ask()
        config = sampler.suggest(trial)
        if config is not None:
            return trial, config
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    raise PdsweepError(
        f"no feasible config in {MAX_ASKS_PER_SUGGESTION:,} draws under {sampler.budget}; "
        f"check `pdsweep plan --space {sampler.space.source} --budget-gflops {sampler.budget.gflops:g}`."
    )


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Optuna's ExperimentalWarning (constraints, enqueued trials) not shown: pdsweep relies on
    those features on purpose, and a user cannot act on the warning."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
