"""MLflow, written from the driver: a parent run per sweep, a child run per trial.

Ray's ``MLflowLoggerCallback`` logs every numeric result field (pids, timestamps, ``time_*``),
one call per metric, with no nesting; ``setup_mlflow`` logs from the workers, which then need a
route to the tracking server and would make a SQLite store a many-writer database. pdsweep logs
from the driver instead, with ``MlflowClient.log_batch``: per trial, the config axes as params,
the costs and the final metrics as metrics, every epoch's metrics with its step, tags for tier,
phase, seed and status, and a readable run name (``deit_base-448px-p16-d12-k0.25-x1``).

The default store is SQLite, ``RUNS_DIR/mlflow.db``, with artifacts in ``RUNS_DIR/mlartifacts``
(MLflow 3 refuses the old ``./mlruns`` file store). A store that cannot be reached at the start
is an error; one that fails mid-sweep is not: the sweep goes on, ``results.parquet`` stays
complete, and one warning at the end says what was not logged and how to back-fill it
(``pdsweep report --to-mlflow NAME``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdsweep.config import column_names
from pdsweep.errors import PdsweepError

if TYPE_CHECKING:
    from pdsweep.results.rows import ResultRow

log = logging.getLogger(__name__)

PARENT_TAG = "pdsweep.sweep"  # on the parent run: the sweep's name
TRIAL_TAG = "pdsweep.trial_id"  # on a child run: Ray Tune's trial id
CONFIG_PARAMS = (*column_names(), "seed")  # every config axis, the derived columns, the seed
COST_METRICS = ("train_gflops", "inference_gflops", "predicted_memory_gb", "measured_memory_gb")
FINAL_METRICS = ("best_val_accuracy", "final_val_accuracy", "val_auc", "test_accuracy", "test_auc",
                 "epochs_run", "wall_seconds", "train_seconds")
EPOCH_METRICS = ("train_loss", "val_accuracy", "val_auc", "lr", "images_per_second", "peak_memory_gb")


@dataclass(frozen=True)
class TrackingIds:
    """Where a sweep's runs are: the tracking store, the experiment, the sweep's parent run."""

    uri: str
    experiment_id: str
    parent_run_id: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, str]) -> TrackingIds:
        return cls(values["uri"], values["experiment_id"], values["parent_run_id"])


def default_uri(store_root: Path) -> str:
    """SQLite beside the sweeps: ``RUNS_DIR/mlflow.db`` (for a remote runs dir, beside the
    driver's local mirror of it: give ``--mlflow-uri`` to share tracking between machines)."""
    return f"sqlite:///{store_root / 'mlflow.db'}"


def artifact_root(store_root: Path) -> str:
    return (store_root / "mlartifacts").as_uri()


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def check_reachable(uri: str) -> None:
    """Fail fast and clearly if the tracking store cannot be used (no long HTTP retries)."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    try:
        _client(uri).search_experiments(max_results=1)
    except Exception as error:  # MLflow raises many types for a store it cannot reach
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise PdsweepError(
            f"cannot reach the MLflow tracking store {uri} ({first}); start the server or fix --mlflow-uri, "
            "or drop it to use SQLite under --runs-dir."
        ) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("pdsweep", "torch", "timm", "ray", "optuna", "mlflow"):
        try:
            found[f"version.{package}"] = version(package)
        except PackageNotFoundError:
            found[f"version.{package}"] = "not installed"
    return found


def git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def start_sweep(uri: str, experiment: str, artifact_location: str | None, sweep: str,
                params: Mapping[str, Any], files: Iterable[Path]) -> TrackingIds:
    """Create (or reuse) the experiment and the sweep's parent run; returns ids for sweep.json."""
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, artifact_location=artifact_location)
    # Opens in the UI's model-training view (runs, params, metrics), not its GenAI one.
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
    tags = {PARENT_TAG: sweep, **versions()}
    commit = git_commit(Path.cwd())
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = client.create_run(experiment_id, run_name=sweep, tags=tags)
    from mlflow.entities import Param

    client.log_batch(run.info.run_id, params=[Param(k, _text(v)) for k, v in params.items()])
    for file in files:
        client.log_artifact(run.info.run_id, str(file))
    return TrackingIds(uri, experiment_id, run.info.run_id)


def _text(value: Any) -> str:
    return str(value)[:6000]  # MLflow's limit on a param's value


class Tracker:
    """Logs trials to MLflow as they run; never lets a tracking failure stop the sweep."""

    def __init__(self, ids: TrackingIds) -> None:
        self.ids = ids
        self.runs: dict[str, str] = {}  # trial id -> child run id
        self.unlogged: set[str] = set()
        self.error: str | None = None

    def _guard(self, trial_id: str, action: Any) -> None:
        try:
            action()
        except Exception as error:  # the store went away: remember, tell once at the end
            self.unlogged.add(trial_id)
            if self.error is None:
                self.error = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
                log.debug("MLflow logging failed", exc_info=True)

    def child(self, trial_id: str, run_name: str, tags: Mapping[str, str]) -> str | None:
        """The child run of ``trial_id`` (found again after a resume, else created)."""
        if trial_id in self.runs:
            return self.runs[trial_id]

        def create() -> None:
            client = _client(self.ids.uri)
            parent = self.ids.parent_run_id
            found = client.search_runs(
                [self.ids.experiment_id],
                filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent}'",
                max_results=1,
            )
            if found:
                self.runs[trial_id] = found[0].info.run_id
                return
            run = client.create_run(self.ids.experiment_id, run_name=run_name,
                                    tags={"mlflow.parentRunId": parent, TRIAL_TAG: trial_id, **tags})
            self.runs[trial_id] = run.info.run_id

        self._guard(trial_id, create)
        return self.runs.get(trial_id)

    def epoch(self, trial_id: str, run_name: str, tags: Mapping[str, str], result: Mapping[str, Any]) -> None:
        """One epoch's metrics, at step = epoch."""
        run_id = self.child(trial_id, run_name, tags)
        if run_id is None or "epoch" not in result:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(result["epoch"])
        metrics = [Metric(k, float(result[k]), now, step) for k in EPOCH_METRICS if _number(result.get(k))]
        self._guard(trial_id, lambda: _client(self.ids.uri).log_batch(run_id, metrics=metrics))

    def finish(self, row: ResultRow) -> None:
        """A finished trial's params, costs, final metrics and status, from its results row."""
        trial_id = row.trial_id
        run_id = self.child(trial_id, row.config.name, run_tags(row))
        if run_id is None:
            return
        self._guard(trial_id, lambda: log_row(self.ids.uri, run_id, row))

    def warning(self) -> str | None:
        if not self.unlogged:
            return None
        return (f"MLflow: {len(self.unlogged)} trial(s) were not fully logged ({self.error}); results.parquet "
                "is complete; back-fill with `pdsweep report --to-mlflow NAME`.")


def run_tags(row: ResultRow | None = None, *, tier: float | None = None, phase: str | None = None,
             seed: int | None = None) -> dict[str, str]:
    """A child run's tags: from its results row, or (a trial still running) from its spec."""
    if row is not None:
        tier, phase, seed = row.budget_gflops, row.phase, row.seed
    return {"pdsweep.tier": f"{tier:g}", "pdsweep.phase": str(phase), "pdsweep.seed": str(seed),
            "pdsweep.status": row.status if row is not None else "running"}


def log_row(uri: str, run_id: str, row: ResultRow) -> None:
    """Params, metrics and tags of a results row onto a child run, and close it."""
    from mlflow.entities import Metric, Param, RunTag

    client = _client(uri)
    now = int(time.time() * 1000)
    existing = client.get_run(run_id).data.params
    values = row.to_dict()
    params = [Param(k, _text(values[k])) for k in CONFIG_PARAMS if values.get(k) is not None and k not in existing]
    params += [Param("budget_gflops", _text(row.budget_gflops))] if "budget_gflops" not in existing else []
    metrics = [Metric(k, float(values[k]), now, 0) for k in COST_METRICS + FINAL_METRICS if _number(values.get(k))]
    metrics += [Metric(f"robustness_keep_{p.keep_rate:g}", float(p.accuracy), now, 0) for p in row.robustness or ()]
    tags = [RunTag(k, v) for k, v in run_tags(row).items()]
    if row.error:
        tags.append(RunTag("pdsweep.error", _text(row.error)))
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    client.set_terminated(run_id, status="FAILED" if row.status == "error" else "FINISHED")


def reopen(ids: TrackingIds) -> None:
    """Mark a resumed sweep's parent run as running again."""
    _client(ids.uri).update_run(ids.parent_run_id, status="RUNNING")


def end_sweep(ids: TrackingIds, status: str = "FINISHED") -> None:
    try:
        _client(ids.uri).set_terminated(ids.parent_run_id, status=status)
    except Exception:  # reported by the tracker's warning already
        log.debug("could not close the parent run", exc_info=True)


def log_artifacts(ids: TrackingIds, files: Iterable[Path]) -> None:
    client = _client(ids.uri)
    for file in files:
        client.log_artifact(ids.parent_run_id, str(file))


def backfill(ids: TrackingIds, rows: Iterable[ResultRow]) -> int:
    """Log every row that has no finished child run yet; returns how many were logged."""
    client = _client(ids.uri)
    done = {
        run.data.tags.get(TRIAL_TAG)
        for run in client.search_runs([ids.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{ids.parent_run_id}'")
        if run.info.status in ("FINISHED", "FAILED")
    }
    tracker = Tracker(ids)
    count = 0
    for row in rows:
        if row.trial_id in done:
            continue
        tracker.finish(row)
        if tracker.error:
            raise PdsweepError(f"cannot log to MLflow at {ids.uri} ({tracker.error}).")
        count += 1
    return count


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
