"""When to stop a trial: successive halving per budget tier that never judges a trial too early.

Three rules keep early stopping from discarding the configs PatchDropout exists to find:

- **One set of rungs per budget tier** (:class:`TieredASHA`): a cheap tier's trials are never
  stopped for being worse than an expensive tier's.
- **No judgement during warm-up, nor in the first part of training** (:func:`first_rung`): while
  the learning rate is still rising every config looks alike, and a trial's first epochs say
  little of where it ends. The first rung is a quarter of the epochs, after warm-up.
- **A trial is judged only against trials at its keep rate or lower** (:class:`KeepAwareRungs`):
  a config trained at a reduced keep rate sees fewer patches per step and lags in its first
  epochs, then catches up (the PatchDropout study; ``bench/paper_small.py`` measured keep 0.5
  7 points behind keep 1 after 4 epochs). Successive halving over all trials at a rung stops
  exactly those configs; compared with its peers at the same or a lower keep rate, a trial is
  stopped only for being behind configs that saw no more of each image than it did.

Tune does not save a scheduler's state, so after ``pdsweep resume`` :class:`TieredASHA` rebuilds
its rungs from the epochs the studies recorded for the trials Tune restored, so the trials that
run after a resume are judged against those that ran before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from pdsweep._compat import asha_rungs, rebase_trial_storage
from pdsweep.results.rows import RESULTS_FILE, read_rows
from pdsweep.sweep.searcher import recorded_epochs
from pdsweep.objective import Objective
from pdsweep.sweep.spec import TIME_ATTR, TrialSpec
from pdsweep.sweep.store import SweepStore, relocated, resuming

if TYPE_CHECKING:
    from pdsweep.space import TrainingSettings
    from pdsweep.sweep.settings import SweepSettings


class InPlace(FIFOScheduler):
    """First in, first out, with each new trial stored where the experiment is now (a sweep
    resumed after its folder moved; see :func:`pdsweep._compat.rebase_trial_storage`).

    On resume, before any trial starts, a trial that Tune restored as unfinished but whose row
    ``results.parquet`` holds (it ended after Tune's last save of its state, before the driver
    died) is stopped, not run again: its row is its record (``store``: where the sweep is). The
    other restored trials log their starts where the sweep folder is now."""

    def __init__(self, store: SweepStore | None = None) -> None:
        super().__init__()
        self.store = store
        self.settled = store is None

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        if not self.settled:  # first called once Tune has added the trials it restored
            self.settled = True
            self.stop_ended(tune_controller)
        return super().choose_trial_to_run(tune_controller)

    def stop_ended(self, tune_controller: Any) -> None:
        from ray.tune.experiment import Trial

        ended = ended_trials(self.store)
        starts_log = self.store.starts_log
        for trial in tune_controller.get_trials():
            if trial.status in (Trial.PENDING, Trial.PAUSED) and trial.trial_id in ended:
                tune_controller.stop_trial(trial)  # tells the scheduler, the searcher and the callback
            elif trial.config.get("starts_log") not in (None, starts_log):  # as Tune's PBT edits a config
                trial.set_config({**trial.config, "starts_log": starts_log})

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "store" not in state:  # pickled before it knew its sweep: the one this process resumes
            state = {**state, "store": resuming()}
        self.__dict__.update({"settled": state["store"] is None, **state})
        if self.store is None:  # no sweep to check restored trials against (nothing is resuming)
            self.settled = True
        else:
            self.store = relocated(self.store)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if tune_controller is not None:
            restored = next((t for t in tune_controller.get_trials()
                             if t is not trial and getattr(t, "storage", None) is not None), None)
            if restored is not None and getattr(trial, "storage", None) is not None:
                storage = restored.storage
                rebase_trial_storage(trial, f"{storage.storage_fs_path.rstrip('/')}/{storage.experiment_dir_name}")
        super().on_trial_add(tune_controller, trial)


GRACE_SHARE = 1 / 4  # of the epochs: the first rung, unless warm-up lasts longer (see first_rung)
_SAME_KEEP = 1e-9


def first_rung(epochs: int, warmup_epochs: int, grace_period: int | None = None) -> int:
    """The first epoch at which a trial can be stopped: ``grace_period`` (default: a quarter of
    ``epochs``, at least 1), and never before warm-up has ended."""
    grace = grace_period if grace_period is not None else max(1, math.ceil(epochs * GRACE_SHARE))
    return max(grace, warmup_epochs + 1)


@dataclass
class KeepAwareRungs:
    """Asynchronous successive halving (ASHA: Li et al., MLSys 2020) for one tier, in which a
    trial at a rung is compared only with the trials recorded there whose keep rate is at most
    its own: stopped when its score (the objective, higher is better) is below the
    ``1 - 1/reduction_factor`` quantile of theirs.

    A rung at each ``first * reduction_factor**k`` below ``max_t``; as Ray Tune's
    ``AsyncHyperBandScheduler``, a trial is judged once per rung, at the first result at or past it.
    """

    first: int
    max_t: int
    reduction_factor: float
    # milestone -> trial id -> (keep rate, score at the milestone)
    recorded: dict[float, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.first >= 1 and self.reduction_factor > 1):
            raise ValueError(f"`first >= 1` and `reduction_factor > 1` must hold, but got {self.first=}, "
                             f"{self.reduction_factor=}.")
        milestone = float(self.first)
        while milestone < self.max_t:
            self.recorded.setdefault(milestone, {})
            milestone *= self.reduction_factor

    def on_result(self, trial_id: str, keep_rate: float, epoch: float, score: float) -> bool:
        """Records the trial at the highest rung it has reached; True when it should stop there."""
        for milestone in sorted(self.recorded, reverse=True):
            rung = self.recorded[milestone]
            if epoch < milestone:
                continue
            if trial_id in rung:  # judged at this rung already (a resumed trial repeating an epoch)
                return False
            peers = [value for keep, value in rung.values() if keep <= keep_rate + _SAME_KEEP]
            rung[trial_id] = (keep_rate, score)
            if not peers:
                return False
            return bool(score < np.nanpercentile(peers, (1 - 1 / self.reduction_factor) * 100))
        return False


def keep_rate_of(trial: Any) -> float:
    """The share of patches the trial keeps on average (``Config.mean_keep_rate``); a trial
    without a config (a stand-in) counts as keep rate 1, compared with every other."""
    if "config" not in trial.config:
        return 1.0
    return TrialSpec.from_dict(trial.config).config.mean_keep_rate


class TieredASHA(InPlace):
    """One :class:`KeepAwareRungs` per budget tier; trials of different tiers never compete.

    ``grace_period``: the first rung (see :func:`first_rung` for the default ``pdsweep run`` uses).
    """

    def __init__(self, tiers: list[float], *, max_t: int, grace_period: int, reduction_factor: float,
                 store: SweepStore | None = None, objective: Objective = Objective()) -> None:
        super().__init__(store)
        self.objective = objective  # what the rungs compare (a loss negated: higher is better there)
        self.max_t = max_t
        self.store = store  # where the studies are, to rebuild the rungs on resume
        self.seeded = store is None
        self.by_tier = {tier: KeepAwareRungs(min(grace_period, max_t), max_t, reduction_factor) for tier in tiers}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # the tiers judge by the sweep's objective, given at construction

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        # First called before any trial runs, once Tune has added the trials it restored; trials
        # that ended after Tune's last save of its state are not among those, but have rows.
        if not self.seeded:
            self.seed_rungs({trial.trial_id for trial in tune_controller.get_trials()} | ended_trials(self.store))
        return super().choose_trial_to_run(tune_controller)

    def seed_rungs(self, trial_ids: set[str]) -> None:
        """Replays the epochs the studies recorded for ``trial_ids`` (the trials Tune restored)
        through each tier's rungs, so they hold what they held before the driver died; a new
        sweep has none to replay. A trial Tune resumes keeps its id, so its rungs count once."""
        self.seeded = True
        if self.store is None:
            return
        for tier, rungs in self.by_tier.items():
            for trial_id, (keep_rate, epochs) in recorded_epochs(self.store, tier, trial_ids).items():
                for epoch, value in epochs.items():
                    if epoch < self.max_t:  # as in on_trial_result: no decision at the last epoch
                        rungs.on_result(trial_id, keep_rate, epoch, self.objective.score(value))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        # The final report repeats the last epoch, and a trial at its last epoch has nothing left to
        # save: stopping it then would only lose its test metrics.
        metric = self.objective.val_key
        if result.get("done_training") or result.get(TIME_ATTR, 0) >= self.max_t or result.get(metric) is None:
            return TrialScheduler.CONTINUE
        rungs = self.by_tier[trial.config["tier"]]
        value = self.objective.score(float(result[metric]))
        stop = rungs.on_result(trial.trial_id, keep_rate_of(trial), result[TIME_ATTR], value)
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Sweeps started before the replay lack it (and a store); before the objective, accuracy.
        super().__setstate__({"seeded": True, "objective": Objective(), **state})
        # A sweep started before the keep-aware rungs pickled one of Ray's ASHAs per tier: its
        # records carry on as trials at keep rate 1 (the peers of full-token trials only), and its
        # rungs stay where they were (from epoch 1: it predates the warm-up rule).
        for tier, scheduler in list(self.by_tier.items()):
            if not isinstance(scheduler, KeepAwareRungs):
                milestones, rf = asha_rungs(scheduler)
                rungs = KeepAwareRungs(int(min(milestones)), self.max_t, rf)
                for milestone, recorded in milestones.items():
                    rungs.recorded[float(milestone)] = {t: (1.0, v) for t, v in recorded.items()}
                self.by_tier[tier] = rungs
        self.__dict__.pop("tiers", None)  # a map of running trials it kept before; their config says it


def ended_trials(store: SweepStore | None) -> set[str]:
    """The trials ``results.parquet`` records as ended (an interrupted one goes on)."""
    if store is None:
        return set()
    return {row.trial_id for row in read_rows(store.local_dir / RESULTS_FILE) if row.status != "interrupted"}


def search_scheduler(settings: SweepSettings, training: TrainingSettings, store: SweepStore | None) -> InPlace:
    """The scheduler of a sweep's search, as ``pdsweep run`` builds it from its settings
    (``store``: the sweep, for a resume to rebuild the rungs; None in a replay). A scheduler
    left None is ASHA: ``run_sweep`` has already turned it into none for a space of listed configs."""
    if settings.scheduler == "none":
        return InPlace(store)
    return TieredASHA(list(settings.budgets), max_t=training.epochs,
                      grace_period=first_rung(training.epochs, training.warmup_epochs, settings.grace_period),
                      reduction_factor=settings.reduction_factor, store=store, objective=training.objective)
