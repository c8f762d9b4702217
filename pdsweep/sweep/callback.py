"""The driver's view of a running sweep: a results row, MLflow and a progress line per trial.

:class:`SweepCallback` is a Ray Tune callback on the driver. As each trial ends it appends the
trial's row to ``results.parquet`` (rewritten atomically, then published to a remote runs dir),
logs the trial to MLflow and prints one line; every epoch's metrics go to MLflow as they arrive.
MLflow's calls are queued and made by a thread of their own
(:mod:`pdsweep.results.tracking_queue`), so Tune's loop never waits for the tracking store.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdsweep import cost
from pdsweep.paths import MLFLOW_FILE
from pdsweep.results import tracking
from pdsweep.results.compute import trial_tflop
from pdsweep.objective import METRICS, Objective
from pdsweep.results.rows import (
    RESULTS_FILE, ClassRecall, EpochPoint, MetricInterval, ResultRow, RobustnessPoint, RowTable, SplitCount, read_rows,
    write,
)
from pdsweep.results.summary import progress_line
from pdsweep.results.tracking_queue import QueuedTracker
from pdsweep.sweep.spec import ROBUSTNESS_PREFIX, TrialSpec
from pdsweep.sweep.store import STARTS_FILE, STUDY_FILE, relocated, retried
from pdsweep.training.faults import killed_for_memory

if TYPE_CHECKING:
    from pdsweep.sweep.settings import SweepSettings
    from pdsweep.sweep.watch import ClusterWatch

Print = Callable[[str], None]


def _callback_base() -> type:
    from ray.tune import Callback

    return Callback


class SweepCallback(_callback_base()):  # type: ignore[misc]
    """On the driver: a results row and a progress line for every trial that ends."""

    def __init__(self, settings: SweepSettings, err: Print, mlflow_ids: tracking.TrackingIds | None = None,
                 labels: dict[str, dict[str, str]] | None = None) -> None:
        self.sweep_dir = settings.sweep_dir
        self.settings = settings
        self.err = err
        self.mlflow_ids = mlflow_ids
        self.labels = labels or {}  # a recipe's config name -> its MLflow label and group tags
        self.tracker: QueuedTracker | None = None
        self.table = RowTable()  # the rows written so far, by trial id
        self.finished_before: set[str] = set()  # trials a previous driver recorded as ended
        self.history: dict[str, dict[int, EpochPoint]] = {}
        self.storage_warned = False
        self.ended: set[str] = set()  # trials this driver wrote a row for
        self.watch: ClusterWatch | None = None  # the driver's watch over nodes and waiting trials (run._execute)

    @property
    def rows(self) -> dict[str, ResultRow]:
        return self.table.rows

    def setup(self, **info: Any) -> None:
        self.table = RowTable(read_rows(self.sweep_dir / RESULTS_FILE))
        self.finished_before = {trial_id for trial_id, row in self.rows.items() if row.status != "interrupted"}
        if self.mlflow_ids is None:
            self.tracker = None
        elif self.tracker is None or self.tracker.ids != self.mlflow_ids:  # the repeats keep the search's queue
            self.tracker = QueuedTracker(self.mlflow_ids, self.labels)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.watch is not None:
            self.watch.step(trials)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if result.get("done_training") or "epoch" not in result:
            return
        epoch = int(result["epoch"])
        self.history.setdefault(trial.trial_id, {})[epoch] = EpochPoint(
            epoch, result.get("train_loss"), result.get("val_accuracy"),
            **{f"val_{m}": _finite(result.get(f"val_{m}")) for m in METRICS if m != "accuracy"})
        if self.tracker is not None:
            spec = TrialSpec.from_dict(trial.config)
            tags = tracking.run_tags(tier=spec.tier, phase=spec.phase, seed=spec.seed)
            self.tracker.epoch(trial.trial_id, spec.config.name, tags, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._record(trial, error=None)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune retries the trial: its worker or node was lost, or its node lacks the weights (the watch stops the sweep)
        if self.watch is not None:
            self.watch.trial_failed(_error_text(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune gave up on the trial: its worker or node was lost more than --max-failures times
        # (errors in the trial's own code end it with a report instead, see sweep.trainable).
        text = _error_text(trial)
        if self.watch is not None:
            self.watch.trial_failed(text)
        self._record(trial, error=_error_line(text), status="oom" if killed_for_memory(text) else "error")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Trials still running when Tune stopped (Ctrl-C, SIGTERM): a row saying so, which the
        trial's own replaces when ``resume`` finishes it."""
        for trial in trials:
            # Tune marks the trials it stops on its way out TERMINATED, without on_trial_complete.
            if trial.trial_id in self.history and trial.trial_id not in self.ended:  # trained here, not ended
                self._record(trial, error=None, status="interrupted")

    def _record(self, trial: Any, error: str | None, status: str | None = None) -> None:
        if trial.trial_id in self.finished_before:
            # The driver died after this trial's row was written but before Tune's own state said
            # it had ended, so Tune ran it again from its last checkpoint: only the evaluation, and
            # without the epochs this driver never saw. The first row is the whole record.
            self.err(f"trial {trial.trial_id} had ended before the interruption; its first result is kept.")
            return
        last = {**(trial.last_result or {}), **({"trial_status": status} if status else {})}
        row = result_row(self.settings, trial.trial_id, TrialSpec.from_dict(trial.config), last,
                         _analysis(trial), error, self.history.get(trial.trial_id, {}))
        self.table.put(row)
        self.ended.add(trial.trial_id)
        self._save()
        if self.tracker is not None:
            self.tracker.finish(row)
            if self.settings.store.remote and not self.settings.mlflow_uri:  # the sweep's own SQLite store, once written
                self.tracker.then(lambda: self.warn_storage(retried(lambda: self.settings.store.publish(MLFLOW_FILE))))
        self.err(progress_line(row, list(self.rows.values())))

    def _save(self) -> None:
        """Rewrite ``results.parquet`` and publish it, the journal first (published results never
        name a trial the published studies lack). Storage that fails is retried with backoff;
        if it still fails, one warning, and the rows stay in memory for the next write."""
        def save() -> None:
            write(self.table, self.sweep_dir / RESULTS_FILE)
            self.settings.store.publish(STUDY_FILE, STARTS_FILE, RESULTS_FILE)

        self.warn_storage(retried(save))

    def flush(self) -> None:
        """Write the results once more if a write failed during the sweep (the storage may be back)."""
        if self.storage_warned and self.rows:
            self._save()

    def warn_storage(self, error: OSError | None) -> None:
        if error is not None and not self.storage_warned:
            self.storage_warned = True
            self.err(f"warning: cannot write the results ({error}); the sweep goes on and writes them "
                     "again after the next trial.")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["err"] = None  # a print function from the original process
        state["tracker"] = None  # its queue and thread: rebuilt in setup()
        state["table"] = None  # read again in setup()
        state["watch"] = None  # Ray task references: made again by the driver that resumes
        state.pop("rows", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"storage_warned": False, "ended": set(), "labels": {}, "watch": None, **state})
        self.__dict__.pop("rows", None)  # pickled by pdsweep before RowTable: a plain dict, empty
        self.table = RowTable()  # read again in setup()
        _UNPICKLED[self.settings.name] = self
        if isinstance(self.mlflow_ids, dict):  # pickled by a sweep started before TrackingIds
            self.mlflow_ids = tracking.TrackingIds.from_dict(self.mlflow_ids)
        if self.err is None:
            self.err = lambda line: print(line, file=sys.stderr, flush=True)
        store = relocated(self.settings.store)  # where a resumed sweep is now
        self.settings = replace(self.settings, runs_dir=store.runs_dir)
        self.sweep_dir = self.settings.sweep_dir


# The callbacks Tune unpickled from a restored experiment, by sweep: a restored Tuner calls
# those, not the one the resuming driver made (see :func:`driving`).
_UNPICKLED: dict[str, SweepCallback] = {}


def driving(callback: SweepCallback) -> SweepCallback:
    """The callback Tune will call: ``callback``, or the one Tune unpickled for its sweep,
    told what ``callback`` knows now (where the sweep is, its tracking store, how to print)."""
    restored = _UNPICKLED.pop(callback.settings.name, None)
    if restored is None or restored is callback:
        return callback
    restored.settings, restored.sweep_dir, restored.err = callback.settings, callback.sweep_dir, callback.err
    restored.mlflow_ids, restored.labels, restored.watch = callback.mlflow_ids, callback.labels, callback.watch
    return restored


def _utc(seconds: Any) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=timezone.utc) if isinstance(seconds, (int, float)) else None


def _finite(value: Any) -> float | None:
    """A number, or None for NaN (what a trial that failed before its first epoch reports)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _analysis(trial: Any) -> dict[str, Any]:
    """Each metric's best over the trial's results, as Tune kept them: the lowest loss, else the highest."""
    analysis = getattr(trial, "metric_analysis", {}) or {}
    return {name: values.get("min" if name == "val_loss" else "max") for name, values in analysis.items()
            if isinstance(values, dict)}


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        return Path(path).read_text().strip() if path else ""
    except OSError:
        return ""


def _error_line(text: str) -> str:
    """The line of Ray's error that says what happened: for a memory-monitor kill, the one with
    the node's memory and its threshold (the last is Ray's advice); else the last."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return "the trial failed"
    if not killed_for_memory(text):
        return lines[-1][:500]
    said = [line.strip() for line in lines if "low on memory" in line or line.startswith("OOM kill reason")]
    return "; ".join(said or lines[-1:])[:500]


def result_row(settings: SweepSettings, trial_id: str, spec: TrialSpec, last: dict[str, Any], best: dict[str, Any],
               error: str | None, history: dict[int, EpochPoint] | None = None) -> ResultRow:
    """One results row from what Tune knows of a finished trial."""
    status = last.get("trial_status") or ("error" if error else "completed" if last.get("done_training") else "stopped")
    error = error or last.get("error")
    done = status == "completed"
    epochs = sorted(history or {})
    setup = spec.settings.step  # as the trial arranged it where it said (the device's free memory may decide)
    if last.get("micro_batch_size") is not None:
        setup = replace(setup, micro_batch_size=int(last["micro_batch_size"]), member_turns=bool(last.get("member_turns")))
    estimate = cost.estimate(spec.config, setup)
    epochs_run = int(last.get("epoch", epochs[-1] if epochs else 0))
    wall_seconds = float(last.get("time_total_s", 0.0))
    images = spec.context.train_images
    devices = last.get("devices")
    robustness = tuple(sorted(  # the trial's test-time keep rates (training.test_keep_rates), highest first
        (RobustnessPoint(float(key.removeprefix(ROBUSTNESS_PREFIX)), value)
         for key, value in last.items() if key.startswith(ROBUSTNESS_PREFIX)),
        key=lambda point: -point.keep_rate,
    ))
    return ResultRow(
        sweep=settings.name,
        trial_id=trial_id,
        phase=spec.phase,
        budget_gflops=spec.tier,
        budget_memory_gb=settings.memory_gb,
        seed=spec.seed,
        status=status,
        config=spec.config.explicit,
        train_gflops=estimate.train_gflops,
        inference_gflops=estimate.inference_gflops,
        predicted_memory_gb=estimate.memory_gb,
        measured_memory_gb=best.get("peak_memory_gb"),
        final_val_accuracy=_finite(last.get("val_accuracy")),
        val_auc=last.get("val_auc"),
        **_metric_columns(spec, last, best, history or {}, done),
        robustness=robustness or None,
        attention=spec.settings.attention,
        attention_backend=last.get("attention_backend"),
        history=tuple(point for _, point in sorted((history or {}).items())) or None,
        epochs_run=epochs_run,
        epochs_planned=spec.context.training.epochs,
        wall_seconds=wall_seconds,
        train_seconds=last.get("train_seconds"),
        started_at=_utc(last.get("started_at")),
        ended_at=_utc(last.get("reported_at")),
        node_id=last.get("node_id"),
        error=error,
        train_images=images,
        device_kind=last.get("device_kind"),
        devices=devices,
        spent_tflop=trial_tflop(estimate.train_gflops, images, epochs_run) if images is not None else None,
        device_seconds=wall_seconds * devices if devices is not None else None,
        **_weights_columns(spec, last),
        micro_batch_size=estimate.setup.micro,
        member_turns=bool(estimate.setup.member_turns),
    )


def _metric_columns(spec: TrialSpec, last: dict[str, Any], best: dict[str, Any], history: dict[int, EpochPoint],
                    done: bool) -> dict[str, Any]:
    """Every metric's best validation value and (a trial that ran every epoch) test value, the
    test intervals, the per-class recall and the splits' sizes, as the trial reported them."""
    settings = spec.settings
    values: dict[str, Any] = {"metric": settings.metric, "scored_by": settings.eval_groups}
    for metric in METRICS:
        objective = Objective(metric)
        reported = _finite(last.get(objective.best_key))  # the trial's own, over every epoch it ran
        seen = objective.best([_finite(best.get(objective.val_key)), *(p.val(metric) for p in history.values())])
        values[objective.best_key] = reported if reported is not None else seen
        values[objective.test_key] = _finite(last.get(objective.test_key)) if done else None
    if done:
        intervals = [MetricInterval(m, float(last[f"test_{m}_interval"][0]), float(last[f"test_{m}_interval"][1]))
                     for m in METRICS if isinstance(last.get(f"test_{m}_interval"), list | tuple)]
        recall = [ClassRecall(str(name), _finite(value)) for name, value in last.get("class_recall") or ()]
        values.update(test_intervals=tuple(intervals) or None, class_recall=tuple(recall) or None)
    counts = [SplitCount(str(split), int(images), None if groups is None else int(groups))
              for split, images, groups in last.get("split_counts") or ()]
    values["split_counts"] = tuple(counts) or None
    return values


def _weights_columns(spec: TrialSpec, last: dict[str, Any]) -> dict[str, Any]:
    """What a pretrained trial started from; the blocks loaded as the trial reported them."""
    weights = spec.weights
    if weights is None:
        return {}
    return {"weights_source": str(weights.source), "weights_sha256": weights.sha256,
            "pretrained_blocks": last.get("pretrained_blocks")}
