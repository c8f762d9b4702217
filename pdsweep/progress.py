"""The driver's view of a running sweep: a results row, MLflow and a progress line per trial.

:class:`SweepCallback` is a Ray Tune callback on the driver. As each trial ends it appends the
trial's row to ``results.parquet`` (rewritten atomically, then published to a remote runs dir),
logs the trial to MLflow (:mod:`pdsweep.tracking`) and prints one line; every epoch's metrics go
to MLflow as they arrive.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pdsweep import cost, report, results, tracking
from pdsweep.results import ROBUSTNESS_KEEP_RATES
from pdsweep.config import Config
from pdsweep.errors import PdsweepError
from pdsweep.store import STARTS_FILE, STUDY_FILE, relocated

if TYPE_CHECKING:
    from pdsweep.sweep import SweepOutcome, SweepSettings

Print = Callable[[str], None]




def _callback_base() -> type:
    from ray.tune import Callback

    return Callback


class SweepCallback(_callback_base()):  # type: ignore[misc]
    """On the driver: a results row and a progress line for every trial that ends."""

    def __init__(self, settings: SweepSettings, err: Print, mlflow_ids: dict[str, str] | None = None) -> None:
        self.sweep_dir = settings.sweep_dir
        self.settings = settings
        self.err = err
        self.mlflow_ids = mlflow_ids
        self.tracker: tracking.Tracker | None = None
        self.rows: dict[str, dict[str, Any]] = {}
        self.finished_before: set[str] = set()  # trials a previous driver recorded as ended
        self.history: dict[str, dict[int, dict[str, float]]] = {}

    def setup(self, **info: Any) -> None:
        self.rows = {row["trial_id"]: row for row in results.read_rows(self.sweep_dir / results.RESULTS_FILE)}
        self.finished_before = {trial_id for trial_id, row in self.rows.items() if row["status"] != "error"}
        self.tracker = tracking.Tracker(self.mlflow_ids) if self.mlflow_ids else None

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if result.get("done_training") or "epoch" not in result:
            return
        self.history.setdefault(trial.trial_id, {})[int(result["epoch"])] = {
            "train_loss": result.get("train_loss"), "val_accuracy": result.get("val_accuracy")}
        if self.tracker is not None:
            config = Config(**trial.config["config"])
            self.tracker.epoch(trial.trial_id, config.name, tracking.run_tags(_partial_row(trial.config)), result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._record(trial, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._record(trial, error=_error_line(trial))

    def _record(self, trial: Any, error: str | None) -> None:
        if trial.trial_id in self.finished_before:
            # The driver died after this trial's row was written but before Tune's own state said
            # it had ended, so Tune ran it again from its last checkpoint: only the evaluation, and
            # without the epochs this driver never saw. The first row is the whole record.
            self.err(f"trial {trial.trial_id} had ended before the interruption; its first result is kept.")
            return
        row = result_row(self.settings, trial.trial_id, trial.config, trial.last_result or {},
                         _analysis(trial), error, self.history.get(trial.trial_id, {}))
        self.rows[trial.trial_id] = row
        results.write(self.rows.values(), self.sweep_dir / results.RESULTS_FILE)
        # The journal first: published results never name a trial the published studies lack.
        self.settings.store.publish(STUDY_FILE, STARTS_FILE, results.RESULTS_FILE)
        if self.tracker is not None:
            self.tracker.finish(row, Config(**trial.config["config"]).name, tracking.run_tags(row))
        self.err(progress_line(row, list(self.rows.values())))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["err"] = None  # a print function from the original process
        state["tracker"] = None  # rebuilt in setup()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.err is None:
            self.err = lambda line: print(line, file=sys.stderr, flush=True)
        store = relocated(self.settings.store)  # where a resumed sweep is now
        self.settings = replace(self.settings, runs_dir=store.runs_dir)
        self.sweep_dir = self.settings.sweep_dir


def _partial_row(trial_config: dict[str, Any]) -> dict[str, Any]:
    """What run tags need, before a trial has a results row."""
    return {"budget_gflops": trial_config["tier"], "phase": trial_config["phase"], "seed": trial_config["seed"]}


def _utc(seconds: Any) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=timezone.utc) if isinstance(seconds, (int, float)) else None


def _analysis(trial: Any) -> dict[str, Any]:
    analysis = getattr(trial, "metric_analysis", {}) or {}
    return {name: values.get("max") for name, values in analysis.items() if isinstance(values, dict)}


def _error_line(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text().strip().splitlines() if path else []
    except OSError:
        text = []
    return text[-1][:500] if text else "the trial failed"


def result_row(settings: SweepSettings, trial_id: str, trial_config: dict[str, Any], last: dict[str, Any],
               best: dict[str, Any], error: str | None, history: dict[int, dict[str, float]] | None = None) -> dict[str, Any]:
    """One results row from what Tune knows of a finished trial."""
    config = Config(**trial_config["config"])
    training = trial_config["training"]
    done = bool(last.get("done_training"))
    estimate = cost.estimate(config, batch_size=training["batch_size"], precision=training["precision"],
                             optimizer=training["optimizer"])
    robustness = [
        {"keep_rate": rate, "accuracy": last[f"robustness_{rate:g}"]}
        for rate in ROBUSTNESS_KEEP_RATES if f"robustness_{rate:g}" in last
    ]
    return {
        "sweep": settings.name,
        "trial_id": trial_id,
        "phase": trial_config["phase"],
        "budget_gflops": float(trial_config["tier"]),
        "budget_memory_gb": settings.memory_gb,
        "seed": int(trial_config["seed"]),
        "status": "error" if error else "completed" if done else "stopped",
        "model": config.model,
        "resolution": config.resolution,
        "patch_size": config.patch_size,
        "depth": config.blocks,
        "ensemble_size": config.ensemble_size,
        "keep_rate": config.keep_rate,
        "keep_range_low": config.keep_range_low,
        "sampling": config.sampling,
        "keep_mode": config.keep_mode,
        "tokens_kept": config.tokens_kept,
        "num_classes": config.num_classes,
        "train_gflops": estimate.train_gflops,
        "inference_gflops": estimate.inference_gflops,
        "predicted_memory_gb": estimate.memory_gb,
        "measured_memory_gb": best.get("peak_memory_gb"),
        "best_val_accuracy": best.get("val_accuracy"),
        "final_val_accuracy": last.get("val_accuracy"),
        "val_auc": last.get("val_auc"),
        "test_accuracy": last.get("test_accuracy") if done else None,
        "test_auc": last.get("test_auc") if done else None,
        "robustness": robustness or None,
        "history": [{"epoch": epoch, **values} for epoch, values in sorted((history or {}).items())] or None,
        "epochs_run": int(last.get("epoch", 0)),
        "epochs_planned": int(training["epochs"]),
        "wall_seconds": float(last.get("time_total_s", 0.0)),
        "train_seconds": last.get("train_seconds"),
        "started_at": _utc(last.get("started_at")),
        "ended_at": _utc(last.get("reported_at")),
        "node_id": last.get("node_id"),
        "error": error,
    }


def progress_line(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    tier = [r for r in rows if r["budget_gflops"] == row["budget_gflops"] and r["best_val_accuracy"] is not None]
    best = max((r["best_val_accuracy"] for r in tier), default=float("nan"))
    name = report.config_of(row).name
    if row["status"] == "error":
        outcome = f"error: {row['error']}"
    else:
        outcome = f"val {row['best_val_accuracy']:.1%}"
        if row["status"] == "completed":
            outcome += f", test {row['test_accuracy']:.1%}"
        else:
            outcome += f", stopped at epoch {row['epochs_run']}/{row['epochs_planned']}"
    phase = " (repeat, seed {})".format(row["seed"]) if row["phase"] == "repeat" else ""
    return (f"[{len(rows)}] tier {row['budget_gflops']:g} GF | {name}{phase} | {outcome} | "
            f"{row['train_gflops']:.4g} GF | {row['wall_seconds']:.0f} s | best in tier {best:.1%}")


def report_or_none(name: str, rows: list[dict[str, Any]]) -> report.Report | None:
    try:
        return report.build(name, rows)
    except PdsweepError:  # no finished trial yet
        return None


def summary_lines(outcome: SweepOutcome) -> list[str]:
    lines = [f"sweep {outcome.name!r}: {len(outcome.rows)} trials; results in {outcome.results_path}"]
    if outcome.report is None:
        return lines + ["  no finished trial"]
    for tier in outcome.report.tiers:
        best = tier.best
        if best is None:
            lines.append(f"  tier {tier.budget_gflops:g} GFLOPs: no finished trial")
            continue
        seeds = f" over {best.seeds} seeds" if best.seeds > 1 else ""
        test = f", test {best.test_accuracy:.1%}" if best.test_accuracy is not None else ", no test (stopped early)"
        spread = f" +- {best.spread:.1%}" if best.spread is not None else ""
        margin = f"; {tier.margin:+.1%} over {tier.runner_up.config.name}" if tier.runner_up else ""
        lines.append(
            f"  tier {tier.budget_gflops:g} GFLOPs: best {best.config.name}: val {best.metric:.1%}{spread}{seeds}{test}; "
            f"{best.train_gflops:.4g} train GFLOPs, {best.memory_gb:.3g} GB{margin}"
        )
    return lines
