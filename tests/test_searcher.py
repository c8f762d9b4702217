"""The Ray-facing searcher and scheduler on their own (the sweep tests run them under Tune)."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from pdsweep.config import Config, keep_rate_for
from pdsweep.cost import Budget, train_gflops
from pdsweep.space import TrainingSettings, load_space
from pdsweep.sweep.schedulers import TieredASHA
from pdsweep.sweep.searcher import BudgetSearcher, _untried_nearby
from pdsweep.sweep.spec import TrialContext
from pdsweep.sweep.store import SweepStore

CONTEXT = TrialContext(TrainingSettings(), "synthetic", split_seed=0)


def _searcher(tmp_path: Path, search: str = "tpe", trials: int = 3) -> BudgetSearcher:
    return BudgetSearcher(
        load_space("paper"), [Budget(1.3), Budget(4.6)], search=search, trials=trials, policy="fill",  # type: ignore[arg-type]
        seed=0, store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=10,
    )


@pytest.fixture(autouse=True)
def _sweep_folder(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir(exist_ok=True)


def test_tiers_take_turns_and_every_config_fits(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path)
    suggestions = [searcher.suggest(f"t{i}") for i in range(6)]
    assert [s["tier"] for s in suggestions] == [1.3, 4.6] * 3
    for s in suggestions:
        assert train_gflops(Config(**s["config"])) <= s["tier"] and s["phase"] == "search"
    assert searcher.suggest("t6") is Searcher.FINISHED


def test_outcomes_reach_optuna_as_complete_pruned_or_failed(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path, trials=3)
    for i in range(6):
        searcher.suggest(f"t{i}")
    for epoch, accuracy in ((1, 0.3), (2, 0.4)):
        searcher.on_trial_result("t0", {"epoch": epoch, "val_accuracy": accuracy})
    searcher.on_trial_complete("t0", {"epoch": 2, "val_accuracy": 0.4, "done_training": True, "best_val_accuracy": 0.45})
    # ASHA stopped t2 on its epoch-1 result, which Tune then passes to on_trial_complete only.
    searcher.on_trial_complete("t2", {"epoch": 1, "val_accuracy": 0.2})
    searcher.on_trial_complete("t4", None, error=True)
    ours = {t.user_attrs["config"]: t for t in searcher.study("tier-1.3").trials if "config" in t.user_attrs}
    states = sorted((t.state.name, t.value) for t in ours.values())
    assert states == [("COMPLETE", 0.45), ("FAIL", None), ("PRUNED", 0.2)]  # pruned keeps its last epoch's value
    complete = next(t for t in ours.values() if t.state == TrialState.COMPLETE)
    assert complete.intermediate_values == {1: 0.3, 2: 0.4}
    pruned = next(t for t in ours.values() if t.state == TrialState.PRUNED)
    assert pruned.intermediate_values == {1: 0.2}  # TPE ranks it by this, not as the worst of all
    # A trial completed again after a resume is told once, silently.
    searcher.running["again"] = searcher.running.get("again") or ("tier-1.3", complete.number)
    searcher.on_trial_complete("again", {"epoch": 2, "val_accuracy": 0.4, "done_training": True})


def test_save_restore_continues_and_closes_orphans(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path, trials=3)
    searcher.suggest("t0")
    searcher.save(str(tmp_path / "state.pkl"))
    searcher.suggest("t1")  # asked after Tune's last checkpoint: an orphan after a crash
    restored = _searcher(tmp_path, trials=3)
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored.issued == {"tier-1.3": 1, "tier-4.6": 0} and set(restored.running) == {"t0"}
    failed = [t for t in restored.study("tier-4.6").trials if t.state == TrialState.FAIL]
    assert len(failed) == 1  # t1's Optuna trial, closed
    assert [restored.suggest(f"n{i}")["tier"] for i in range(5)] == [4.6, 1.3, 4.6, 1.3, 4.6]


def test_trials_that_ended_after_the_save_count_on_restore(tmp_path: Path) -> None:
    # Tune saves its state on a period: a driver killed after trials ended, before the next
    # save, leaves a state that lacks them. Their results are in the journal, so they count:
    # the quota is not issued again and their configs are not trained twice.
    searcher = _searcher(tmp_path, trials=4)
    searcher.suggest("t0")
    searcher.save(str(tmp_path / "state.pkl"))
    tiers = [searcher.suggest(f"t{i}")["tier"] for i in (1, 2, 3)]  # the tiers take turns
    assert tiers == [4.6, 1.3, 4.6]
    searcher.on_trial_complete("t1", {"epoch": 2, "val_accuracy": 0.4, "done_training": True})
    searcher.on_trial_complete("t2", {"epoch": 1, "val_accuracy": 0.2})  # stopped early: pruned
    # t3 is still running when the driver dies: lost.
    trained = {key: {t.user_attrs["config"] for t in searcher.study(key).trials
                     if t.state in (TrialState.COMPLETE, TrialState.PRUNED)} for key in ("tier-1.3", "tier-4.6")}
    assert [len(trained["tier-1.3"]), len(trained["tier-4.6"])] == [1, 1]
    restored = _searcher(tmp_path, trials=4)
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored.issued == {"tier-1.3": 2, "tier-4.6": 1}  # t0 (saved), t2 and t1 (from the journal); not t3
    lost = [t for t in restored.study("tier-4.6").trials if t.user_attrs.get("ray_trial_id") == "t3"]
    assert [(t.state, t.user_attrs.get("lost")) for t in lost] == [(TrialState.FAIL, True)]
    after = _issue_all(restored, "n")
    assert len(after) == 8 - 3
    for key, tier in (("tier-1.3", 1.3), ("tier-4.6", 4.6)):
        again = {Config(**s["config"]).name for s in after if s["tier"] == tier}
        assert not again & trained[key]  # nothing that ended is trained again
    # Killed again before any save: restored once more from the same state, the same trials count
    # (the ones the second driver issued were lost too), none twice.
    twice = _searcher(tmp_path, trials=4)
    twice.restore(str(tmp_path / "state.pkl"))
    assert twice.issued == {"tier-1.3": 2, "tier-4.6": 1}


def test_a_random_draw_that_ended_after_the_save_is_not_drawn_again(tmp_path: Path) -> None:
    first = _searcher(tmp_path, search="random", trials=4)
    [first.suggest(f"t{i}") for i in range(3)]
    first.save(str(tmp_path / "state.pkl"))
    done = first.suggest("t3")  # issued from the drawn queue after the save, and finished
    first.on_trial_complete("t3", {"epoch": 2, "val_accuracy": 0.4, "done_training": True})
    second = _searcher(tmp_path, search="random", trials=4)
    second.restore(str(tmp_path / "state.pkl"))
    after = _issue_all(second, "n")
    assert len(after) == 8 - 4
    names = [Config(**s["config"]).name for s in after if s["tier"] == done["tier"]]
    assert Config(**done["config"]).name not in names


def test_grid_search_issues_each_feasible_config_once(tmp_path: Path) -> None:
    searcher = BudgetSearcher(
        load_space("quickstart"), [Budget(0.002)], search="grid", trials=1, policy="fill", seed=0,
        store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=4,
    )
    issued = []
    while (s := searcher.suggest(f"t{len(issued)}")) is not Searcher.FINISHED:
        issued.append(Config(**s["config"]).name)
    assert sorted(issued) == sorted(c.name for c in searcher.grids["tier-0.002"]) and len(set(issued)) == len(issued)
    cost_of = {c.name: train_gflops(c) for c in searcher.grids["tier-0.002"]}  # recomputed, not read back
    costs = [cost_of[name] for name in issued]  # issued longest first
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]


def test_a_grid_resumed_from_an_old_save_runs_the_lost_point_and_no_ended_one_again(tmp_path: Path) -> None:
    def grid() -> BudgetSearcher:
        return BudgetSearcher(load_space("quickstart"), [Budget(0.002)], search="grid", trials=1, policy="fill", seed=0,
                              store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=4)

    first = grid()
    names = [c.name for c in first.grids["tier-0.002"]]
    assert len(names) >= 5
    first.suggest("t0")
    first.save(str(tmp_path / "state.pkl"))
    for i in (1, 2, 3):
        first.suggest(f"t{i}")
    for i in (1, 3):  # t2 is still running when the driver dies
        first.on_trial_complete(f"t{i}", {"epoch": 2, "val_accuracy": 0.4, "done_training": True})
    second = grid()
    second.restore(str(tmp_path / "state.pkl"))
    after = [Config(**s["config"]).name for s in _issue_all(second, "n")]
    assert after == [names[2]] + names[4:]  # t2's point again, then the ones never issued, once each


def _issue_all(searcher: BudgetSearcher, prefix: str) -> list[dict]:
    issued = []
    while (s := searcher.suggest(f"{prefix}{len(issued)}")) is not Searcher.FINISHED:
        issued.append(s)
    return issued


def test_random_search_issues_each_tier_longest_first(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path, search="random", trials=6)
    issued = _issue_all(searcher, "t")
    assert [s["tier"] for s in issued] == [1.3, 4.6] * 6
    for tier in (1.3, 4.6):
        costs = [train_gflops(Config(**s["config"])) for s in issued if s["tier"] == tier]
        assert all(cost <= tier for cost in costs)
        assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]  # random draws, sorted by cost
    # Every issued trial is an Optuna trial of its tier, open until Tune reports on it.
    ours = [t for t in searcher.study("tier-1.3").trials if "config" in t.user_attrs]
    assert len(ours) == 6 and all(t.state == TrialState.RUNNING for t in ours)


def test_random_search_resumes_its_drawn_queue(tmp_path: Path) -> None:
    first = _searcher(tmp_path, search="random", trials=4)
    before = [first.suggest(f"t{i}") for i in range(3)]
    first.save(str(tmp_path / "state.pkl"))
    left = {key: [config.name for _, config in queue] for key, queue in first.queued.items()}
    first.suggest("t3")  # issued after Tune's last checkpoint; it trains an epoch, then the driver dies
    first.on_trial_result("t3", {"epoch": 1, "val_accuracy": 0.5})
    second = _searcher(tmp_path, search="random", trials=4)
    second.restore(str(tmp_path / "state.pkl"))
    after = _issue_all(second, "n")
    assert len(before) + len(after) == 8
    for key, tier in (("tier-1.3", 1.3), ("tier-4.6", 4.6)):
        assert [Config(**s["config"]).name for s in after if s["tier"] == tier] == left[key]  # the same draws, in order
    ours = {key: [t for t in second.study(key).trials if "config" in t.user_attrs] for key in left}
    assert Counter(t.state.name for t in ours["tier-1.3"]) == {"RUNNING": 4}  # nothing drawn twice
    # The lost t3 is closed with its epoch; its config runs again as a fresh Optuna trial (n0).
    assert Counter(t.state.name for t in ours["tier-4.6"]) == {"RUNNING": 4, "FAIL": 1}
    lost = next(t for t in ours["tier-4.6"] if t.state == TrialState.FAIL)
    again = next(t for t in ours["tier-4.6"] if t.user_attrs["ray_trial_id"] == "n0")
    assert lost.user_attrs["config"] == again.user_attrs["config"] == left["tier-4.6"][0]
    assert lost.intermediate_values == {1: 0.5} and again.intermediate_values == {}


def _trial(trial_id: str, tier: float) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"tier": tier}, status="RUNNING")


def test_asha_compares_trials_only_within_their_tier() -> None:
    scheduler = TieredASHA([1.0, 10.0], max_t=8, grace_period=1, reduction_factor=2)
    # The expensive tier reaches 90%; a cheap trial at 30% must still run against its own tier.
    rich = [_trial(f"r{i}", 10.0) for i in range(4)]
    cheap = [_trial(f"c{i}", 1.0) for i in range(2)]
    for trial in rich + cheap:
        scheduler.on_trial_add(None, trial)
    for trial in rich:
        assert scheduler.on_trial_result(None, trial, {"epoch": 1, "val_accuracy": 0.9}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, cheap[0], {"epoch": 1, "val_accuracy": 0.3}) == TrialScheduler.CONTINUE
    # Within the cheap tier, a clearly worse trial at the same rung is stopped.
    assert scheduler.on_trial_result(None, cheap[1], {"epoch": 1, "val_accuracy": 0.1}) == TrialScheduler.STOP
    # The final report (test metrics, same epoch) never triggers a decision.
    assert scheduler.on_trial_result(None, rich[0], {"epoch": 8, "val_accuracy": 0.0, "done_training": True}) == TrialScheduler.CONTINUE


def test_grid_search_after_a_crash_issues_what_is_missing(tmp_path: Path) -> None:
    def grid() -> BudgetSearcher:
        return BudgetSearcher(
            load_space("quickstart"), [Budget(0.002)], search="grid", trials=1, policy="fill", seed=0,
            store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=4,
        )

    first = grid()
    issued = [Config(**first.suggest(f"t{i}")["config"]).name for i in range(2)]
    first.save(str(tmp_path / "state.pkl"))
    first.suggest("t2")  # asked, then the driver died before Tune recorded it
    second = grid()
    second.restore(str(tmp_path / "state.pkl"))
    while (s := second.suggest(f"n{len(issued)}")) is not Searcher.FINISHED:
        issued.append(Config(**s["config"]).name)
    assert sorted(issued) == sorted(c.name for c in second.grids["tier-0.002"])  # each once, none skipped


def test_resumed_asha_rebuilds_its_rungs_from_the_studies(tmp_path: Path) -> None:
    searcher = BudgetSearcher(
        load_space("paper"), [Budget(1.3)], search="tpe", trials=7, policy="fill", seed=0,
        store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=10,
    )
    # Three trials reach epoch 1; so do three more that Tune's last saved state never knew (their
    # Tune run was lost with the driver); a seventh has just started.
    for trial_id, accuracy in (("t0", 0.8), ("t1", 0.7), ("t2", 0.9), ("x0", 0.1), ("x1", 0.1), ("x2", 0.1)):
        searcher.suggest(trial_id)
        searcher.on_trial_result(trial_id, {"epoch": 1, "val_accuracy": accuracy})
    searcher.suggest("t3")
    restored = [_trial(f"t{i}", 1.3) for i in range(4)]  # what Tune restores
    controller = SimpleNamespace(get_trials=lambda: restored)

    def scheduler(store: SweepStore | None) -> TieredASHA:
        asha = TieredASHA([1.3], max_t=8, grace_period=1, reduction_factor=2, store=store)
        for trial in restored:
            asha.on_trial_add(controller, trial)
        asha.choose_trial_to_run(controller)  # Tune's first call, before any trial runs
        return asha

    resumed, forgetful = scheduler(SweepStore(str(tmp_path), "s")), scheduler(None)
    newcomer, restarted = restored[3], restored[0]
    middling = {"epoch": 1, "val_accuracy": 0.5}
    assert forgetful.on_trial_result(controller, newcomer, middling) == TrialScheduler.CONTINUE  # an empty rung
    # Below the rung t0-t2 set (the lost x0-x2 would have pulled its cutoff below 0.5).
    assert resumed.on_trial_result(controller, newcomer, middling) == TrialScheduler.STOP
    # t0 was judged at epoch 1 before the crash: running that epoch again is not a second judgement.
    assert resumed.on_trial_result(controller, restarted, {"epoch": 1, "val_accuracy": 0.1}) == TrialScheduler.CONTINUE
    assert resumed.on_trial_result(controller, restarted, {"epoch": 2, "val_accuracy": 0.1}) == TrialScheduler.CONTINUE


def test_a_scheduler_pickled_before_the_replay_still_loads(tmp_path: Path) -> None:
    asha = TieredASHA([1.3], max_t=8, grace_period=1, reduction_factor=2, store=SweepStore(str(tmp_path), "s"))
    del asha.__dict__["store"], asha.__dict__["seeded"]  # as Tune pickled it in an older sweep's tuner.pkl
    loaded = pickle.loads(pickle.dumps(asha))
    trial = _trial("t0", 1.3)
    loaded.on_trial_add(None, trial)
    assert loaded.choose_trial_to_run(SimpleNamespace(get_trials=lambda: [])) is None
    assert loaded.on_trial_result(None, trial, {"epoch": 1, "val_accuracy": 0.5}) == TrialScheduler.CONTINUE


def test_a_drawn_trial_the_journal_closed_is_drawn_again(tmp_path: Path) -> None:
    first = _searcher(tmp_path, search="random", trials=3)
    first.suggest("t0"), first.suggest("t1")
    first.save(str(tmp_path / "state.pkl"))
    lost_id, _ = first.queued["tier-4.6"][0]
    study = first.study("tier-4.6")
    study.tell(lost_id, state=TrialState.FAIL)  # e.g. closed by hand
    second = _searcher(tmp_path, search="random", trials=3)
    second.restore(str(tmp_path / "state.pkl"))
    assert lost_id not in {optuna_id for optuna_id, _ in second.queued["tier-4.6"]}
    issued = _issue_all(second, "n")
    assert Counter(s["tier"] for s in issued) == {1.3: 2, 4.6: 2}  # the quota still holds
    lost = second.study("tier-4.6").trials[lost_id].user_attrs.get("config")
    names = [Config(**s["config"]).name for s in issued if s["tier"] == 4.6]
    assert lost is None and names == [c.name for _, c in first.queued["tier-4.6"]]  # drawn again: the same configs


def test_a_state_saved_with_optuna_storage_ids_restores_by_number(tmp_path: Path) -> None:
    # Searchers of pdsweep 0.1 saved Optuna's storage ids, which count across the tiers' studies.
    first = _searcher(tmp_path, search="random", trials=3)
    first.suggest("t0"), first.suggest("t1")
    numbers = {"running": dict(first.running), "queued": {k: list(q) for k, q in first.queued.items()}}

    def storage_id(key: str, number: int) -> int:
        return first.study(key).trials[number]._trial_id

    state = {
        "issued": first.issued, "seen": first.seen,
        "running": {ray_id: (key, storage_id(key, n)) for ray_id, (key, n) in first.running.items()},
        "queued": {key: [(storage_id(key, n), c) for n, c in queue] for key, queue in first.queued.items()},
    }
    assert state["running"]["t1"][1] != numbers["running"]["t1"][1]  # tier 4.6's ids come after tier 1.3's
    (tmp_path / "old.pkl").write_bytes(pickle.dumps(state))
    second = _searcher(tmp_path, search="random", trials=3)
    second.restore(str(tmp_path / "old.pkl"))
    assert second.running == numbers["running"] and second.queued == numbers["queued"]
    assert not [t for t in second.study("tier-4.6").trials if t.state == TrialState.FAIL]  # nothing taken for an orphan


def test_an_old_state_with_a_tier_not_yet_suggested_restores(tmp_path: Path) -> None:
    # Killed after the first trial, with concurrency 1: the second tier's study was never opened.
    first = _searcher(tmp_path, search="random", trials=2)
    first.suggest("t0")
    assert {s.study_name for s in optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s" / "optuna.journal"))).get_all_studies()} == {"tier-1.3"}
    key, number = first.running["t0"]
    state = {"issued": first.issued, "seen": first.seen,
             "running": {"t0": (key, first.study(key).trials[number]._trial_id)}, "queued": {**first.queued, "tier-4.6": []}}
    (tmp_path / "old.pkl").write_bytes(pickle.dumps(state))
    second = _searcher(tmp_path, search="random", trials=2)
    second.restore(str(tmp_path / "old.pkl"))
    assert second.running == {"t0": ("tier-1.3", number)}
    assert Counter(s["tier"] for s in _issue_all(second, "n")) == {1.3: 1, 4.6: 2}


TWELVE = """\
axes:
  model: vit_micro
  resolution: [16, 32, 48]
  patch_size: [8, 16]
  depth: [1, 2]
  keep_rate: {low: 0.25, high: 1.0}
training:
  epochs: 2
  batch_size: 16
"""


def _accuracy(config: Config) -> float:
    """A made-up but smooth landscape, so TPE has something to model after its start."""
    return 0.3 + config.resolution / 200 + 0.05 * config.depth - config.patch_size / 400 + 0.01 * config.keep_rate


@pytest.mark.parametrize("search", ["tpe", "random"])
def test_a_tier_never_trains_a_config_twice(tmp_path: Path, search: str) -> None:
    (tmp_path / "twelve.yaml").write_text(TWELVE)
    space = load_space(str(tmp_path / "twelve.yaml"))
    assert len(space.architectures(4)) == 12
    searcher = BudgetSearcher(space, [Budget(1.0)], search=search, trials=12, policy="fill",  # type: ignore[arg-type]
                              seed=0, store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=4)
    names = []
    while (s := searcher.suggest(f"t{len(names)}")) is not Searcher.FINISHED:
        config = Config(**s["config"])
        names.append(config.name)
        assert s["seed"] == CONTEXT.training.seed  # a first seed: never a replicate of a config tried
        for epoch in (1, 2):
            searcher.on_trial_result(f"t{len(names) - 1}", {"epoch": epoch, "val_accuracy": _accuracy(config) * epoch / 2})
        searcher.on_trial_complete(f"t{len(names) - 1}", {"epoch": 2, "val_accuracy": _accuracy(config), "done_training": True})
    assert len(names) == 12 and len(set(names)) == 12
    study = searcher.study("tier-1")
    # TPE drew configs it had tried: each such draw was closed as failed and a new config asked.
    ours = [t for t in study.trials if "config" in t.user_attrs]
    assert len(ours) == 12 and all(t.state == TrialState.COMPLETE for t in ours)
    assert all(t.state == TrialState.FAIL for t in study.trials if "duplicate_of" in t.user_attrs)


CONTINUOUS = """\
axes:
  model: vit_micro
  resolution: 32
  patch_size: [4, 8]
  depth: [1, 2]
  keep_rate: {low: 0.1, high: 1.0}
"""


def test_tpe_near_its_optimum_moves_to_the_nearest_untried_keep_count(tmp_path: Path) -> None:
    """Under a continuous keep range TPE converges on a few token counts; each repeat draw
    becomes the same architecture at the nearest untried count in one step, so the study does
    not fill with redraws (at scale they made every ask slower: bench/scale.py)."""
    (tmp_path / "continuous.yaml").write_text(CONTINUOUS)
    space = load_space(str(tmp_path / "continuous.yaml"))
    searcher = BudgetSearcher(space, [Budget(1.0)], search="tpe", trials=60, policy="search",
                              seed=0, store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=4)
    assert not searcher.samplers["tier-1"].finite
    names = []
    while (s := searcher.suggest(f"t{len(names)}")) is not Searcher.FINISHED:
        config = Config(**s["config"])
        names.append(config.name)
        # Best at the most tokens: TPE piles its draws at the top of the keep range.
        searcher.on_trial_complete(f"t{len(names) - 1}", {"epoch": 1, "val_accuracy": _accuracy(config) + config.keep_rate,
                                                          "done_training": True})
    assert len(names) == 60 and len(set(names)) == 60
    study = searcher.study("tier-1")
    duplicates = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    assert duplicates  # TPE did draw configs it had tried ...
    # ... and each cost one redraw, whatever TPE drew: the next trial is a config not tried
    # before, of the drawn architecture while it has a kept-patch count left.
    tried: set[str] = set()
    for trial in study.trials:
        if "config" in trial.user_attrs:
            tried.add(trial.user_attrs["config"])
        elif "duplicate_of" in trial.user_attrs:
            drawn = trial.user_attrs["duplicate_of"]
            following = study.trials[trial.number + 1].user_attrs
            assert drawn in tried and following.get("config") not in tried | {None}
            sampler = searcher.samplers["tier-1"]
            left = sampler.untried_neighbour(next(c for c in sampler.grid() if c.name.rsplit("-k", 1)[0] == drawn.rsplit("-k", 1)[0]), tried)
            if left is not None:
                assert following["config"].rsplit("-k", 1)[0] == drawn.rsplit("-k", 1)[0]
    assert len(study.trials) == len(names) + len(duplicates) + sum(t.state == TrialState.PRUNED for t in study.trials)


def test_untried_neighbour_steps_one_kept_patch_at_a_time(tmp_path: Path) -> None:
    (tmp_path / "continuous.yaml").write_text(CONTINUOUS)
    space = load_space(str(tmp_path / "continuous.yaml"))
    sampler = BudgetSearcher(space, [Budget(1.0)], search="tpe", trials=4, policy="search", seed=0,
                             store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=4).samplers["tier-1"]
    config = Config(model="vit_micro", resolution=32, patch_size=4, depth=1, keep_rate=1.0, num_classes=4)
    assert config.num_patches == 64
    taken = {config.name}
    seen = [config.patches_kept]
    for _ in range(4):
        config = sampler.untried_neighbour(config, taken)
        assert config is not None and config.name not in taken and train_gflops(config) <= 1.0
        seen.append(config.patches_kept)
        taken.add(config.name)
    assert seen == [64, 63, 62, 61, 60]  # at the top of the range, downwards one patch at a time
    assert sampler.untried_neighbour(config, set()) is not None
    rates = [1.0] + [max(0.1, keep_rate_for(64, k)) for k in range(6, 64)]
    all_counts = {Config(model="vit_micro", resolution=32, patch_size=4, depth=1, keep_rate=r, num_classes=4).name for r in rates}
    assert sampler.untried_neighbour(config, all_counts) is None  # every count of the architecture tried
    nearby = _untried_nearby(sampler, config, all_counts)  # ... so the nearest architecture with one left
    assert nearby is not None and nearby.name not in all_counts
    assert (nearby.resolution, nearby.patch_size) == (32, 4) and nearby.depth == 2  # only the depth differs


def test_a_tier_with_fewer_configs_than_trials_runs_each_once(tmp_path: Path) -> None:
    (tmp_path / "twelve.yaml").write_text(TWELVE)
    space = load_space(str(tmp_path / "twelve.yaml"))
    budget = Budget(0.0004)
    fits = {c.name for c in space.architectures(4) if train_gflops(Config(**{**c.to_dict(), "keep_rate": 0.25})) <= 0.0004}
    assert 1 < len(fits) < 12
    searcher = BudgetSearcher(space, [budget], search="tpe", trials=12, policy="fill", seed=0,
                              store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=4)
    issued = _issue_all(searcher, "t")
    assert len(issued) == searcher.total_trials == len(fits)
    assert len({Config(**s["config"]).name for s in issued}) == len(fits)


def test_tpe_starts_from_a_space_filling_design(tmp_path: Path) -> None:
    (tmp_path / "twelve.yaml").write_text(TWELVE)
    space = load_space(str(tmp_path / "twelve.yaml"))
    searcher = BudgetSearcher(space, [Budget(1.0)], search="tpe", trials=12, policy="fill", seed=0,
                              store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=4)
    first = [Config(**searcher.suggest(f"t{i}")["config"]) for i in range(4)]  # a third of 12 trials
    # The design covers both depths and both ends of the resolution range in its four trials.
    assert {c.depth for c in first} == {1, 2} and {16, 48} <= {c.resolution for c in first}
    assert all(t.system_attrs.get("fixed_params") for t in searcher.study("tier-1").trials[:4])


def _parallel_sweep(tmp_path: Path, folder: str, concurrency: int, policy: str = "fill",
                    space: str = TWELVE) -> tuple[list[Config], BudgetSearcher]:
    """Eight trials of the twelve-config space, ``concurrency`` at a time: each ask after the
    first ``concurrency`` comes when the oldest running trial ends (scored by ``_accuracy``)."""
    (tmp_path / f"{folder}.yaml").write_text(space)
    (tmp_path / folder).mkdir()
    searcher = BudgetSearcher(load_space(str(tmp_path / f"{folder}.yaml")), [Budget(1.0)], search="tpe", trials=8,
                              policy=policy, seed=0, store=SweepStore(str(tmp_path / folder), "s"),  # type: ignore[arg-type]
                              context=CONTEXT, num_classes=4, concurrency=concurrency)
    (tmp_path / folder / "s").mkdir()
    issued, running = [], []
    for i in range(8):
        if len(running) == concurrency:
            trial_id, config = running.pop(0)
            searcher.on_trial_complete(trial_id, {"epoch": 2, "val_accuracy": _accuracy(config), "done_training": True})
        config = Config(**searcher.suggest(f"t{i}")["config"])
        issued.append(config)
        running.append((f"t{i}", config))
    return issued, searcher


def test_parallel_trials_start_from_the_design_then_ask_tpe_with_a_constant_liar(tmp_path: Path, monkeypatch) -> None:
    from pdsweep.sweep import searcher as searcher_module
    from pdsweep.sweep.design import startup_design

    issued, searcher = _parallel_sweep(tmp_path, "tpe", concurrency=4)
    design = startup_design(searcher.samplers["tier-1"].candidates, 4, seed=0)
    assert issued[:4] == design  # every slot's first trial is a point of the design
    # Asked while three trials still ran: TPE's asks, not the random draws a start-up of ended
    # trials (Optuna's count) would have given. The same sweep with TPE left in its random start-up:
    real = searcher_module.make_optuna_sampler
    monkeypatch.setattr(searcher_module, "make_optuna_sampler",
                        lambda kind, seed, startup=10: real(kind, seed, startup=1_000))
    random_issued, _ = _parallel_sweep(tmp_path, "random-start", concurrency=4)
    assert random_issued[:4] == design
    assert [c.name for c in issued[4:]] != [c.name for c in random_issued[4:]]
    assert len({c.name for c in issued}) == 8  # no config twice


def test_the_design_has_a_point_for_every_slot_and_spreads_the_keep_fraction(tmp_path: Path) -> None:
    # Architectures of 16 to 256 patches, so each can keep a share of them in any third of its range.
    fine = TWELVE.replace("resolution: [16, 32, 48]", "resolution: [32, 48, 64]").replace("patch_size: [8, 16]", "patch_size: [4, 8]")
    issued, searcher = _parallel_sweep(tmp_path, "search", concurrency=5, policy="search", space=fine)
    design = searcher.study("tier-1").trials[:5]
    assert all(t.system_attrs.get("fixed_params") for t in design)  # more than a third of 8 trials: one per slot
    # The two ends keep their meaning: the baseline at keep 1, the study's corner at the lowest keep.
    assert issued[0].keep_rate == 1.0 and issued[1].keep_rate == 0.25
    # The spread takes a third of the keep fraction's range each (as near as an architecture's
    # patch count lets it keep), not three points at the most the budget affords.
    spread = sorted(t.params["keep_fraction"] for t in design[2:])
    assert spread[0] < 1 / 3 < spread[1] < 2 / 3 < spread[2]
    assert len({c.keep_rate for c in issued[:5]}) >= 4


def test_no_trial_stays_open_when_a_tier_runs_out_of_quota(tmp_path: Path) -> None:
    (tmp_path / "twelve.yaml").write_text(TWELVE)
    space = load_space(str(tmp_path / "twelve.yaml"))
    # One trial: a start-up of one, never more than the quota; nothing enqueued is left waiting.
    searcher = BudgetSearcher(space, [Budget(1.0)], search="tpe", trials=1, policy="fill", seed=0,
                              store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=4)
    issued = _issue_all(searcher, "t")
    assert len(issued) == 1
    states = Counter(t.state.name for t in searcher.study("tier-1").trials)
    assert states == {"RUNNING": 1}


def test_a_design_point_lost_in_a_crash_is_asked_again(tmp_path: Path) -> None:
    (tmp_path / "twelve.yaml").write_text(TWELVE)
    space = load_space(str(tmp_path / "twelve.yaml"))

    def fresh() -> BudgetSearcher:
        return BudgetSearcher(space, [Budget(1.0)], search="tpe", trials=12, policy="fill", seed=0,
                              store=SweepStore(str(tmp_path), "s"), context=CONTEXT, num_classes=4)

    first = fresh()
    first.suggest("t0")
    first.save(str(tmp_path / "state.pkl"))
    lost = Config(**first.suggest("t1")["config"]).name  # a design point asked after the last checkpoint
    second = fresh()
    second.restore(str(tmp_path / "state.pkl"))
    after = [Config(**s["config"]).name for s in _issue_all(second, "n")]
    assert lost in after and len(after) == 11 and len(set(after)) == 11


def test_under_a_loss_the_studies_minimise_what_trials_report(tmp_path: Path) -> None:
    context = TrialContext(TrainingSettings(metric="loss"), "synthetic", split_seed=0)
    searcher = BudgetSearcher(load_space("paper"), [Budget(1.3)], search="tpe", trials=2, policy="fill", seed=0,
                              store=SweepStore(str(tmp_path), "s"), context=context, num_classes=10)
    assert (searcher.metric, searcher.mode) == ("val_loss", "min")
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert first and second
    searcher.on_trial_result("a", {"epoch": 1, "val_loss": 0.9, "val_accuracy": 0.5})
    searcher.on_trial_complete("a", {"epoch": 2, "val_loss": 0.7, "best_val_loss": 0.6, "val_accuracy": 0.6,
                                     "best_val_accuracy": 0.6, "done_training": True})
    searcher.on_trial_complete("b", {"epoch": 2, "val_loss": 0.8, "best_val_loss": 0.8, "val_accuracy": 0.7,
                                     "best_val_accuracy": 0.7, "done_training": True})
    study = searcher.study("tier-1.3")
    assert study.direction.name == "MINIMIZE"
    told = sorted(t.value for t in study.trials if t.state.name == "COMPLETE")
    assert told == [0.6, 0.8] and study.best_trial.value == 0.6  # the lower loss wins, whatever the accuracy
    assert [t.intermediate_values for t in study.trials if t.value == 0.6] == [{1: 0.9}]
