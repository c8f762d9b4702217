"""The Ray-facing searcher and scheduler on their own (the sweep tests run them under Tune)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from pdsweep.config import Config
from pdsweep.cost import Budget, train_gflops
from pdsweep.searcher import BudgetSearcher, TieredASHA
from pdsweep.space import load_space
from pdsweep.store import SweepStore

FIELDS = {"seed": 0, "training": {}, "dataset": "synthetic", "split_seed": 0, "cache_dir": None, "starts_log": None}


def _searcher(tmp_path: Path, search: str = "tpe", trials: int = 3) -> BudgetSearcher:
    return BudgetSearcher(
        load_space("paper"), [Budget(1.3), Budget(4.6)], search=search, trials=trials, policy="fill",  # type: ignore[arg-type]
        seed=0, store=SweepStore(str(tmp_path), "s"), trial_fields=FIELDS, num_classes=10,
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
    searcher.running["again"] = searcher.running.get("again") or ("tier-1.3", complete._trial_id)
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


def test_grid_search_issues_each_feasible_config_once(tmp_path: Path) -> None:
    searcher = BudgetSearcher(
        load_space("quickstart"), [Budget(0.002)], search="grid", trials=1, policy="fill", seed=0,
        store=SweepStore(str(tmp_path), "s"), trial_fields=FIELDS, num_classes=4,
    )
    issued = []
    while (s := searcher.suggest(f"t{len(issued)}")) is not Searcher.FINISHED:
        issued.append(Config(**s["config"]).name)
    assert sorted(issued) == sorted(c.name for c in searcher.grids["tier-0.002"]) and len(set(issued)) == len(issued)
    cost_of = {c.name: train_gflops(c) for c in searcher.grids["tier-0.002"]}  # recomputed, not read back
    costs = [cost_of[name] for name in issued]  # issued longest first
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]


def _trial(trial_id: str, tier: float) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"tier": tier})


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
            store=SweepStore(str(tmp_path), "s"), trial_fields=FIELDS, num_classes=4,
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
