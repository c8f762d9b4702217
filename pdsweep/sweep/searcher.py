"""Ray Tune's side of the search: which trial to run next, from one Optuna study per budget tier.

:class:`BudgetSearcher` is a ``ray.tune.search.Searcher`` over one Optuna study per budget tier
(ask/tell, in a journal file in the sweep folder, so ``pdsweep resume`` reopens them). Ray's
``OptunaSearch`` has no hook for what pdsweep needs: it asks again inside ``suggest`` when an
architecture cannot fit (:func:`pdsweep.sweep.sampler.ask_feasible`), interleaves the tiers in one Tune
run so they share the cluster, reports every epoch's validation accuracy as an intermediate
value, and tells a trial that ASHA stopped as *pruned* rather than complete: a stopped trial's
partial accuracy would otherwise rank it as a finished one, and TPE would learn from a number
that was never comparable. Pruned ranks a trial below the finished ones (optuna#4211), which is
a fair verdict only because the scheduler stops a trial for being behind trials at its keep rate
or lower (:mod:`pdsweep.sweep.schedulers`), never for the early lag of a reduced keep rate: a
region of low keep rates is not marked bad for learning slower. A trial that ran out of memory or diverged is told as infeasible
(pruned, with a constraint), like an architecture over the budget; one that raised, as failed.

Random search and grid issue their trials longest first (LPT order): the long trials start early
and the short ones fill the gaps, so no slot idles through a long trial drawn last. TPE keeps its
own order, since each of its suggestions learns from the trials before it.

The tiered ASHA that decides when to stop is in :mod:`pdsweep.sweep.schedulers`.
"""

from __future__ import annotations

import math
import pickle
import random
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from pdsweep._compat import ended_at_once, optuna_number, optuna_trial
from pdsweep.config import Config
from pdsweep.cost import Budget, estimate, inference_gflops, train_gflops
from pdsweep.results.rows import RESULTS_FILE, read_rows
from pdsweep.space import KeepPolicy, SearchSpace, TrainingSettings
from pdsweep.sweep.design import nearest_first, nearest_unseen, startup_design, trade_ends
from pdsweep.sweep.sampler import (
    BudgetSampler,
    SearchKind,
    ask_feasible,
    make_optuna_sampler,
    quiet_experimental,
    startup_trials,
)
from pdsweep.objective import Objective
from pdsweep.sweep.spec import TIME_ATTR, TrialContext, TrialSpec
from pdsweep.sweep.store import STUDY_FILE, SweepStore, relocated, retried

# Redraws of a config already trained, under a continuous keep range, once every keep count of
# every architecture was tried (before that, the nearest untried one is taken at once).
MAX_REDRAWS = 20
STATE_VERSION = 3  # 1: searcher states that held Optuna's storage ids, not trial numbers; 2: before issued_numbers

# A trial that ended so is told to its study as infeasible, with this constraint value (> 0;
# Optuna ranks the infeasible by it): the predicted memory of a config that ran out of memory
# (the larger, the further past the edge), 1 for one that diverged.
INFEASIBLE = {
    "oom": lambda result: max(float(result.get("predicted_memory_gb") or 1.0), 1e-9),
    "diverged": lambda result: 1.0,
}


def tier_key(budget: Budget) -> str:
    return f"tier-{budget.gflops:g}"


def journal(store: SweepStore) -> optuna.storages.JournalStorage:
    """The sweep's Optuna studies (one per tier), in their journal file."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(store.local_dir / STUDY_FILE)))


def recorded_epochs(store: SweepStore, tier: float, trial_ids: set[str]) -> dict[str, tuple[float, dict[int, float]]]:
    """The keep rate and the validation accuracy per epoch that the tier's study recorded for each
    of ``trial_ids`` (Ray trial ids); a trial of a Tune run lost in a crash is not among them. A
    trial recorded before the keep rate was kept counts as keep rate 1."""
    if not (store.local_dir / STUDY_FILE).is_file():
        return {}
    storage = journal(store)
    key = tier_key(Budget(tier))
    if key not in {study.study_name for study in storage.get_all_studies()}:
        return {}
    study = optuna.load_study(study_name=key, storage=storage)
    return {
        t.user_attrs["ray_trial_id"]: (float(t.user_attrs.get("keep_rate", 1.0)), dict(sorted(t.intermediate_values.items())))
        for t in study.get_trials(deepcopy=False)
        if t.intermediate_values and t.user_attrs.get("ray_trial_id") in trial_ids
    }


class BudgetSearcher(Searcher):
    """Suggests feasible configs for each budget tier in turn, from that tier's Optuna study.

    Optuna trials are known by their number within the tier's study.
    """

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
        context: TrialContext,
        num_classes: int,
        concurrency: int = 1,
    ) -> None:
        objective = context.training.objective
        super().__init__(metric=objective.val_key, mode=objective.mode)
        self.concurrency = concurrency  # trials at once: the start-up design has at least this many
        self.space = space
        self.samplers = {tier_key(b): BudgetSampler(space, b, policy, num_classes) for b in budgets}
        self.budgets = {tier_key(b): b for b in budgets}
        self.search = search
        self.seed = seed
        self.store = store  # paths resolve at use time: a resume may run elsewhere
        self.context = context  # what every trial shares; its training seed is the first trial seed
        # A grid runs its most expensive configs first: the long trials start early and the short
        # ones fill the gaps, so no slot idles for a whole long trial at the end (LPT order).
        self.grids = {key: longest_first(sampler.grid()) for key, sampler in self.samplers.items()} if search == "grid" else {}
        # A tier never trains a config twice in its search (a repeat is what --repeats is for), so
        # a tier with fewer configs than ``trials`` runs each of them once.
        self.quota = {
            key: len(self.grids[key]) if search == "grid" else min(trials, len(sampler.candidates)) if sampler.finite else trials
            for key, sampler in self.samplers.items()
        }
        self.issued = {key: 0 for key in self.samplers}
        self.seen: dict[str, dict[str, int]] = {key: {} for key in self.samplers}  # config -> times issued
        self.running: dict[str, tuple[str, int]] = {}  # Ray trial id -> (tier, Optuna trial number)
        # The Optuna trials issued (as Ray trials), by tier: what this state has counted. None: a
        # state saved before it was kept, which cannot tell the trials it missed.
        self.issued_numbers: dict[str, set[int]] | None = {key: set() for key in self.samplers}
        # Random search: drawn (asked) but not yet issued, longest first, as (Optuna trial number, config).
        self.queued: dict[str, list[tuple[int, Config]]] = {key: [] for key in self.samplers}
        self._studies: dict[str, optuna.Study] = {}

    @property
    def objective(self) -> Objective:
        """What the studies optimise: the sweep's ``training.metric``."""
        return self.context.training.objective

    @property
    def total_trials(self) -> int:
        return sum(self.quota.values())

    def study(self, key: str) -> optuna.Study:
        if key not in self._studies:
            self._open(key)
        return self._studies[key]

    def _open(self, key: str) -> None:
        if key not in self._studies:
            index = list(self.samplers).index(key)
            # The tiers take turns at the slots: each starts with a design point per slot it gets.
            startup = startup_trials(self.quota[key], math.ceil(self.concurrency / len(self.samplers)))
            with quiet_experimental():
                study = self._studies[key] = optuna.create_study(
                    study_name=key, storage=journal(self.store), direction=self.objective.direction, load_if_exists=True,
                    # TPE starts from the design below, not from random draws of its own.
                    sampler=make_optuna_sampler(self.search, self.seed + index),
                )
                if self.search == "tpe" and not study.get_trials(deepcopy=False):
                    # A model's own start-up draws at random; a space-filling design over the configs
                    # that fit covers them in fewer trials (pdsweep.sweep.design).
                    for config in self._design(key, startup, self.seed + index):
                        study.enqueue_trial(self.samplers[key].params(config))
            self.queued[key] = self._requeue(key, study)
            # Trials still open that this state does not know were asked or issued after Tune's last
            # save of it (the driver died in between): their runs are lost; closed, they count as nothing.
            known = {number for tier, number in self.running.values() if tier == key}
            known |= {number for number, _ in self.queued[key]}
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.number not in known:
                    _close_lost(study, trial.number)
                    if self.search == "tpe" and trial.system_attrs.get("fixed_params") and "duplicate_of" not in trial.user_attrs:
                        with quiet_experimental():  # a point of the start-up design: asked again, not lost
                            study.enqueue_trial(trial.system_attrs["fixed_params"])
            self._count_ended_unknown(key, study)

    def _design(self, key: str, count: int, seed: int) -> list[Config]:
        """The tier's start-up design. Under policy ``search`` over a continuous keep range (the
        candidates are each architecture at the most it affords), the baseline stays at keep
        rate 1 and the study's corner goes to the space's lowest keep rate, and each point of the
        spread is given its own stratum of the keep fraction, in a seeded order, so the design
        spreads the keep rate too."""
        sampler = self.samplers[key]
        design = startup_design(sampler.candidates, count, seed)
        if sampler.finite or not design:
            return design
        # The ends are two configs here even when they share an architecture (the costliest fits
        # at keep rate 1): the baseline at keep rate 1, the corner at the space's lowest.
        baseline, corner = trade_ends(sampler.candidates)
        ends = [sampler.at_fraction(c, fraction) for c, fraction in ((baseline, 1.0), (corner, 0.0)) if c is not None]
        ends = list(dict.fromkeys(ends))[:count]
        spread = [c for c in design if c not in (baseline, corner)][: count - len(ends)]
        strata = list(range(len(spread)))
        random.Random(seed).shuffle(strata)
        spread = [sampler.at_fraction(c, (stratum + 0.5) / len(spread)) for c, stratum in zip(spread, strata)]
        return ends + sorted(spread, key=train_gflops)

    def _count_ended_unknown(self, key: str, study: optuna.Study) -> None:
        """Trials issued and ended after Tune's last save of this state (their rows and results are
        in the sweep; Tune's restored state lacks them, so it never runs them again): counted as
        issued, their configs as tried, as if the state had been saved after them."""
        if self.issued_numbers is None:
            return
        counted = self.issued_numbers[key]
        for trial in study.get_trials(deepcopy=False):
            if ("ray_trial_id" in trial.user_attrs and trial.number not in counted and trial.state != TrialState.RUNNING
                    and not trial.user_attrs.get("lost")):
                counted.add(trial.number)
                self.issued[key] += 1
                name = trial.user_attrs.get("config")
                if name is not None:
                    self.seen[key][name] = self.seen[key].get(name, 0) + 1

    def _requeue(self, key: str, study: optuna.Study) -> list[tuple[int, Config]]:
        """The saved queue of drawn trials, checked against the journal. A queued trial that was
        issued after the save (it names a Ray trial) ran in a Tune run that this state does not
        know: it is closed, and its config drawn again as a fresh Optuna trial, so no epoch of the
        lost run is mistaken for the new one's. One that the journal lost is left out (the quota
        draws a new one)."""
        queue = []
        for number, config in self.queued[key]:
            frozen = _frozen(study, number)
            if frozen is None:
                continue
            if frozen.state == TrialState.RUNNING and "ray_trial_id" not in frozen.user_attrs:
                queue.append((number, config))
                continue
            if frozen.state != TrialState.RUNNING and "ray_trial_id" in frozen.user_attrs and not frozen.user_attrs.get("lost"):
                continue  # issued and ended after the save: counted by _count_ended_unknown
            if frozen.state == TrialState.RUNNING:
                _close_lost(study, frozen.number)
            with quiet_experimental():
                study.enqueue_trial(frozen.params)
                again = study.ask()
                redrawn = self.samplers[key].suggest(again)  # the same params: the same config
            if redrawn is None:
                study.tell(again, state=TrialState.PRUNED)
            else:
                queue.append((again.number, redrawn))
        return queue

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        open_tiers = [key for key in self.samplers if self.issued[key] < self.quota[key]]
        if not open_tiers:
            self._close_waiting()
            return Searcher.FINISHED
        key = min(open_tiers, key=lambda k: self.issued[k])  # round robin: tiers run side by side
        study = self.study(key)
        with quiet_experimental():
            if self.search == "grid":  # the searcher's own order, so a resume re-issues exactly what is missing
                study.enqueue_trial({"grid_index": self._next_grid_index(key, study)})
                trial = study.ask()
                config: Config = self.grids[key][trial.suggest_categorical("grid_index", list(range(self.quota[key])))]
            elif self.search == "random":
                trial, config = self._next_drawn(key, study)
            else:
                trial, config = self._ask_new(key, study, set(self.seen[key]))
        trial.set_user_attr("config", config.name)
        trial.set_user_attr("keep_rate", config.mean_keep_rate)  # how a resumed scheduler finds the trial's peers
        trial.set_user_attr("ray_trial_id", trial_id)  # how a resumed ASHA finds the trial's epochs
        # What it would be told as infeasible by, should Ray's memory monitor kill its worker.
        settings = TrainingSettings.of(config.init, self.context.training, self.context.finetune)
        trial.set_user_attr("predicted_memory_gb", estimate(config, settings.step, self.context.device_memory_gb).memory_gb)
        self.issued[key] += 1
        if self.issued_numbers is not None:
            self.issued_numbers[key].add(trial.number)
        self.running[trial_id] = (key, trial.number)
        # A config suggested again trains with the next seed: a replicate, not an identical rerun.
        replicate = self.seen[key].get(config.name, 0)
        self.seen[key][config.name] = replicate + 1
        seed = self.context.training.seed + replicate
        return TrialSpec(config, self.budgets[key].gflops, "search", seed, self.context).to_dict()

    def _next_grid_index(self, key: str, study: optuna.Study) -> int:
        """The tier's first grid point not issued yet (a resume may have counted later ones that ended)."""
        if self.issued_numbers is None:
            return self.issued[key]
        trials = study.get_trials(deepcopy=False)
        issued = {trials[n].params.get("grid_index") for n in self.issued_numbers[key]
                  if n < len(trials) and not trials[n].user_attrs.get("lost")}
        return next(i for i in range(self.quota[key]) if i not in issued)

    def _next_drawn(self, key: str, study: optuna.Study) -> tuple[optuna.Trial, Config]:
        """The tier's next random trial. Random draws do not depend on one another, so the tier's
        remaining trials are drawn at once and issued most expensive first; the Optuna trials stay
        open (RUNNING) in the journal until issued, and the queue is saved with Tune's state."""
        if not self.queued[key]:
            taken = set(self.seen[key])
            drawn = []
            for _ in range(self.quota[key] - self.issued[key]):
                drawn.append(self._ask_new(key, study, taken))
                taken.add(drawn[-1][1].name)
            drawn.sort(key=lambda pair: cost_rank(pair[1]))
            self.queued[key] = [(trial.number, config) for trial, config in drawn]
        number, config = self.queued[key].pop(0)
        return optuna_trial(study, number), config

    def _close_waiting(self) -> None:
        """Design points enqueued but never asked (the tier's quota ran out first, or a compute
        cap ended the search) are closed, so no trial of the journal stays open."""
        for key in self.samplers:
            study = self.study(key)
            for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                study.tell(study.ask(), state=TrialState.FAIL)  # ask takes the enqueued ones first; WAITING cannot be told

    def _ask_new(self, key: str, study: optuna.Study, taken: set[str]) -> tuple[optuna.Trial, Config]:
        """The study's next feasible config that is not in ``taken`` (config names). A draw of a
        config already trained is closed as failed (TPE ignores failed trials) and the untried
        config nearest to it is asked instead (under a continuous keep range: the same
        architecture at the nearest untried keep count); once every config was tried, the draw
        stands (a replicate with the next seed)."""
        sampler = self.samplers[key]
        trial, config = ask_feasible(study, sampler)
        for _ in range(len(sampler.candidates) if sampler.finite else MAX_REDRAWS):
            if config.name not in taken:
                break
            substitute = (nearest_unseen(config, sampler.candidates, taken) if sampler.finite
                          else _untried_nearby(sampler, config, taken))
            if substitute is None and sampler.finite:
                break
            trial.set_user_attr("duplicate_of", config.name)
            study.tell(trial, state=TrialState.FAIL)
            with quiet_experimental():
                if substitute is not None:
                    study.enqueue_trial(sampler.params(substitute))
                trial, config = ask_feasible(study, sampler)
        return trial, config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.running and not result.get("done_training"):
            self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict[str, Any]) -> None:
        """An epoch's value of the objective as the Optuna trial's intermediate value (once per epoch)."""
        metric = self.objective.val_key
        if not _number(result.get(metric)) or TIME_ATTR not in result:
            return
        key, number = self.running[trial_id]
        study = self.study(key)
        frozen = _frozen(study, number)
        if frozen and frozen.state == TrialState.RUNNING and int(result[TIME_ATTR]) not in frozen.intermediate_values:
            optuna_trial(study, number).report(float(result[metric]), step=int(result[TIME_ATTR]))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.running:
            return
        if result and not error and not result.get("done_training"):
            # Tune does not pass the result that made the scheduler stop a trial to on_trial_result.
            self._report(trial_id, result)
        key, number = self.running.pop(trial_id)
        study = self.study(key)
        if _frozen(study, number) is None:
            return
        fault = (result or {}).get("trial_status")
        if fault in INFEASIBLE:
            # The config does not fit (oom) or cannot train (diverged): infeasible, as an architecture
            # over the budget is, so TPE learns the edge and proposes neither it nor its like again.
            frozen = _frozen(study, number)
            if frozen.state == TrialState.RUNNING and fault not in frozen.constraints:
                with quiet_experimental():
                    optuna_trial(study, number).set_constraint(fault, INFEASIBLE[fault](result))
            study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        elif error and ended_at_once(trial_id):  # its worker was killed for memory: infeasible, as any oom
            frozen = _frozen(study, number)
            if frozen.state == TrialState.RUNNING and "oom" not in frozen.constraints:
                with quiet_experimental():
                    optuna_trial(study, number).set_constraint("oom", INFEASIBLE["oom"](frozen.user_attrs))
            study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        elif error or not result or fault == "error":
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        elif result.get("done_training"):
            value = result.get(self.objective.best_key, result.get(self.objective.val_key))
            if _number(value):
                study.tell(number, float(value), skip_if_finished=True)
            else:  # e.g. an AUC undefined on a validation split of one class
                study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        else:  # stopped early by the scheduler: its partial accuracy is not comparable
            study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)

    # ---- Tune's checkpointing: the studies live in their journal; the rest is pickled -------

    def save(self, checkpoint_path: str) -> None:
        # The journal goes out first: a remote copy must never be older than the state saved here.
        journal_file = self.store.local_dir / STUDY_FILE
        stamp = (journal_file.stat().st_size, journal_file.stat().st_mtime_ns) if journal_file.is_file() else None
        state = pickle.dumps({"version": STATE_VERSION, "issued": self.issued, "running": self.running,
                              "seen": self.seen, "queued": self.queued, "issued_numbers": self.issued_numbers})
        if stamp != getattr(self, "_published", None):
            if retried(lambda: self.store.publish(STUDY_FILE), attempts=2) is None:
                self._published = stamp
            elif getattr(self, "_last_state", None) is not None:
                # Storage failed: save the state that matches the journal last published (a resume
                # from it closes the trials the journal has beyond it, as after a crash). Tune
                # saves again at its next step, and the journal goes out then.
                state = self._last_state
        if stamp == getattr(self, "_published", None):
            self._last_state = state
        with open(checkpoint_path, "wb") as handle:
            handle.write(state)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        self.issued, self.running, self.seen = state["issued"], state["running"], state["seen"]
        self.queued = state.get("queued", {key: [] for key in self.samplers})  # absent in sweeps saved before it
        self.issued_numbers = state.get("issued_numbers")
        if state.get("version", 1) < 2:
            self._numbers_from_ids()
        self._studies = {}
        for key in self.samplers:
            self._open(key)
        if self.issued_numbers is None:  # saved at every step by an older pdsweep: it missed nothing
            self.issued_numbers = {key: {t.number for t in self.study(key).get_trials(deepcopy=False)
                                         if "ray_trial_id" in t.user_attrs and not t.user_attrs.get("lost")}
                                   for key in self.samplers}

    def _numbers_from_ids(self) -> None:
        """A state saved before trials were kept by number held Optuna's storage ids: map them."""
        storage = journal(self.store)
        existing = {study.study_name for study in storage.get_all_studies()}
        # A tier whose first trial was never suggested has no study yet, and nothing to map.
        studies = {key: optuna.load_study(study_name=key, storage=storage) for key in self.samplers if key in existing}
        running = {}
        for ray_id, (key, trial_id) in self.running.items():
            number = optuna_number(studies[key], trial_id) if key in studies else None
            if number is not None:
                running[ray_id] = (key, number)
        self.running = running
        for key, queue in self.queued.items():
            pairs = [(optuna_number(studies[key], trial_id), config) for trial_id, config in queue] if key in studies else []
            self.queued[key] = [(number, config) for number, config in pairs if number is not None]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_studies"] = {}  # reopened from the journal on demand
        state.pop("_published", None)
        state.pop("_last_state", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "trial_fields" in state:  # pickled by a sweep started before TrialContext
            fields = state.pop("trial_fields")
            training = TrainingSettings(**fields["training"])
            state["context"] = TrialContext(replace(training, seed=fields["seed"]), fields["dataset"],
                                            fields["split_seed"], fields["cache_dir"], fields["starts_log"])
        # Pickled before these: issued_numbers (see restore()), concurrency (a design of its own size).
        self.__dict__.update({"issued_numbers": None, "concurrency": 1, **state})
        self.store = relocated(self.store)
        if self.context.starts_log:  # the sweep folder may have moved: new trials log where it is now
            self.context = replace(self.context, starts_log=self.store.starts_log)


def _close_lost(study: optuna.Study, number: int) -> None:
    """Close an open trial whose run was lost with its driver, marked so it is never counted."""
    optuna_trial(study, number).set_user_attr("lost", True)
    study.tell(number, state=TrialState.FAIL)


def _frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial | None:
    """The study's trial ``number``, or None if the journal lost it (a crash before it was published)."""
    trials = study.get_trials(deepcopy=False)
    return trials[number] if 0 <= number < len(trials) else None


def cost_rank(config: Config) -> tuple[float, float]:
    """A sort key that puts the costliest config first (train, then inference GFLOPs)."""
    return (-train_gflops(config), -inference_gflops(config))


def longest_first(configs: list[Config]) -> list[Config]:
    """Configs by training cost, highest first (ties keep their order)."""
    return sorted(configs, key=cost_rank)


def _untried_nearby(sampler: BudgetSampler, config: Config, taken: set[str]) -> Config | None:
    """Under a continuous keep range: ``config``'s architecture at its nearest untried keep count;
    once that architecture has none left, the nearest architecture that has one, at the count
    nearest ``config``'s keep rate; None once every count of every architecture was tried."""
    found = sampler.untried_neighbour(config, taken)
    if found is not None:
        return found
    for architecture in nearest_first(config, sampler.candidates):  # each feasible architecture once
        rate = min(config.keep_rate, architecture.keep_rate)  # its keep rate here: the most it affords
        found = sampler.untried_neighbour(replace(architecture, keep_rate=rate), taken)
        if found is not None:
            return found
    return None


class ListSearcher(Searcher):
    """Suggests the given trial configs in order, once each (the repeats of the best configs).

    Restored from a state Tune saved before some of them were issued, it skips those whose rows
    ``results.parquet`` already holds (``store``: where the sweep is); a lost one runs again."""

    def __init__(self, points: list[dict[str, Any]], store: SweepStore | None = None,
                 objective: Objective = Objective()) -> None:
        super().__init__(metric=objective.val_key, mode=objective.mode)
        self.points = points
        self.next = 0
        self.store = store
        self.ended: set[tuple[str, str, int, float]] = set()  # (phase, config, seed, tier) of rows, after a restore

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        while self.next < len(self.points) and _point_key(self.points[self.next]) in self.ended:
            self.next += 1
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
        if self.store is not None:
            rows = read_rows(self.store.local_dir / RESULTS_FILE)
            self.ended = {(r.phase, r.config.name, r.seed, r.budget_gflops) for r in rows if r.status != "interrupted"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"store": None, "ended": set(), **state})  # pickled before these
        if self.store is not None:
            self.store = relocated(self.store)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _point_key(point: dict[str, Any]) -> tuple[str, str, int, float]:
    spec = TrialSpec.from_dict(point)
    return spec.phase, spec.config.name, spec.seed, spec.tier
