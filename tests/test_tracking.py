from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_one_line_error
from pdsweep.config import Config
from pdsweep.errors import PdsweepError
from pdsweep.results import tracking
from pdsweep.results import rows as results
from pdsweep.results.rows import ResultRow
from pdsweep.results.tracking_queue import QueuedTracker
from pdsweep.sweep import SweepSettings, run_sweep
from test_sweep import TINY_SPACE

SPACE = TINY_SPACE


def _sweep(tmp_path: Path, **overrides) -> SweepSettings:
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    values = dict(name="m", space=str(space), budgets=(0.0003, 0.0008), trials=2, dataset="synthetic:40",
                  runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), concurrency=2, scheduler="none",
                  estimate=False)  # the measured estimate has its own test (tests/test_ledger.py)
    return SweepSettings(**{**values, **overrides})


def test_one_parent_and_one_child_per_trial_equal_to_the_parquet_rows(ray_session, tmp_path: Path) -> None:
    settings = _sweep(tmp_path)
    run_sweep(settings, out=lambda _: None, err=lambda _: None)
    rows = {r["trial_id"]: r for r in results.read(settings.sweep_dir / results.RESULTS_FILE).to_pylist()}
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags[tracking.PARENT_TAG] == "m"
    assert parents[0].info.status == "FINISHED" and parents[0].data.params["search"] == "tpe"
    # Two trials per tier, but the first tier has one config that fits, trained once: three trials.
    assert parents[0].data.tags["version.ray"] and len(children) == len(rows) == 3
    client = MlflowClient(uri)
    for child in children:
        row = rows[child.data.tags[tracking.TRIAL_TAG]]
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.run_name == Config.from_columns(row).name and child.info.status == "FINISHED"
        for key in ("model", "resolution", "patch_size", "depth", "ensemble_size", "keep_rate", "seed", "tokens_kept"):
            assert child.data.params[key] == str(row[key])
        for key in ("train_gflops", "inference_gflops", "predicted_memory_gb", "best_val_accuracy", "test_accuracy"):
            assert child.data.metrics[key] == pytest.approx(row[key])
        assert child.data.tags["pdsweep.tier"] == f"{row['budget_gflops']:g}"
        assert child.data.tags["pdsweep.status"] == row["status"]
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2]
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == [h["val_accuracy"] for h in row["history"]]
    # The sweep's report lands on the parent run as artifacts when the sweep ends.
    names = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"report.md", "report.png", "tiny.yaml", "sweep.json"} <= names


def row(i: int, **values) -> ResultRow:
    """A completed trial's results row, ``t{i}``."""
    return ResultRow.from_dict({name: None for name in results.SCHEMA.names}
                               | dict(sweep="s", trial_id=f"t{i}", phase="search", budget_gflops=1.0, seed=0,
                                      status="completed", model="vit_micro", resolution=32, patch_size=8, depth=1,
                                      ensemble_size=1, keep_rate=0.5, sampling="random", keep_mode="fixed", init="random",
                                      tokens_kept=9, num_classes=4, train_gflops=0.1, inference_gflops=0.2,
                                      predicted_memory_gb=0.01, best_val_accuracy=0.5 + i / 10, epochs_run=2,
                                      epochs_planned=2, wall_seconds=1.0) | values)


@pytest.mark.parametrize("kind", [tracking.Tracker, QueuedTracker])
def test_a_store_lost_mid_sweep_is_reported_once_and_back_filled(tmp_path: Path, kind: type[tracking.Tracker]) -> None:
    good = tmp_path / "good.db"
    ids = tracking.start_sweep(f"sqlite:///{good}", "x", (tmp_path / "art").as_uri(), "s", {"a": 1}, files=[])
    rows = [row(i) for i in range(3)]
    tracker = kind(ids)
    tracker.finish(rows[0])
    broken = kind(replace(ids, uri=f"sqlite:///{tmp_path / 'gone' / 'nowhere' / 'x.db'}"))
    for r in rows[1:]:
        broken.finish(r)  # must not raise
    assert tracker.flush() is None and broken.flush() is None
    assert broken.unlogged == {"t1", "t2"} and broken.failures == 1  # the breaker opened at the first failure
    assert "2 trial(s) were not fully logged" in broken.warning() and "pdsweep report --to-mlflow NAME" in broken.warning()
    assert tracking.backfill(ids, rows) == 2
    assert tracking.backfill(ids, rows) == 0  # nothing missing now
    logged = MlflowClient(f"sqlite:///{good}").search_runs([ids.experiment_id], filter_string="tags.`mlflow.parentRunId` != ''")
    assert sorted(r.data.metrics["best_val_accuracy"] for r in logged) == pytest.approx([0.5, 0.6, 0.7])


def test_child_runs_a_killed_driver_left_open_are_closed_interrupted_or_lost(tmp_path: Path) -> None:
    ids = tracking.start_sweep(f"sqlite:///{tmp_path / 'm.db'}", "x", (tmp_path / "art").as_uri(), "s", {}, files=[])
    killed = tracking.Tracker(ids)  # the driver that was killed: it opened two runs, closed neither
    for trial_id in ("a", "b"):
        killed.child(trial_id, trial_id, {})
    client = MlflowClient(ids.uri)

    def state() -> dict[str, tuple[str, str | None]]:
        found = client.search_runs([ids.experiment_id], filter_string="tags.`mlflow.parentRunId` != ''")
        return {r.data.tags[tracking.TRIAL_TAG]: (r.info.status, r.data.tags.get("pdsweep.status")) for r in found}

    tracking.Tracker(ids).close_open()  # a resume that was itself interrupted: they may still go on
    assert state() == {"a": ("KILLED", "interrupted"), "b": ("KILLED", "interrupted")}
    resumed = tracking.Tracker(ids)
    resumed.child("a", "a", {})  # Tune restored trial a: its run is reopened
    assert state()["a"] == ("RUNNING", "running")
    client.update_run(killed.runs["b"], status="RUNNING")  # as a driver killed outright leaves it
    resumed.close_open(sweep_done=True)  # the sweep ended; b never came back
    assert state() == {"a": ("KILLED", "interrupted"), "b": ("KILLED", "lost")}


def test_unreachable_tracking_server_is_one_line(cli, tmp_path: Path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    started = time.monotonic()
    result = cli("run", "--space", space, "--budget-gflops", "0.0008", "--dataset", "synthetic:40", "--runs-dir",
                 tmp_path / "runs", "--cache-dir", tmp_path / "cache", "--mlflow-uri", "http://127.0.0.1:1")
    assert_one_line_error(result, "cannot reach the MLflow tracking store http://127.0.0.1:1")
    assert time.monotonic() - started < 30
    assert not (tmp_path / "runs").exists()
    with pytest.raises(PdsweepError, match=r"cannot reach the MLflow tracking store"):
        tracking.check_reachable("http://127.0.0.1:1")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_tracking_server_killed_mid_sweep_is_one_warning_and_back_filled(ray_session, tmp_path: Path) -> None:
    import threading

    from pdsweep.results import ui

    store = f"sqlite:///{tmp_path / 'server.db'}"
    port = _free_port()
    server = ui.start(str(tmp_path), port, store)  # a real `mlflow server`, as a team would run one
    # Policy search: four trials of the two architectures at four keep rates (a tier trains no config twice).
    settings = _sweep(tmp_path, mlflow_uri=f"http://127.0.0.1:{port}", budgets=(0.0008,), trials=4, concurrency=1,
                      policy="search")
    table = settings.absolute().sweep_dir / results.RESULTS_FILE

    def kill_after_first_trial() -> None:
        while not (table.is_file() and results.read_rows(table)):
            time.sleep(0.1)
        ui.stop(server, grace_s=0)  # gone, mid-sweep

    killer = threading.Thread(target=kill_after_first_trial, daemon=True)
    killer.start()
    lines: list[str] = []
    try:
        outcome = run_sweep(settings, out=lines.append, err=lines.append)
    finally:
        killer.join(timeout=60)
        ui.stop(server, grace_s=0)
    assert len(outcome.rows) == 4 and all(r.finished for r in outcome.rows)  # Parquet complete
    warnings = [line for line in lines if "MLflow" in line and "not fully logged" in line]
    assert len(warnings) == 1 and "back-fill with `pdsweep report --to-mlflow m`" in warnings[0]
    assert not [line for line in lines if "Traceback" in line]
    # The space file went to the server's artifact store beside the runs, not into the working directory.
    assert list((tmp_path / "mlartifacts").rglob("tiny.yaml"))

    server = ui.start(str(tmp_path), port, store)  # back up
    try:
        from conftest import CliResult  # noqa: F401  (the CLI in-process, as a user runs it)
        from pdsweep.cli import main

        assert main(["report", "m", "--runs-dir", str(tmp_path / "runs"), "--to-mlflow"]) == 0
        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.get_experiment_by_name("tiny").experiment_id
        children = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" in r.data.tags]
        assert sorted(c.data.tags[tracking.TRIAL_TAG] for c in children) == sorted(r.trial_id for r in outcome.rows)
        assert all(c.info.status == "FINISHED" for c in children)
        for child in children:  # each epoch's metrics at its step, back-filled or logged live
            row = next(r for r in outcome.rows if r.trial_id == child.data.tags[tracking.TRIAL_TAG])
            steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy"))
            assert steps == [p.epoch for p in row.history]
    finally:
        ui.stop(server)
