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
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, get_args

from pdsweep.config import Config, architecture_axes
from pdsweep.cost import Budget, excess, keep_rate_between, largest_keep_rate
from pdsweep.errors import PdsweepError
from pdsweep.space import Categorical, FloatRange, IntRange, KeepPolicy, SearchSpace, plan

if TYPE_CHECKING:
    import optuna

SearchKind = Literal["tpe", "random", "grid"]
SEARCH_KINDS: tuple[str, ...] = get_args(SearchKind)
MAX_ASKS_PER_SUGGESTION = 10_000


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
            keep_range_low=low if values.get("keep_mode") == "uniform" else None, **values,  # type: ignore[arg-type]
        )
        setup, rates = self.space.training.step, self.space.keep_rates
        keep_rate = largest_keep_rate(arch, self.budget, setup, rates)
        if keep_rate is None:
            # Optuna holds a constraint > 0 as infeasible: the relative excess, however small.
            over = excess(replace(arch, keep_rate=low), self.budget, setup)
            trial.set_constraint("budget", max(over, 1e-9))
            return None
        if fraction is not None:
            keep_rate = keep_rate_between(arch, rates, keep_rate, fraction)
        return replace(arch, keep_rate=keep_rate)

    def grid(self) -> list[Config]:
        """Every feasible config once: each architecture at its ``fill`` keep rate, or at each
        listed keep rate it can afford when the space lists keep rates."""
        configs = []
        axis = self.space.keep_rate
        for planned in plan(self.space, self.budget, policy="fill", num_classes=self.num_classes).configs:
            if isinstance(axis, FloatRange) and axis.step is None:
                configs.append(planned.config)
            else:
                configs += [
                    replace(planned.config, keep_rate=float(v))
                    for v in sorted(axis.values())
                    if float(v) <= planned.config.keep_rate
                ]
        return configs


def _suggest_axis(trial: optuna.Trial, name: str, axis: Categorical | IntRange | FloatRange) -> object:
    if isinstance(axis, IntRange):
        return trial.suggest_int(name, axis.low, axis.high, step=axis.step, log=axis.log)
    if isinstance(axis, Categorical):
        return trial.suggest_categorical(name, list(axis.choices))
    raise TypeError(f"axis {name} cannot be a float range.")


def make_optuna_sampler(kind: SearchKind, seed: int) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, constant liar for parallel trials), or random (also for a grid, whose
    points the searcher enqueues itself)."""
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
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
