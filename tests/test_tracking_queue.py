from __future__ import annotations

import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from pdsweep.results import rows as results
from pdsweep.results import tracking, tracking_queue
from pdsweep.results.tracking_queue import QueuedTracker
from pdsweep.sweep import callback as callback_module
from pdsweep.sweep import run_sweep
from test_tracking import _sweep, row


@pytest.fixture
def ids(tmp_path: Path) -> tracking.TrackingIds:
    """A sweep's parent run in a SQLite store of its own."""
    return tracking.start_sweep(f"sqlite:///{tmp_path / 'm.db'}", "x", (tmp_path / "art").as_uri(), "s", {}, files=[])


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int, int, int]]:
    """Every ``log_batch`` and ``set_terminated`` the MLflow client makes, in order, as (call, run
    id, metrics, params, tags); the calls go through to MLflow."""
    made: list[tuple[str, str, int, int, int]] = []
    log_batch, set_terminated = MlflowClient.log_batch, MlflowClient.set_terminated

    def logged(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        made.append(("log_batch", run_id, len(metrics), len(params), len(tags)))
        return log_batch(self, run_id, metrics, params, tags, **kwargs)

    def terminated(self, run_id, *args, **kwargs):
        made.append(("set_terminated", run_id, 0, 0, 0))
        return set_terminated(self, run_id, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", logged)
    monkeypatch.setattr(MlflowClient, "set_terminated", terminated)
    return made


@pytest.fixture
def held() -> Iterator[tuple[threading.Event, threading.Event]]:
    """(reached, release): a call that holds the tracker's worker until ``release`` is set."""
    reached, release = threading.Event(), threading.Event()
    yield reached, release
    release.set()


def _hold(tracker: QueuedTracker, held: tuple[threading.Event, threading.Event]) -> None:
    """Queue the holding call and wait until the worker is in it: what is queued next is taken at once."""
    reached, release = held
    tracker.then(lambda: (reached.set(), release.wait()))
    reached.wait()


def _epoch(epoch: int, accuracy: float) -> dict[str, float]:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_accuracy": accuracy, "reported_at": 1_000.0 + epoch}


def test_the_queue_keeps_each_runs_order_and_sends_everything_by_the_flush(ids, calls, held) -> None:
    tracker = QueuedTracker(ids)
    _hold(tracker, held)
    for epoch in (1, 2):
        for trial in ("a", "b", "c"):
            tracker.epoch(trial, trial, {}, _epoch(epoch, epoch / 10))
    tracker.epoch("a", "a", {}, _epoch(2, 0.9))  # trained again after a restore: the first report stands
    history = [{"epoch": 1, "train_loss": 1.0, "val_accuracy": 0.1}, {"epoch": 2, "train_loss": 0.5, "val_accuracy": 0.2}]
    tracker.finish(row(0, trial_id="a", history=history))
    tracker.finish(row(1, trial_id="b", history=history))
    tracker.close_open()  # c never finished: its run is closed as interrupted; a and b keep FINISHED
    tracker.end_sweep("KILLED")
    assert not calls  # all of it is still queued behind the held call
    held[1].set()
    assert tracker.flush() is None and tracker.warning() is None

    client = MlflowClient(ids.uri)
    runs = {trial: client.get_run(run_id) for trial, run_id in tracker.runs.items()}
    assert {t: (r.info.status, r.data.tags["pdsweep.status"]) for t, r in runs.items()} == {
        "a": ("FINISHED", "completed"), "b": ("FINISHED", "completed"), "c": ("KILLED", "interrupted")}
    for trial, run in runs.items():
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted((m.step, m.value) for m in history) == [(1, 0.1), (2, 0.2)]
        made = [call for call, run_id, *_ in calls if run_id == run.info.run_id]
        # The six epochs, taken together, went as one call per run; then each finished run's row and its close.
        assert made == (["log_batch", "log_batch", "set_terminated"] if trial != "c" else ["log_batch", "set_terminated"])
    assert client.get_run(ids.parent_run_id).info.status == "KILLED"


def test_a_store_that_hangs_holds_not_the_caller_and_its_failure_opens_the_breaker(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # connections wait in its backlog: no answer ever comes
    with silent, tracking.quick_requests(timeout_s=120):
        tracker = QueuedTracker(tracking.TrackingIds(f"http://127.0.0.1:{silent.getsockname()[1]}", "0", "parent"))
        for i in range(3):
            tracker.epoch(f"t{i}", f"t{i}", {}, _epoch(1, 0.5))
            tracker.finish(row(i))
        # Each call returned; the worker waits for the store's first answer (a call made here would, for 120 s).
        assert tracker.error is None and not tracker.unlogged
        silent.close()  # the port is closed: the call in flight is reset, and none is made for the cooldown
        assert tracker.flush() is None
    assert tracker.failures == 1 and tracker.unlogged == {"t0", "t1", "t2"}
    assert "3 trial(s) were not fully logged" in tracker.warning()


def test_a_flush_that_runs_out_of_time_names_what_it_did_not_send(ids, held) -> None:
    tracker = QueuedTracker(ids)
    _hold(tracker, held)
    for i in range(2):
        tracker.epoch(f"t{i}", f"t{i}", {}, _epoch(1, 0.5))
        tracker.finish(row(i))
    tracker.end_sweep()
    line = tracker.flush(timeout_s=0.1)  # the worker is held: none of it can go
    assert line == ("warning: MLflow: 5 queued call(s) for 2 trial(s) and the sweep's parent run not sent within "
                    "0.1 s; results.parquet is complete; back-fill with `pdsweep report --to-mlflow NAME`.")
    assert tracker.unlogged == {"t0", "t1", tracking.PARENT}
    assert tracker.warning().startswith("MLflow: 2 trial(s) were not fully logged (not sent within 0.1 s)")
    held[1].set()
    assert tracker.flush() is None  # what was given up on stays unsent: the back-fill logs it
    assert not MlflowClient(ids.uri).search_runs([ids.experiment_id], "tags.`mlflow.parentRunId` != ''")
    assert tracking.backfill(ids, [row(0), row(1)]) == 2


def test_log_batch_splits_at_mlflows_limits(ids, calls) -> None:
    client = MlflowClient(ids.uri)
    run_id = client.create_run(ids.experiment_id).info.run_id
    metrics = [Metric("m", float(step), 0, step) for step in range(2500)]
    params = [Param(f"p{i}", str(i)) for i in range(150)]
    tags = [RunTag(f"t{i}", str(i)) for i in range(250)]
    tracking.log_batch(client, run_id, metrics=metrics, params=params, tags=tags)
    assert len(calls) == 3  # 2,900 entries, 250 tags: the fewest calls the limits allow
    for _, _, n_metrics, n_params, n_tags in calls:
        assert n_metrics <= MAX_METRICS_PER_BATCH and n_params <= MAX_PARAMS_TAGS_PER_BATCH
        assert n_tags <= MAX_PARAMS_TAGS_PER_BATCH and n_metrics + n_params + n_tags <= MAX_ENTITIES_PER_BATCH
    assert [sum(c[i] for c in calls) for i in (2, 3, 4)] == [2500, 150, 250]
    data = client.get_run(run_id).data
    assert len(data.params) == 150 and {f"t{i}" for i in range(250)} <= set(data.tags)
    assert sorted(m.step for m in client.get_metric_history(run_id, "m")) == list(range(2500))


def test_epochs_coalesced_past_the_limit_go_in_several_calls(ids, calls, held) -> None:
    tracker = QueuedTracker(ids)
    _hold(tracker, held)
    for epoch in range(1, 401):  # 400 epochs of 3 metrics, taken together: 1,200 metrics for one run
        tracker.epoch("a", "a", {}, {**_epoch(epoch, epoch / 1000), "lr": 0.1})
    held[1].set()
    assert tracker.flush() is None and tracker.warning() is None
    assert [c[2] for c in calls] == [MAX_METRICS_PER_BATCH, 200]
    history = MlflowClient(ids.uri).get_metric_history(tracker.runs["a"], "val_accuracy")
    assert sorted(m.step for m in history) == list(range(1, 401))


def test_an_idle_worker_ends_and_the_next_call_starts_another(ids, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking_queue, "IDLE_S", 0.01)
    tracker = QueuedTracker(ids)
    for i in range(3):
        tracker.finish(row(i))
        assert tracker.flush() is None
        for worker in [t for t in threading.enumerate() if t.name == f"pdsweep-mlflow {ids.parent_run_id}"]:
            worker.join(timeout=60)
            assert not worker.is_alive()
    found = MlflowClient(ids.uri).search_runs([ids.experiment_id], "tags.`mlflow.parentRunId` != ''")
    assert sorted(r.data.tags[tracking.TRIAL_TAG] for r in found) == ["t0", "t1", "t2"]


def test_the_callback_pickles_without_its_queue_and_makes_one_after(ids, tmp_path: Path) -> None:
    settings = _sweep(tmp_path, name="pickled").absolute()
    callback = callback_module.SweepCallback(settings, err=lambda _: None, mlflow_ids=ids)
    callback.setup()
    tracker = callback.tracker
    tracker.finish(row(0))  # the worker runs
    restored = pickle.loads(pickle.dumps(callback))
    callback_module._UNPICKLED.pop("pickled")  # what Tune's restore would hand to driving()
    assert restored.tracker is None and callback.tracker is tracker
    callback.setup()  # the repeats phase: the same queue, its breaker and what it could not log
    assert callback.tracker is tracker
    restored.setup()
    restored.tracker.finish(row(1))
    assert tracker.flush() is None and restored.tracker.flush() is None
    found = MlflowClient(ids.uri).search_runs([ids.experiment_id], "tags.`mlflow.parentRunId` != ''")
    assert sorted(r.data.tags[tracking.TRIAL_TAG] for r in found) == ["t0", "t1"]


def test_a_sweep_stopped_by_sigterm_sends_what_it_had_queued(ray_session, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import pdsweep.sweep.run as run_module

    # Each finished trial's MLflow row waits until the driver is on its way out: all of them are
    # still queued when SIGTERM stops the sweep, and the flush on the way out must send them.
    closing = threading.Event()
    close_tracking, log_row = run_module._close_tracking, tracking.log_row

    def closing_tracking(*args, **kwargs) -> None:
        closing.set()
        close_tracking(*args, **kwargs)

    def held_row(*args, **kwargs) -> None:
        closing.wait()
        log_row(*args, **kwargs)

    monkeypatch.setattr(run_module, "_close_tracking", closing_tracking)
    monkeypatch.setattr(tracking, "log_row", held_row)
    settings = _sweep(tmp_path, budgets=(0.0008,), trials=4, concurrency=1, policy="search")
    table = settings.absolute().sweep_dir / results.RESULTS_FILE
    late = []
    previous = signal.signal(signal.SIGTERM, lambda *_: late.append(True))  # after the sweep: the test fails, not pytest

    def stop_after_first_trial() -> None:
        while not (table.is_file() and results.read_rows(table)):
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)  # `kill PID`

    stopper = threading.Thread(target=stop_after_first_trial, daemon=True)
    stopper.start()
    lines: list[str] = []
    try:
        outcome = run_sweep(settings, out=lines.append, err=lines.append)
    finally:
        stopper.join(timeout=60)
        signal.signal(signal.SIGTERM, previous)
    assert outcome.interrupted and not late and not [line for line in lines if "not sent" in line or "not fully" in line]
    client = MlflowClient(settings.absolute().store.tracking_uri)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    runs = client.search_runs([experiment])
    children = {r.data.tags[tracking.TRIAL_TAG]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["KILLED"]
    assert sorted(children) == sorted(r.trial_id for r in outcome.rows)
    for result in outcome.rows:  # each row, logged: its status, its metrics, each epoch at its step
        child = children[result.trial_id]
        assert child.data.tags["pdsweep.status"] == result.status
        assert child.info.status == tracking.RUN_STATUS.get(result.status, "FAILED")
        assert child.data.params["keep_rate"] == str(result.config.keep_rate)
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy"))
        assert steps == [p.epoch for p in result.history or ()]
