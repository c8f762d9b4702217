"""When to stop a trial: one ASHA per budget tier, so trials of different tiers never compete.

A cheap tier's trials are never stopped for being worse than an expensive tier's. Tune does not
save a scheduler's state, so after ``pdsweep resume`` :class:`TieredASHA` rebuilds its rungs from
the epochs the studies recorded for the trials Tune restored, so the trials that run after a
resume are judged against those that ran before it.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from pdsweep._compat import asha_trial_ids, rebase_trial_storage
from pdsweep.results.rows import RESULTS_FILE, read_rows
from pdsweep.sweep.searcher import recorded_epochs
from pdsweep.sweep.spec import METRIC, TIME_ATTR
from pdsweep.sweep.store import SweepStore, relocated, resuming


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


class TieredASHA(InPlace):
    """One ASHA per budget tier; trials of different tiers never compete."""

    def __init__(self, tiers: list[float], *, max_t: int, grace_period: int, reduction_factor: float,
                 store: SweepStore | None = None) -> None:
        super().__init__(store)
        self.max_t = max_t
        self.store = store  # where the studies are, to rebuild the rungs on resume
        self.seeded = store is None
        self.tiers: dict[str, float] = {}  # trial id -> tier, of the trials the tiers' ASHAs track
        self.by_tier = {
            tier: AsyncHyperBandScheduler(
                time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=max_t,
                grace_period=min(grace_period, max_t), reduction_factor=reduction_factor,
                stop_last_trials=False,  # a trial at the last epoch still sends its test metrics
            )
            for tier in tiers
        }

    def _for(self, trial: Any) -> AsyncHyperBandScheduler:
        return self.by_tier[trial.config["tier"]]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # each tier's ASHA was built with the metric and mode

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        self._for(trial).on_trial_add(tune_controller, trial)
        self.tiers[trial.trial_id] = trial.config["tier"]

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        # First called before any trial runs, once Tune has added the trials it restored; trials
        # that ended after Tune's last save of its state are not among those, but have rows.
        if not self.seeded:
            self.seed_rungs({trial.trial_id for trial in tune_controller.get_trials()} | ended_trials(self.store))
        return super().choose_trial_to_run(tune_controller)

    def seed_rungs(self, trial_ids: set[str]) -> None:
        """Replays the epochs the studies recorded for ``trial_ids`` (the trials Tune restored)
        through each tier's ASHA, so its rungs hold what they held before the driver died; a new
        sweep has none to replay. A trial Tune resumes keeps its id, so its rungs count once."""
        self.seeded = True
        if self.store is None:
            return
        for tier, scheduler in self.by_tier.items():
            for trial_id, epochs in recorded_epochs(self.store, tier, trial_ids).items():
                past = SimpleNamespace(trial_id=trial_id, config={"tier": tier})
                added = trial_id not in self.tiers  # a trial Tune will resume is in already
                if added:
                    scheduler.on_trial_add(None, past)
                for epoch, accuracy in epochs.items():
                    if epoch < self.max_t:  # as in on_trial_result: no decision at the last epoch
                        scheduler.on_trial_result(None, past, {TIME_ATTR: epoch, METRIC: accuracy})
                if added:
                    scheduler.on_trial_remove(None, past)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        # The final report repeats the last epoch, and a trial at its last epoch has nothing left to
        # save: stopping it then would only lose its test metrics (ASHA puts a rung at max_t).
        if result.get("done_training") or result.get(TIME_ATTR, 0) >= self.max_t:
            return TrialScheduler.CONTINUE
        return self._for(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        if self.tiers.pop(trial.trial_id, None) is not None:
            self._for(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        if self.tiers.pop(trial.trial_id, None) is not None:
            self._for(trial).on_trial_remove(tune_controller, trial)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({"seeded": True, **state})  # sweeps started before the replay lack it (and a store)
        if "tiers" not in state:  # pickled before the scheduler kept its own map of trials
            self.tiers = {trial_id: tier for tier, scheduler in self.by_tier.items() for trial_id in asha_trial_ids(scheduler)}


def ended_trials(store: SweepStore | None) -> set[str]:
    """The trials ``results.parquet`` records as ended (an interrupted one goes on)."""
    if store is None:
        return set()
    return {row.trial_id for row in read_rows(store.local_dir / RESULTS_FILE) if row.status != "interrupted"}
