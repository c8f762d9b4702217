"""Ray Tune's side of the search: a searcher over Optuna studies, and ASHA per budget tier.

:class:`BudgetSearcher` is a ``ray.tune.search.Searcher`` over one Optuna study per budget tier
(ask/tell, in a journal file in the sweep folder, so ``pdsweep resume`` reopens them). Ray's
``OptunaSearch`` has no hook for what pdsweep needs: it asks again inside ``suggest`` when an
architecture cannot fit (:func:`pdsweep.sampler.ask_feasible`), interleaves the tiers in one Tune
run so they share the cluster, reports every epoch's validation accuracy as an intermediate
value, and tells a trial that ASHA stopped as *pruned* rather than complete: a stopped trial's
partial accuracy would otherwise rank it as a finished one, and TPE would learn from a number
that was never comparable.

Random search and grid issue their trials longest first (LPT order): the long trials start early
and the short ones fill the gaps, so no slot idles through a long trial drawn last. TPE keeps its
own order, since each of its suggestions learns from the trials before it.

:class:`TieredASHA` keeps one ASHA per tier, so a cheap tier's trials are never stopped for being
worse than an expensive tier's. Tune does not save a scheduler's state, so after ``pdsweep
resume`` it rebuilds its rungs from the epochs the studies recorded for the trials Tune restored,
so the trials that run after a resume are judged against those that ran before it.
"""

from __future__ import annotations

import pickle
import warnings
from types import SimpleNamespace
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from pdsweep.config import Config
from pdsweep.cost import Budget, inference_gflops, train_gflops
from pdsweep.plan import KeepPolicy
from pdsweep.sampler import BudgetSampler, SearchKind, ask_feasible, make_optuna_sampler
from pdsweep.space import SearchSpace
from pdsweep.store import STUDY_FILE, SweepStore, relocated
from pdsweep.trainable import METRIC, TIME_ATTR, trial_space


def tier_key(budget: Budget) -> str:
    return f"tier-{budget.gflops:g}"


def journal(store: SweepStore) -> optuna.storages.JournalStorage:
    """The sweep's Optuna studies (one per tier), in their journal file."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(store.local_dir / STUDY_FILE)))


def recorded_epochs(store: SweepStore, tier: float, trial_ids: set[str]) -> dict[str, dict[int, float]]:
    """The validation accuracy per epoch that the tier's study recorded for each of ``trial_ids``
    (Ray trial ids); a trial of a Tune run lost in a crash is not among them."""
    if not (store.local_dir / STUDY_FILE).is_file():
        return {}
    storage = journal(store)
    key = tier_key(Budget(tier))
    if key not in {study.study_name for study in storage.get_all_studies()}:
        return {}
    study = optuna.load_study(study_name=key, storage=storage)
    return {
        t.user_attrs["ray_trial_id"]: dict(sorted(t.intermediate_values.items()))
        for t in study.get_trials(deepcopy=False)
        if t.intermediate_values and t.user_attrs.get("ray_trial_id") in trial_ids
    }


class BudgetSearcher(Searcher):
    """Suggests feasible configs for each budget tier in turn, from that tier's Optuna study."""

    def __init__(
        self,
        space: SearchSpace,
        budgets: list[Budget],
        *,
        search: SearchKind,
        trials: int,
        policy: KeepPolicy,
        seed: int,
        store: SweepStore,
        trial_fields: dict[str, Any],
        num_classes: int,
    ) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.space = space
        self.samplers = {tier_key(b): BudgetSampler(space, b, policy, num_classes) for b in budgets}
        self.budgets = {tier_key(b): b for b in budgets}
        self.search = search
        self.seed = seed
        self.store = store  # paths resolve at use time: a resume may run elsewhere
        self.trial_fields = trial_fields  # what every trial's config dict carries besides the config
        # A grid runs its most expensive configs first: the long trials start early and the short
        # ones fill the gaps, so no slot idles for a whole long trial at the end (LPT order).
        self.grids = {key: longest_first(sampler.grid()) for key, sampler in self.samplers.items()} if search == "grid" else {}
        self.quota = {key: len(self.grids[key]) if search == "grid" else trials for key in self.samplers}
        self.issued = {key: 0 for key in self.samplers}
        self.seen: dict[str, dict[str, int]] = {key: {} for key in self.samplers}  # config -> times issued
        self.running: dict[str, tuple[str, int]] = {}  # Ray trial id -> (tier, Optuna trial id)
        # Random search: drawn (asked) but not yet issued, longest first, as (Optuna trial id, config).
        self.queued: dict[str, list[tuple[int, Config]]] = {key: [] for key in self.samplers}
        self._studies: dict[str, optuna.Study] = {}

    @property
    def total_trials(self) -> int:
        return sum(self.quota.values())

    def study(self, key: str) -> optuna.Study:
        if key not in self._studies:
            self._open(key)
        return self._studies[key]

    def _open(self, key: str) -> None:
        if key not in self._studies:
            storage = journal(self.store)
            index = list(self.samplers).index(key)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study = self._studies[key] = optuna.create_study(
                    study_name=key, storage=storage, direction="maximize", load_if_exists=True,
                    sampler=make_optuna_sampler(self.search, self.seed + index),
                )
            self.queued[key] = self._requeue(key, study)
            # Trials asked after Tune's last checkpoint never became Ray trials (the driver died in
            # between): close them, so they count as nothing.
            known = {optuna_id for _, optuna_id in self.running.values()}
            known |= {optuna_id for optuna_id, _ in self.queued[key]}
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial._trial_id not in known:
                    study.tell(trial.number, state=TrialState.FAIL)

    def _requeue(self, key: str, study: optuna.Study) -> list[tuple[int, Config]]:
        """The saved queue of drawn trials, checked against the journal. A queued trial that was
        issued after the save (it names a Ray trial) ran in a Tune run that this state does not
        know: it is closed, and its config drawn again as a fresh Optuna trial, so no epoch of the
        lost run is mistaken for the new one's. One that the journal lost is left out (the quota
        draws a new one)."""
        queue = []
        for optuna_id, config in self.queued[key]:
            frozen = self._frozen(study, optuna_id)
            if frozen is None:
                continue
            if frozen.state == TrialState.RUNNING and "ray_trial_id" not in frozen.user_attrs:
                queue.append((optuna_id, config))
                continue
            if frozen.state == TrialState.RUNNING:
                study.tell(frozen.number, state=TrialState.FAIL)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.enqueue_trial(frozen.params)
                again = study.ask()
                redrawn = self.samplers[key].suggest(again)  # the same params: the same config
            if redrawn is None:
                study.tell(again, state=TrialState.PRUNED)
            else:
                queue.append((again._trial_id, redrawn))
        return queue

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        open_tiers = [key for key in self.samplers if self.issued[key] < self.quota[key]]
        if not open_tiers:
            return Searcher.FINISHED
        key = min(open_tiers, key=lambda k: self.issued[k])  # round robin: tiers run side by side
        study = self.study(key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.search == "grid":  # the searcher's own order, so a resume re-issues exactly what is missing
                study.enqueue_trial({"grid_index": self.issued[key]})
                trial = study.ask()
                config: Config = self.grids[key][trial.suggest_categorical("grid_index", list(range(self.quota[key])))]
            elif self.search == "random":
                trial, config = self._next_drawn(key, study)
            else:
                trial, config = ask_feasible(study, self.samplers[key])
        trial.set_user_attr("config", config.name)
        trial.set_user_attr("ray_trial_id", trial_id)  # how a resumed ASHA finds the trial's epochs
        self.issued[key] += 1
        self.running[trial_id] = (key, trial._trial_id)
        # A config suggested again trains with the next seed: a replicate, not an identical rerun.
        replicate = self.seen[key].get(config.name, 0)
        self.seen[key][config.name] = replicate + 1
        fields = {**self.trial_fields, "seed": self.trial_fields["seed"] + replicate}
        return trial_space(config.to_dict(), tier=self.budgets[key].gflops, phase="search", **fields)

    def _next_drawn(self, key: str, study: optuna.Study) -> tuple[optuna.Trial, Config]:
        """The tier's next random trial. Random draws do not depend on one another, so the tier's
        remaining trials are drawn at once and issued most expensive first; the Optuna trials stay
        open (RUNNING) in the journal until issued, and the queue is saved with Tune's state."""
        if not self.queued[key]:
            drawn = [ask_feasible(study, self.samplers[key]) for _ in range(self.quota[key] - self.issued[key])]
            drawn.sort(key=lambda pair: cost_rank(pair[1]))
            self.queued[key] = [(trial._trial_id, config) for trial, config in drawn]
        optuna_id, config = self.queued[key].pop(0)
        return optuna.Trial(study, optuna_id), config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.running and not result.get("done_training"):
            self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict[str, Any]) -> None:
        """An epoch's accuracy as the Optuna trial's intermediate value (once per epoch)."""
        if METRIC not in result or TIME_ATTR not in result:
            return
        key, optuna_id = self.running[trial_id]
        study = self.study(key)
        frozen = self._frozen(study, optuna_id)
        if frozen and frozen.state == TrialState.RUNNING and int(result[TIME_ATTR]) not in frozen.intermediate_values:
            optuna.Trial(study, optuna_id).report(float(result[METRIC]), step=int(result[TIME_ATTR]))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.running:
            return
        if result and not error and not result.get("done_training"):
            # Tune does not pass the result that made the scheduler stop a trial to on_trial_result.
            self._report(trial_id, result)
        key, optuna_id = self.running.pop(trial_id)
        study = self.study(key)
        frozen = self._frozen(study, optuna_id)
        if frozen is None:
            return
        number = frozen.number
        if error or not result:
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        elif result.get("done_training"):
            study.tell(number, float(result.get(f"best_{METRIC}", result[METRIC])), skip_if_finished=True)
        else:  # stopped early by the scheduler: its partial accuracy is not comparable
            study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)

    @staticmethod
    def _frozen(study: optuna.Study, optuna_id: int) -> optuna.trial.FrozenTrial | None:
        """The Optuna trial, or None if the journal lost it (a crash before it was published)."""
        try:
            return study._storage.get_trial(optuna_id)
        except KeyError:
            return None

    # ---- Tune's checkpointing: the studies live in their journal; the rest is pickled -------

    def save(self, checkpoint_path: str) -> None:
        # The journal goes out first: a remote copy must never be older than the state saved here.
        journal = self.store.local_dir / STUDY_FILE
        stamp = (journal.stat().st_size, journal.stat().st_mtime_ns) if journal.is_file() else None
        if stamp != getattr(self, "_published", None):
            self.store.publish(STUDY_FILE)
            self._published = stamp
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"issued": self.issued, "running": self.running, "seen": self.seen, "queued": self.queued}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        self.issued, self.running, self.seen = state["issued"], state["running"], state["seen"]
        self.queued = state.get("queued", {key: [] for key in self.samplers})  # absent in sweeps saved before it
        self._studies = {}
        for key in self.samplers:
            self._open(key)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_studies"] = {}  # reopened from the journal on demand
        state.pop("_published", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.store = relocated(self.store)


def cost_rank(config: Config) -> tuple[float, float]:
    """A sort key that puts the costliest config first (train, then inference GFLOPs)."""
    return (-train_gflops(config), -inference_gflops(config))


def longest_first(configs: list[Config]) -> list[Config]:
    """Configs by training cost, highest first (ties keep their order)."""
    return sorted(configs, key=cost_rank)


class ListSearcher(Searcher):
    """Suggests the given trial configs in order, once each (the repeats of the best configs)."""

    def __init__(self, points: list[dict[str, Any]]) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.points = points
        self.next = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.next >= len(self.points):
            return Searcher.FINISHED
        self.next += 1
        return self.points[self.next - 1]

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        return None

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.next, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.next = pickle.load(handle)


class TieredASHA(FIFOScheduler):
    """One ASHA per budget tier; trials of different tiers never compete."""

    def __init__(self, tiers: list[float], *, max_t: int, grace_period: int, reduction_factor: float,
                 store: SweepStore | None = None) -> None:
        super().__init__()
        self.max_t = max_t
        self.store = store  # where the studies are, to rebuild the rungs on resume
        self.seeded = store is None
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
        self._for(trial).on_trial_add(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        # First called before any trial runs, once Tune has added the trials it restored.
        if not self.seeded:
            self.seed_rungs({trial.trial_id for trial in tune_controller.get_trials()})
        return super().choose_trial_to_run(tune_controller)

    def seed_rungs(self, trial_ids: set[str]) -> None:
        """Replays the epochs the studies recorded for ``trial_ids`` (the trials Tune restored)
        through each tier's ASHA, so its rungs hold what they held before the driver died; a new
        sweep has none to replay. A trial Tune resumes keeps its id, so its rungs count once."""
        self.seeded = True
        assert self.store is not None
        for tier, scheduler in self.by_tier.items():
            for trial_id, epochs in recorded_epochs(self.store, tier, trial_ids).items():
                past = SimpleNamespace(trial_id=trial_id, config={"tier": tier})
                added = trial_id not in scheduler._trial_info  # a trial Tune will resume is in already
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
        scheduler = self._for(trial)
        if trial.trial_id in scheduler._trial_info:
            scheduler.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        scheduler = self._for(trial)
        if trial.trial_id in scheduler._trial_info:
            scheduler.on_trial_remove(tune_controller, trial)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"store": None, "seeded": True, **state})  # sweeps started before the replay lack both
        if self.store is not None:
            self.store = relocated(self.store)
