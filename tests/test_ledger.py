"""The compute ledger and cap: what each trial spent, and a sweep that stops issuing trials at
``--max-tflop``: real Ray Tune searchers, a real sweep on the shared Ray, tiny configs."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from conftest import assert_one_line_error
from pdsweep.config import Config
from pdsweep.cost import train_gflops
from pdsweep.errors import PdsweepError
from pdsweep.results import rows as results
from pdsweep.results.compute import ComputeCap
from pdsweep.space import TrainingSettings
from pdsweep.sweep import SweepSettings, SweepState, TrialContext, TrialSpec, run_sweep
from pdsweep.sweep.ledger import LedgerSearcher
from pdsweep.sweep.searcher import ListSearcher
from pdsweep.training.data import load_dataset

# Four configs of one cost: keep rate 1 keeps every patch whatever the sampling.
EQUAL_COST = """\
axes:
  model: vit_micro
  resolution: 16
  patch_size: 8
  depth: 1
  keep_rate: 1.0
  sampling: [random, structured, block, grid]
training:
  epochs: 2
  batch_size: 16
  precision: fp32
  augment: false
"""
BUDGET = 0.0008
CONFIG = Config(model="vit_micro", resolution=16, patch_size=8, depth=1, num_classes=4)


def _tflop(gflops: float, images: int, epochs: int) -> float:
    """A trial's training compute, written out here rather than imported: forward + backward
    is 3 forwards, over every training image, every epoch; 1 TFLOP is 1e3 GFLOPs."""
    return gflops * 3 * images * epochs / 1000


# ---- the searcher, without a sweep ---------------------------------------------------------


def _specs(count: int, images: int = 100) -> list[dict]:
    context = TrialContext(TrainingSettings(epochs=2), "synthetic:40", 0, train_images=images)
    return [TrialSpec(CONFIG, BUDGET, "search", seed, context).to_dict() for seed in range(count)]


def test_the_cap_counts_running_trials_at_their_full_epochs() -> None:
    per_trial = _tflop(train_gflops(CONFIG), 100, 2)
    ledger = LedgerSearcher(ListSearcher(_specs(5)), ComputeCap(max_tflop=2.5 * per_trial), sweep="unit")
    assert ledger.suggest("t1") is not None and ledger.suggest("t2") is not None  # 2 of 2.5 committed
    assert ledger.suggest("t3") == "FINISHED" and ledger.stopped == "max_tflop"
    assert ledger.suggest("t4") == "FINISHED"  # stopped for good
    # An early-stopped trial spends what it ran, not what it was committed to.
    fresh = LedgerSearcher(ListSearcher(_specs(5)), ComputeCap(max_tflop=2.5 * per_trial), sweep="unit2")
    fresh.suggest("t1"), fresh.suggest("t2")
    fresh.on_trial_complete("t1", {"epoch": 1, "time_total_s": 3.0, "devices": 1.0})
    assert fresh.spent_tflop == pytest.approx(per_trial / 2) and fresh.spent_device_s == pytest.approx(3.0)
    assert fresh.suggest("t3") is not None  # 0.5 spent + 1 running + 1 new <= 2.5
    assert fresh.suggest("t4") == "FINISHED"


def test_a_dear_proposal_refused_leaves_room_for_cheaper_ones() -> None:
    context = TrialContext(TrainingSettings(epochs=2), "synthetic:40", 0, train_images=100)
    dear = Config(model="vit_micro", resolution=32, patch_size=8, depth=1, num_classes=4)
    points = [TrialSpec(c, 1.0, "search", 0, context).to_dict() for c in (dear, CONFIG, dear, CONFIG)]
    cheap = _tflop(train_gflops(CONFIG), 100, 2)
    assert _tflop(train_gflops(dear), 100, 2) > 2.5 * cheap
    ledger = LedgerSearcher(ListSearcher(points), ComputeCap(max_tflop=2.5 * cheap), sweep="unit4")
    # Dearest first, as random and grid propose: the dear one is refused, the cheap one after it runs.
    issued = [ledger.suggest(f"t{i}") for i in range(3)]
    assert [Config(**p["config"]) for p in issued[:2]] == [CONFIG, CONFIG] and issued[2] == "FINISHED"
    assert ledger.stopped == "max_tflop"


def test_the_device_hours_cap_predicts_from_the_rate_seen(tmp_path: Path) -> None:
    ledger = LedgerSearcher(ListSearcher(_specs(5)), ComputeCap(max_device_hours=45 / 3600), sweep="unit3")
    assert ledger.suggest("t1") is not None  # nothing seen yet and no prior: only what was seen counts
    ledger.on_trial_result("t1", {"epoch": 1, "time_total_s": 5.0, "devices": 2.0})  # 10 device-s per epoch
    # Now a trial of 2 epochs is 20 device-s: t1 is committed to 20, t2 to 20 (40 <= 45), t3 to 20 more.
    assert ledger.suggest("t2") is not None
    assert ledger.suggest("t3") == "FINISHED" and ledger.stopped == "max_device_hours"
    # The ledger's state survives Tune's save and restore, the inner searcher's with it.
    ledger.save(str(tmp_path / "state.pkl"))
    again = LedgerSearcher(ListSearcher(_specs(5)), ComputeCap(max_device_hours=45 / 3600), sweep="unit3")
    again.restore(str(tmp_path / "state.pkl"))
    # (t3, t4 and t5 were each refused, and the list has none left.)
    assert again.stopped == "max_device_hours" and set(again.running) == {"t1", "t2"} and again.inner.next == 5
    assert again.running["t1"].seen_device_s == 10.0 and again.suggest("t4") == "FINISHED"
    assert not list(tmp_path.glob(".ledger-inner-*"))


def test_a_restored_ledger_counts_the_trials_that_ended_after_its_save(tmp_path: Path) -> None:
    # Tune saves its state on a period; the driver died after t1 ended and t3 was issued and
    # ended, before the next save. Their rows (written as the callback writes them) say what
    # they spent, and the list does not propose t3's point again.
    from pdsweep.sweep.callback import result_row
    from pdsweep.sweep.store import SweepStore

    store = SweepStore(str(tmp_path), "s")
    store.local_dir.mkdir(parents=True)
    per_trial = _tflop(train_gflops(CONFIG), 100, 2)
    cap = ComputeCap(max_tflop=4.5 * per_trial)
    specs = _specs(5)
    ledger = LedgerSearcher(ListSearcher(specs, store), cap, sweep="unit5", store=store)
    ledger.suggest("t1"), ledger.suggest("t2")
    ledger.save(str(tmp_path / "state.pkl"))
    assert ledger.suggest("t3") == specs[2]
    ended = {"epoch": 2, "done_training": True, "time_total_s": 3.0, "devices": 1.0}
    settings = SweepSettings(name="s", runs_dir=str(tmp_path))
    rows = [result_row(settings, trial_id, TrialSpec.from_dict(spec), ended, {}, None) for trial_id, spec in
            (("t1", specs[0]), ("t3", specs[2]))]
    results.write(rows, store.local_dir / results.RESULTS_FILE)

    again = LedgerSearcher(ListSearcher(specs, store), cap, sweep="unit5", store=store)
    again.restore(str(tmp_path / "state.pkl"))
    assert again.spent_tflop == pytest.approx(2 * per_trial) and again.spent_device_s == pytest.approx(6.0)
    assert set(again.running) == {"t2"}  # t1 ended; Tune's restored copy of it is stopped, not run
    # 2 spent + t2 committed + one more fits under 4.5; it is the next point, not t3's again.
    assert again.suggest("t4") == specs[3]
    assert again.suggest("t5") == "FINISHED" and again.stopped == "max_tflop"


# ---- a real sweep ----------------------------------------------------------------------------


def test_max_tflop_stops_issuing_trials_at_the_cap(ray_session, tmp_path: Path) -> None:
    space = tmp_path / "equal.yaml"
    space.write_text(EQUAL_COST)
    images = len(load_dataset("synthetic:40", 16, cache_dir=tmp_path / "cache").train)
    per_trial = _tflop(train_gflops(CONFIG), images, 2)
    lines: list[str] = []
    settings = SweepSettings(name="cap", space=str(space), budgets=(BUDGET,), search="grid", scheduler="none",
                             concurrency=2, dataset="synthetic:40", runs_dir=str(tmp_path / "runs"),
                             cache_dir=str(tmp_path / "cache"), max_tflop=2.5 * per_trial)  # estimate on: measured here
    outcome = run_sweep(settings, out=lines.append, err=lines.append)
    rows = outcome.rows
    # The grid has four trials; two fit under 2.5 trials' compute, and the third would pass it.
    assert len(rows) == 2 and all(r.status == "completed" for r in rows)
    assert sum(r.spent_tflop for r in rows) <= settings.max_tflop < sum(r.spent_tflop for r in rows) + per_trial
    # The ledger's numbers, from the rows' own fields.
    for r in rows:
        assert r.train_images == images and r.epochs_run == 2
        assert r.spent_tflop == pytest.approx(_tflop(r.train_gflops, images, r.epochs_run))
        assert (r.device_kind, r.devices) == ("cpu", 1.0)  # --cpus-per-trial 1
        assert r.device_seconds == pytest.approx(r.wall_seconds * 1.0) and r.device_seconds > 0
    # The trial refused at the cap left no open Optuna trial.
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs" / "cap" / "optuna.journal")))
    states = [t.state.name for t in optuna.load_study(study_name=f"tier-{BUDGET:g}", storage=storage).trials]
    assert sorted(states) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]  # the last two refused, closed
    # sweep.json, the report and the printout say so; planned is the whole grid's compute.
    state = json.loads((tmp_path / "runs" / "cap" / "sweep.json").read_text())
    assert state["compute"]["stopped_by"] == "max_tflop"
    assert state["compute"]["planned_tflop"] == pytest.approx(4 * per_trial)
    compute = outcome.report.to_json()["compute"]
    assert compute["spent_tflop"] == pytest.approx(2 * per_trial) and compute["stopped_by_cap"] == "max_tflop"
    assert any("stopped issuing trials at --max-tflop" in line for line in lines)
    assert any(line.startswith("  estimated wall time: ~") and "CPU slot" in line for line in lines)
    assert "stopped issuing trials at --max-tflop" in (tmp_path / "runs" / "cap" / "report" / "report.md").read_text()
    # ... and so do the MLflow child runs.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    children = client.search_runs([state["mlflow"]["experiment_id"]], "tags.`pdsweep.trial_id` != ''")
    spent = sorted(run.data.metrics["spent_tflop"] for run in children)
    assert spent == pytest.approx(sorted(r.spent_tflop for r in rows))


# ---- bad input and older files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--max-tflop", "0", "argument --max-tflop: must be a positive, finite number, got '0'"),
        ("--max-tflop", "-1", "argument --max-tflop: must be a positive, finite number"),
        ("--max-tflop", "lots", "argument --max-tflop: expected a number, got 'lots'"),
        ("--max-device-hours", "nan", "argument --max-device-hours: must be a positive, finite number"),
        ("--top-k", "0", "`--top-k` must be a positive integer, got 0"),
    ],
)
def test_bad_cap_and_top_k_values_are_one_line(cli, tmp_path: Path, flag: str, value: str, fragment: str) -> None:
    space = tmp_path / "equal.yaml"
    space.write_text(EQUAL_COST)
    result = cli("run", "--space", space, "--budget-gflops", BUDGET, "--dataset", "synthetic:40", "--runs-dir",
                 tmp_path / "runs", "--cache-dir", tmp_path / "cache", flag, value)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "runs").exists()


def test_a_cap_below_the_cheapest_trial_is_refused_before_anything_runs(cli, tmp_path: Path) -> None:
    space = tmp_path / "equal.yaml"
    space.write_text(EQUAL_COST)
    result = cli("run", "--space", space, "--budget-gflops", BUDGET, "--dataset", "synthetic:40", "--runs-dir",
                 tmp_path / "runs", "--cache-dir", tmp_path / "cache", "--max-tflop", "1e-9")
    assert_one_line_error(result, "--max-tflop 1e-09 is below the cheapest trial's", "no trial could run; raise it")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(PdsweepError, match=r"`--max-device-hours` must be a positive number, got -2"):
        SweepSettings(name="x", max_device_hours=-2)


def test_older_files_load_without_the_ledger(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    legacy = Path(__file__).parent / "data" / "legacy" / "finished"
    state = SweepState.from_dict(json.loads((legacy / "sweep.json").read_text()))
    assert state.compute is None and state.settings.top_k == 3 and state.settings.max_tflop is None
    path = tmp_path / results.RESULTS_FILE
    pq.write_table(pq.read_table(legacy / "results.parquet"), path)
    assert all(r.spent_tflop is None and r.device_seconds is None for r in results.read_rows(path))
    from pdsweep.results import report

    ledger = report.build("finished", results.read_rows(path)).compute
    assert (ledger.recorded, ledger.trials) == (0, 2) and "0 of 2 trials recorded" in ledger.lines()[0]
