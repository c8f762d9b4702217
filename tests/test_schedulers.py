"""When trials are stopped: never during warm-up, and never for lagging behind configs that keep more tokens."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune.schedulers import TrialScheduler

from conftest import stand_in_trainable
from pdsweep.config import Config
from pdsweep.objective import Objective
from pdsweep.space import load_space
from pdsweep.sweep import SweepSettings, run_sweep
from pdsweep.sweep.schedulers import KeepAwareRungs, TieredASHA, first_rung, keep_rate_of, search_scheduler

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE


@pytest.mark.parametrize(
    ("epochs", "warmup", "grace", "expected"),
    [
        (100, 5, None, 25),  # a quarter of training
        (8, 2, None, 3),  # a quarter is 2, inside warm-up: the first epoch after it
        (4, 0, None, 1),
        (8, 2, 1, 3),  # a grace period asked inside warm-up still waits for its end
        (8, 0, 5, 5),
    ],
)
def test_the_first_rung_is_past_warm_up(epochs: int, warmup: int, grace: int | None, expected: int) -> None:
    assert first_rung(epochs, warmup, grace) == expected


def _trial(trial_id: str, keep_rate: float, tier: float = 1.0) -> SimpleNamespace:
    """A trial as Tune holds it: its config is the searcher's suggestion (a TrialSpec's dict)."""
    config = Config("vit_micro", 32, 8, keep_rate=keep_rate, num_classes=4)
    return SimpleNamespace(trial_id=trial_id, config={**_spec(config), "tier": tier})


def test_a_trial_is_judged_only_against_trials_that_keep_no_more_tokens() -> None:
    rungs = KeepAwareRungs(first=2, max_t=8, reduction_factor=2)
    assert sorted(rungs.recorded) == [2.0, 4.0]
    assert not rungs.on_result("full-a", 1.0, 2, 0.70)
    assert not rungs.on_result("full-b", 1.0, 2, 0.72)
    # Far behind the full-token trials, but the first at its keep rate: it goes on.
    assert not rungs.on_result("quarter-a", 0.25, 2, 0.30)
    # Behind its one peer at keep 0.25: stopped, although it is not behind by much.
    assert rungs.on_result("quarter-b", 0.25, 2, 0.29)
    # A full-token trial is compared with everything recorded (every keep rate is at most 1).
    assert rungs.on_result("full-c", 1.0, 2, 0.45)  # below the median of 0.29, 0.30, 0.70, 0.72
    # Judged once per rung: the same epoch again (a resumed trial) is no second judgement.
    assert not rungs.on_result("quarter-b", 0.25, 2, 0.0)
    assert not rungs.on_result("full-a", 1.0, 3, 0.71)  # between rungs: no judgement


def test_tiered_asha_reads_each_trials_keep_rate_and_tier() -> None:
    scheduler = TieredASHA([1.0, 10.0], max_t=8, grace_period=2, reduction_factor=2)
    rich = _trial("rich", 1.0, tier=10.0)
    full, low = _trial("full", 1.0), _trial("low", 0.25)
    assert scheduler.on_trial_result(None, rich, {"epoch": 2, "val_accuracy": 0.95}) == CONTINUE
    assert scheduler.on_trial_result(None, full, {"epoch": 2, "val_accuracy": 0.60}) == CONTINUE  # not against tier 10
    assert scheduler.on_trial_result(None, low, {"epoch": 1, "val_accuracy": 0.01}) == CONTINUE  # before the first rung
    assert scheduler.on_trial_result(None, low, {"epoch": 2, "val_accuracy": 0.20}) == CONTINUE  # no peer at keep 0.25
    late = _trial("late", 1.0)
    assert scheduler.on_trial_result(None, late, {"epoch": 2, "val_accuracy": 0.10}) == STOP  # below full and low
    assert scheduler.on_trial_result(None, late, {"epoch": 8, "val_accuracy": 0.0}) == CONTINUE  # no decision at the end


def test_under_a_loss_the_rungs_stop_the_highest() -> None:
    scheduler = TieredASHA([1.0], max_t=8, grace_period=2, reduction_factor=2, objective=Objective("loss"))
    low, high = _trial("low", 1.0), _trial("high", 1.0)
    assert scheduler.on_trial_result(None, low, {"epoch": 2, "val_loss": 0.3, "val_accuracy": 0.2}) == CONTINUE
    # Its accuracy is the higher, but the loss is what the sweep minimises.
    assert scheduler.on_trial_result(None, high, {"epoch": 2, "val_loss": 0.9, "val_accuracy": 0.9}) == STOP
    better = _trial("better", 1.0)
    assert scheduler.on_trial_result(None, better, {"epoch": 2, "val_loss": 0.1, "val_accuracy": 0.1}) == CONTINUE
    assert scheduler.on_trial_result(None, _trial("none", 1.0), {"epoch": 2}) == CONTINUE  # no value of the metric


def test_a_uniform_keep_range_is_judged_at_its_mean_keep_rate() -> None:
    uniform = Config("vit_micro", 32, 8, keep_rate=1.0, keep_mode="uniform", keep_range_low=0.5, num_classes=4)
    trial = SimpleNamespace(trial_id="u", config={"tier": 1.0, **_spec(uniform)})
    assert keep_rate_of(trial) == 0.75  # not 1: it lags as a reduced keep rate does
    full = SimpleNamespace(trial_id="f", config={"tier": 1.0, **_spec(Config("vit_micro", 32, 8, keep_rate=1.0, num_classes=4))})
    scheduler = TieredASHA([1.0], max_t=8, grace_period=2, reduction_factor=2)
    assert scheduler.on_trial_result(None, full, {"epoch": 2, "val_accuracy": 0.8}) == CONTINUE
    assert scheduler.on_trial_result(None, trial, {"epoch": 2, "val_accuracy": 0.3}) == CONTINUE  # no peer at <= 0.75


def _spec(config: Config) -> dict[str, Any]:
    from pdsweep.space import TrainingSettings
    from pdsweep.sweep.spec import TrialContext, TrialSpec

    return TrialSpec(config, 1.0, "search", 0, TrialContext(TrainingSettings(), "synthetic", split_seed=0)).to_dict()


@pytest.mark.parametrize(("first", "reduction"), [(0, 2.0), (1, 1.0)])
def test_rungs_that_would_never_end_are_refused(first: int, reduction: float) -> None:
    with pytest.raises(ValueError, match=r"`first >= 1` and `reduction_factor > 1` must hold"):
        KeepAwareRungs(first=first, max_t=8, reduction_factor=reduction)


def test_a_scheduler_pickled_with_rays_asha_keeps_its_rungs() -> None:
    import pickle

    from ray.tune.schedulers import AsyncHyperBandScheduler

    old = TieredASHA([1.0], max_t=8, grace_period=1, reduction_factor=2)
    asha = AsyncHyperBandScheduler(time_attr="epoch", metric="val_accuracy", mode="max", max_t=8, grace_period=1,
                                   reduction_factor=2, stop_last_trials=False)
    for name, accuracy in (("a", 0.8), ("b", 0.6)):
        asha.on_trial_add(None, SimpleNamespace(trial_id=name, config={}))
        asha.on_trial_result(None, SimpleNamespace(trial_id=name, config={}), {"epoch": 1, "val_accuracy": accuracy})
    old.by_tier = {1.0: asha}  # as an older pdsweep pickled it
    loaded = pickle.loads(pickle.dumps(old))
    rungs = loaded.by_tier[1.0]
    assert isinstance(rungs, KeepAwareRungs) and rungs.recorded[1.0] == {"a": (1.0, 0.8), "b": (1.0, 0.6)}
    # Its records still judge: below the rung's median at keep 1, a new trial stops.
    assert loaded.on_trial_result(None, _trial("c", 1.0), {"epoch": 1, "val_accuracy": 0.5}) == STOP


def test_the_scheduler_pdsweep_run_builds_waits_for_warm_up() -> None:
    training = load_space("paper").training
    scheduler = search_scheduler(SweepSettings(name="s", budgets=(17.6,)), training, None)
    assert isinstance(scheduler, TieredASHA)
    assert min(scheduler.by_tier[17.6].recorded) == 25 > training.warmup_epochs
    none = search_scheduler(SweepSettings(name="s", budgets=(17.6,), scheduler="none"), training, None)
    assert not isinstance(none, TieredASHA)


# ---- real sweeps on a real local Ray, with a stand-in trainable --------------------------------


def curve(config: Config, epoch: int) -> float:
    """PatchDropout's premise, exaggerated: the fewer tokens a config keeps, the slower it starts
    and the higher it ends (keep 1: 0.52 after epoch 1, 0.66 after 8; keep 0.25: 0.22, then 0.885).
    A finer patch grid starts a little lower and gains on a coarse one; an ensemble of two is much
    worse at every epoch."""
    keep = config.keep_rate
    offset = (0.01 * (epoch - 1.5) if config.patch_size == 4 else 0.0) - (0.2 if config.ensemble_size > 1 else 0.0)
    return 0.5 * keep + (0.02 + 0.1 * (1 - keep)) * epoch + offset


def stand_in(trial_config: dict[str, Any]) -> None:
    """Reports as ``pdsweep.sweep.trainable.run_trial`` does, with accuracies from :func:`curve`."""
    from ray import tune

    from pdsweep.sweep.spec import TrialSpec
    from pdsweep.sweep.trainable import _log_start

    spec = TrialSpec.from_dict(trial_config)
    _log_start(spec.context.starts_log, resumed=False)
    node = {"node_id": "stand-in", "device_kind": "cpu", "devices": 1.0, "started_at": time.time()}
    epochs = spec.context.training.epochs
    accuracies = [curve(spec.config, epoch) for epoch in range(1, epochs + 1)]
    for epoch, accuracy in enumerate(accuracies, 1):
        time.sleep(0.05)
        tune.report({"epoch": epoch, "train_loss": 1.0 / epoch, "val_accuracy": accuracy, "done_training": False,
                     "reported_at": time.time(), **node})
    tune.report({"epoch": epochs, "train_loss": 1.0 / epochs, "val_accuracy": accuracies[-1], "done_training": True,
                 "best_val_accuracy": max(accuracies), "test_accuracy": accuracies[-1], "train_seconds": 0.05 * epochs,
                 "reported_at": time.time(), **node})


@pytest.fixture
def stand_in_trials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Trials run :func:`stand_in` instead of training (the rest of the sweep is real)."""
    with stand_in_trainable(monkeypatch, stand_in):
        yield


LAGGING_SPACE = """\
axes:
  model: vit_micro
  resolution: 32
  patch_size: [4, 8]
  depth: 2
  keep_rate: [0.25, 0.5, 1.0]
training:
  epochs: 8
  warmup_epochs: 1
  batch_size: 16
  precision: fp32
  augment: false
"""


def test_a_config_that_lags_early_and_wins_at_the_end_is_not_stopped(ray_session, stand_in_trials, tmp_path: Path) -> None:
    space = tmp_path / "lagging.yaml"
    space.write_text(LAGGING_SPACE)
    settings = SweepSettings(name="lag", space=str(space), budgets=(1.0,), search="grid", dataset="synthetic:40",
                             runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), concurrency=2,
                             estimate=False)
    assert settings.scheduler is None  # pdsweep run's default: ASHA
    outcome = run_sweep(settings, out=lambda line: None, err=lambda line: None)
    rows = {row.config.name: row for row in outcome.rows}
    winner = Config(model="vit_micro", resolution=32, patch_size=4, depth=2, keep_rate=0.25, num_classes=4)
    assert len(rows) == 6 and winner.name in rows
    # Worst of all after epoch 1, best of all at the end (what the stand-in reported):
    assert curve(winner, 1) == min(curve(row.config, 1) for row in rows.values())
    assert rows[winner.name].status == "completed" and rows[winner.name].epochs_run == 8
    assert outcome.report.tiers[0].best.config.name == winner.name
    # The scheduler did stop trials, later than warm-up, and only ones behind a peer at their keep rate or lower.
    stopped = [row for row in rows.values() if row.status == "stopped"]
    assert stopped
    for row in stopped:
        judged_at = row.epochs_run
        assert judged_at > 1
        assert any(other.config.keep_rate <= row.config.keep_rate and other is not row
                   and curve(other.config, judged_at) > curve(row.config, judged_at) for other in rows.values())


def test_no_trial_of_the_paper_space_is_stopped_during_warm_up(ray_session, stand_in_trials, tmp_path: Path) -> None:
    overrides = ("training.epochs=8", "training.warmup_epochs=2", "training.batch_size=16",
                 "axes.model=[deit_tiny]", "axes.resolution=[64]", "axes.depth=[12]", "axes.ensemble_size=[1, 2]")
    settings = SweepSettings(name="paper", space="paper", overrides=overrides, budgets=(1.0,), search="random", trials=8,
                             policy="search", dataset="synthetic:40", runs_dir=str(tmp_path / "runs"),
                             cache_dir=str(tmp_path / "cache"), concurrency=2, estimate=False)
    outcome = run_sweep(settings, out=lambda line: None, err=lambda line: None)
    rows = outcome.rows
    assert len(rows) == 8 and all(row.status in ("completed", "stopped") for row in rows)
    warmup = 2
    assert all(row.epochs_run > warmup for row in rows)
    # The curve makes the later, lower trials worth stopping, so the rule was put to the test.
    assert any(row.status == "stopped" for row in rows)
