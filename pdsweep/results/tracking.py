"""MLflow, written from the driver: a parent run per sweep, a child run per trial.

Ray's ``MLflowLoggerCallback`` logs every numeric result field (pids, timestamps, ``time_*``),
one call per metric, with no nesting; ``setup_mlflow`` logs from the workers, which then need a
route to the tracking server and would make a SQLite store a many-writer database. pdsweep logs
from the driver instead, with ``MlflowClient.log_batch``: per trial, the config axes as params,
the costs and the final metrics as metrics, every epoch's metrics with its step, tags for tier,
phase, seed and status (and, for a recipe's listed configs, ``pdsweep.label`` and
``pdsweep.group``), and a readable run name (``deit_base-448px-p16-d12-k0.25-x1``).

The default store is SQLite, ``RUNS_DIR/mlflow.db``, with artifacts in ``RUNS_DIR/mlartifacts``
(MLflow 3 refuses the old ``./mlruns`` file store). A store that cannot be reached at the start
is an error; one that fails mid-sweep is not: the sweep goes on, ``results.parquet`` stays
complete, and one warning at the end says what was not logged and how to back-fill it
(``pdsweep report --to-mlflow NAME``). The sweep's driver makes its calls through
:class:`~pdsweep.results.tracking_queue.QueuedTracker`, off Ray Tune's loop.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import subprocess
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdsweep.config import column_names
from pdsweep.errors import PdsweepError
from pdsweep.objective import METRICS
from pdsweep.space.listed import LABEL_KEYS

if TYPE_CHECKING:
    from pdsweep.results.rows import ResultRow
    from pdsweep.space.listed import ListedConfig

log = logging.getLogger(__name__)

PARENT_TAG = "pdsweep.sweep"  # on the parent run: the sweep's name
PARENT = ""  # the tracker's key for calls on the parent run (trial ids are never empty)
TRIAL_TAG = "pdsweep.trial_id"  # on a child run: Ray Tune's trial id
# every config axis, the derived columns, the seed, and what a pretrained start loaded
# (and the objective the sweep ran under, and what its scores are over: images or groups)
CONFIG_PARAMS = (*column_names(), "seed", "weights_source", "weights_sha256", "pretrained_blocks", "attention",
                 "attention_backend", "metric", "scored_by")
COST_METRICS = ("train_gflops", "inference_gflops", "predicted_memory_gb", "measured_memory_gb")
# Every metric's best validation value and test value (pdsweep.objective), whatever the objective.
FINAL_METRICS = (*(f"best_val_{m}" for m in METRICS), "final_val_accuracy", "val_auc", *(f"test_{m}" for m in METRICS),
                 "epochs_run", "wall_seconds", "train_seconds", "spent_tflop", "device_seconds")
VAL_METRICS = tuple(f"val_{m}" for m in METRICS)
EPOCH_METRICS = ("train_loss", *VAL_METRICS, "lr", "images_per_second", "peak_memory_gb")


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


@contextlib.contextmanager
def quick_requests(timeout_s: int = 5, retries: int = 0) -> Iterator[None]:
    """MLflow's HTTP client without its long retries (7, with backoff: minutes on a dead
    server): a call to a store that is down fails in seconds, and the sweep goes on. A
    variable the user set stands."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s),
            # ... and without the two "View run" lines it prints per closed run: a sweep prints one per trial.
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: v for k, v in keys.items() if saved[k] is None})  # a user's own setting stands
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__


def check_reachable(uri: str) -> None:
    """Fail fast and clearly if the tracking store cannot be used (no long HTTP retries).
    A SQLite store not yet made is checked by its folder, and not created: a command refused
    after this check leaves no file behind."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        _check_creatable(Path(uri.removeprefix("sqlite:///")), uri)
        return
    try:
        with quick_requests():
            _client(uri).search_experiments(max_results=1)
    except Exception as error:  # MLflow raises many types for a store it cannot reach
        raise PdsweepError(
            f"cannot reach the MLflow tracking store {uri} ({_first_line(error)}); start the server or fix --mlflow-uri, "
            "or drop it to use SQLite under --runs-dir."
        ) from None


def _check_creatable(path: Path, uri: str) -> None:
    """``path`` can be made: its nearest existing folder is a folder this process may write."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise PdsweepError(f"cannot create the MLflow store {uri} ({folder} is not a folder this user can write); "
                           "fix --runs-dir or --mlflow-uri.")


def check_sweep(ids: TrackingIds, sweep: str) -> None:
    """The sweep's parent run must be in its tracking store; else one line with the ways on."""
    offer = (f"resume with --mlflow-uri URI to log to another store, or --no-mlflow to log nothing now "
             f"(then `pdsweep report --to-mlflow {sweep}` back-fills)")
    try:
        with quick_requests():
            _client(ids.uri).get_run(ids.parent_run_id)
    except Exception as error:  # unreachable, or reachable without this sweep's runs
        raise PdsweepError(f"the MLflow store {ids.uri} of sweep {sweep!r} cannot be used ({_first_line(error)}); "
                           f"{offer}.") from None


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
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
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

    log_batch(client, run.info.run_id, params=[Param(k, _text(v)) for k, v in params.items()])
    for file in files:
        client.log_artifact(run.info.run_id, str(file))
    return TrackingIds(uri, experiment_id, run.info.run_id)


def _key(name: str) -> str:
    """A class name as part of a metric key (MLflow allows letters, digits, ``_-. /``)."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)[:200]


def _text(value: Any) -> str:
    return str(value)[:6000]  # MLflow's limit on a param's value


class Tracker:
    """Logs trials to MLflow as they run; never lets a tracking failure stop the sweep.

    A circuit breaker: after a call fails, no call is made for :attr:`cooldown_s` seconds (the
    trials of that time are remembered as not logged), then one is tried again. A store that is
    down costs the sweep one short timeout per cooldown, not one per call.
    """

    cooldown_s = 60.0
    flush_s = 30.0  # on the driver's way out, the longest it waits for calls still queued

    def __init__(self, ids: TrackingIds, labels: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.ids = ids
        self.labels = dict(labels or {})  # config name -> the tags of its listed entry (label, group)
        self.runs: dict[str, str] = {}  # trial id -> child run id
        self.ended: set[str] = set()  # trials whose child run is closed
        self.steps: dict[str, set[int]] = {}  # trial id -> epochs logged by this driver
        self.finished: set[str] = set()  # trials with a row (logged or not)
        self.unlogged: set[str] = set()
        self.error: str | None = None
        self.failures = 0
        self._open_until = 0.0  # the breaker is open (no calls) until this time.monotonic()
        self._forced_failed = False
        self._created: set[str] = set()  # trials whose child run this tracker created
        self._found: dict[str, Any] | None = None  # trial id -> its child run in the store, read at the first child()

    def _guard(self, trial_id: str, action: Any, *, force: bool = False) -> bool:
        """Run ``action`` unless the breaker is open (``force``: the last calls of a sweep)."""
        if time.monotonic() < self._open_until and not (force and not self._forced_failed):
            self.unlogged.add(trial_id)
            return False
        try:
            action()
        except Exception as error:  # the store went away: remember, tell once at the end
            self.unlogged.add(trial_id)
            self.failures += 1
            self._forced_failed = self._forced_failed or force  # one forced call that fails is enough
            self._open_until = time.monotonic() + self.cooldown_s
            self._found = None  # a call that failed may still have been made: read the store again
            if self.error is None:
                self.error = _first_line(error)
                log.debug("MLflow logging failed", exc_info=True)
            return False
        return True

    def child(self, trial_id: str, run_name: str, tags: Mapping[str, str], start_ms: int | None = None) -> str | None:
        """The child run of ``trial_id`` (found again after a resume, and reopened, else created)."""
        if trial_id in self.runs:
            return self.runs[trial_id]

        def create() -> None:
            client = _client(self.ids.uri)
            parent = self.ids.parent_run_id
            if self._found is None:  # one search for the runs earlier drivers made, not one per trial
                self._found = {run.data.tags.get(TRIAL_TAG): run
                               for run in _search_all(client, self.ids, f"tags.`mlflow.parentRunId` = '{parent}'")}
            run = self._found.get(trial_id)
            if run is not None:
                if run.info.status == "KILLED":  # interrupted with its sweep: it goes on now
                    client.update_run(run.info.run_id, status="RUNNING")
                    client.set_tag(run.info.run_id, "pdsweep.status", "running")
                self.runs[trial_id] = run.info.run_id
                return
            run = client.create_run(self.ids.experiment_id, run_name=run_name, start_time=start_ms,
                                    tags={"mlflow.parentRunId": parent, TRIAL_TAG: trial_id, **tags,
                                          **self.labels.get(run_name, {})})
            self.runs[trial_id] = run.info.run_id
            self._created.add(trial_id)

        self._guard(trial_id, create)
        return self.runs.get(trial_id)

    def epoch(self, trial_id: str, run_name: str, tags: Mapping[str, str], result: Mapping[str, Any]) -> None:
        """One epoch's metrics, at step = epoch, stamped with the worker's clock."""
        self.epochs(trial_id, run_name, tags, [result])

    def epochs(self, trial_id: str, run_name: str, tags: Mapping[str, str], results: Sequence[Mapping[str, Any]]) -> None:
        """Several epochs' metrics of one trial, in one ``log_batch``, each at step = epoch."""
        started = results[0].get("started_at") if results else None
        run_id = self.child(trial_id, run_name, tags, _ms(started) if _number(started) else None)
        if run_id is None:
            return
        from mlflow.entities import Metric

        steps = self.steps.setdefault(trial_id, set())
        new: dict[int, list[Any]] = {}
        for result in results:
            if "epoch" not in result:
                continue
            step = int(result["epoch"])
            if step in steps or step in new:  # a trial resumed from a checkpoint trains an epoch again: logged once
                continue
            reported = result.get("reported_at")
            now = _ms(reported) if _number(reported) else int(time.time() * 1000)
            new[step] = [Metric(k, float(result[k]), now, step) for k in EPOCH_METRICS if _number(result.get(k))]
        metrics = [metric for logged in new.values() for metric in logged]
        if new and self._guard(trial_id, lambda: log_batch(_client(self.ids.uri), run_id, metrics=metrics)):
            steps.update(new)

    def finish(self, row: ResultRow, *, history: bool = False) -> None:
        """A finished trial's params, costs, final metrics and status, from its results row
        (``history``: each epoch's metrics too, for a run that missed them)."""
        trial_id = row.trial_id
        self.finished.add(trial_id)
        started = _ms(row.started_at.timestamp()) if row.started_at else None
        run_id = self.child(trial_id, row.config.name, run_tags(row), started)
        if run_id is None:
            return
        missed = {p.epoch for p in row.history or ()} - self.steps.get(trial_id, set())
        history = history or bool(missed)  # epochs the breaker skipped go with the row
        labels = self.labels.get(row.config.name, {})
        # A run this tracker made, with no call of its trial failed, holds no params and the epochs in self.steps.
        logged = self.steps.get(trial_id, set()) if trial_id in self._created and trial_id not in self.unlogged else None
        if self._guard(trial_id, lambda: log_row(self.ids.uri, run_id, row, history=history, labels=labels,
                                                 logged=logged)):
            self.ended.add(trial_id)
            self.unlogged.discard(trial_id)

    def close_open(self, status: str = "KILLED", *, sweep_done: bool = False) -> None:
        """End the child runs of trials that never finished (their sweep was interrupted). With
        ``sweep_done``, child runs an earlier driver left open belong to trials that were lost
        with it (Tune's state had not saved them; the search ran their budget again) and are
        tagged ``lost``; otherwise a later resume may still reopen them."""
        for trial_id, run_id in self.runs.items():
            if trial_id not in self.ended and trial_id not in self.finished:
                def close(run_id: str = run_id) -> None:
                    client = _client(self.ids.uri)
                    client.set_tag(run_id, "pdsweep.status", "interrupted")
                    client.set_terminated(run_id, status=status)

                if self._guard(trial_id, close, force=True):
                    self.ended.add(trial_id)
        tag = "lost" if sweep_done else "interrupted"
        self._guard(PARENT, lambda: self._close_strays(status, tag), force=True)

    def _close_strays(self, status: str, tag: str) -> None:
        """Child runs that an earlier driver left open: it was killed, and their trials were lost
        with it (or wait to resume, which reopens them)."""
        client = _client(self.ids.uri)
        query = f"tags.`mlflow.parentRunId` = '{self.ids.parent_run_id}' and attributes.status = 'RUNNING'"
        for run in _search_all(client, self.ids, query):  # closed after the search: a page is not changed under its query
            client.set_tag(run.info.run_id, "pdsweep.status", tag)
            client.set_terminated(run.info.run_id, status=status)

    def artifacts(self, files: Iterable[Path]) -> None:
        """Files onto the sweep's parent run (the report)."""
        self._guard(PARENT, lambda: log_artifacts(self.ids, files))

    def end_sweep(self, status: str = "FINISHED") -> None:
        """Close the sweep's parent run."""
        self._guard(PARENT, lambda: _client(self.ids.uri).set_terminated(self.ids.parent_run_id, status=status), force=True)

    def flush(self, timeout_s: float | None = None) -> str | None:
        """Wait for the calls still to be sent: none here, each call is made as it comes
        (:class:`~pdsweep.results.tracking_queue.QueuedTracker` queues them)."""
        return None

    def warning(self) -> str | None:
        trials = self.unlogged - {PARENT}
        if not self.unlogged:
            return None
        if not trials:
            return (f"MLflow: the sweep's parent run was not fully logged ({self.error}); results.parquet is complete; "
                    "back-fill with `pdsweep report --to-mlflow NAME`.")
        return (f"MLflow: {len(trials)} trial(s) were not fully logged ({self.error}); results.parquet "
                "is complete; back-fill with `pdsweep report --to-mlflow NAME`.")


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def run_tags(row: ResultRow | None = None, *, tier: float | None = None, phase: str | None = None,
             seed: int | None = None) -> dict[str, str]:
    """A child run's tags: from its results row, or (a trial still running) from its spec."""
    if row is not None:
        tier, phase, seed = row.budget_gflops, row.phase, row.seed
    return {"pdsweep.tier": f"{tier:g}", "pdsweep.phase": str(phase), "pdsweep.seed": str(seed),
            "pdsweep.status": row.status if row is not None else "running"}


RUN_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "interrupted": "KILLED"}  # else FAILED


def listed_tags(listed: Iterable[ListedConfig]) -> dict[str, dict[str, str]]:
    """The tags that name a recipe's trials in the MLflow UI, by config name: each listed
    config's label and group (``pdsweep.label``, ``pdsweep.group``), those it has."""
    return {entry.config.name: {f"pdsweep.{key}": value for key in LABEL_KEYS if (value := getattr(entry, key))}
            for entry in listed}


def log_row(uri: str, run_id: str, row: ResultRow, *, history: bool = False,
            labels: Mapping[str, str] | None = None, logged: Collection[int] | None = None) -> None:
    """Params, metrics and tags of a results row onto a child run, and close it at the time
    the trial ended (``history``: also each epoch's metrics that the run lacks, at its step;
    ``labels``: the tags of its listed config, :func:`listed_tags`; ``logged``: the epochs a run
    this process made holds, and it has no params yet; None: read both from the run)."""
    from mlflow.entities import Metric, Param, RunTag

    client = _client(uri)
    ended = _ms(row.ended_at.timestamp()) if row.ended_at else int(time.time() * 1000)
    existing = client.get_run(run_id).data.params if logged is None else {}
    values = row.to_dict()
    params = [Param(k, _text(values[k])) for k in CONFIG_PARAMS if values.get(k) is not None and k not in existing]
    params += [Param("budget_gflops", _text(row.budget_gflops))] if "budget_gflops" not in existing else []
    metrics = [Metric(k, float(values[k]), ended, 0) for k in COST_METRICS + FINAL_METRICS if _number(values.get(k))]
    metrics += [Metric(f"robustness_keep_{p.keep_rate:g}", float(p.accuracy), ended, 0) for p in row.robustness or ()]
    for point in row.test_intervals or ():  # the bootstrap 95% interval over the test images (or groups)
        metrics += [Metric(f"test_{point.metric}_ci_low", point.low, ended, 0),
                    Metric(f"test_{point.metric}_ci_high", point.high, ended, 0)]
    metrics += [Metric(f"test_recall_{_key(c.name)}", c.recall, ended, 0) for c in row.class_recall or () if c.recall is not None]
    if history:
        for key in ("train_loss", *VAL_METRICS):
            steps = {m.step for m in client.get_metric_history(run_id, key)} if logged is None else logged
            metrics += [Metric(key, float(getattr(p, key)), ended, p.epoch) for p in row.history or ()
                        if p.epoch not in steps and _number(getattr(p, key))]
    tags = [RunTag(k, v) for k, v in {**run_tags(row), **(labels or {})}.items()]
    if row.error:
        tags.append(RunTag("pdsweep.error", _text(row.error)))
    log_batch(client, run_id, metrics=metrics, params=params, tags=tags)
    client.set_terminated(run_id, status=RUN_STATUS.get(row.status, "FAILED"), end_time=ended)


def _search_all(client: Any, ids: TrackingIds, query: str) -> list[Any]:
    """Every run of the sweep's experiment that ``query`` finds, page by page."""
    found, token = [], None
    while True:
        page = client.search_runs([ids.experiment_id], query, max_results=1000, page_token=token)
        found += page
        token = page.token
        if not token:
            return found


def log_batch(client: Any, run_id: str, *, metrics: Sequence[Any] = (), params: Sequence[Any] = (),
              tags: Sequence[Any] = ()) -> None:
    """``client.log_batch`` in as many calls as MLflow's per-call limits need (100 params, 100
    tags, 1000 metrics, 1000 entries in all; ``mlflow.utils.validation``, MLflow 3.17)."""
    from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

    size = MAX_PARAMS_TAGS_PER_BATCH
    for start in itertools.count(0, size):
        batch_params, batch_tags = params[start:start + size], tags[start:start + size]
        room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(batch_params) - len(batch_tags))
        batch_metrics, metrics = metrics[:room], metrics[room:]
        if not (batch_params or batch_tags or batch_metrics):
            return
        client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags)


def reopen(ids: TrackingIds) -> None:
    """Mark a resumed sweep's parent run as running again."""
    _client(ids.uri).update_run(ids.parent_run_id, status="RUNNING")


def end_sweep(ids: TrackingIds, status: str = "FINISHED") -> None:
    try:
        _client(ids.uri).set_terminated(ids.parent_run_id, status=status)
    except Exception:  # reported by the tracker's warning already
        log.debug("could not close the parent run", exc_info=True)


def relocate_artifacts(uri: str, old_root: Path, new_root: Path) -> int:
    """After a default SQLite store moved with its runs dir (``mv``, a copy to another
    machine): point its experiments and runs at the artifacts where they are now. MLflow keeps
    artifact locations as absolute URIs and has no call to change them, so this updates its
    two columns of them in the SQLite file. Returns the number of rows changed."""
    import sqlite3

    old, new = artifact_root(old_root), artifact_root(new_root)
    if old == new or not uri.startswith("sqlite:///"):
        return 0
    with contextlib.closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as db, db:
        changed = db.execute("UPDATE experiments SET artifact_location = ? || substr(artifact_location, ?) "
                             "WHERE artifact_location LIKE ? || '%'", (new, len(old) + 1, old)).rowcount
        changed += db.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE artifact_uri LIKE ? || '%'",
                              (new, len(old) + 1, old)).rowcount
    return changed


def log_artifacts(ids: TrackingIds, files: Iterable[Path], artifact_path: str | None = None) -> None:
    """``files`` onto the sweep's parent run, at its root or under ``artifact_path``."""
    client = _client(ids.uri)
    for file in files:
        client.log_artifact(ids.parent_run_id, str(file), artifact_path)


def backfill(ids: TrackingIds, rows: Iterable[ResultRow], labels: Mapping[str, Mapping[str, str]] | None = None) -> int:
    """Log every row whose child run is missing or still open, with each epoch's metrics at
    its step (``labels``: :func:`listed_tags` of a recipe's configs); returns how many were logged."""
    client = _client(ids.uri)
    done = {
        run.data.tags.get(TRIAL_TAG)
        for run in _search_all(client, ids, f"tags.`mlflow.parentRunId` = '{ids.parent_run_id}'")
        if run.info.status in ("FINISHED", "FAILED")
    }
    tracker = Tracker(ids, labels)
    count = 0
    for row in rows:
        if row.trial_id in done:
            continue
        tracker.finish(row, history=True)
        if tracker.error:
            raise PdsweepError(f"cannot log to MLflow at {ids.uri} ({tracker.error}).")
        count += 1
    return count


def finish_open(ids: TrackingIds, rows: Iterable[ResultRow]) -> int:
    """Finish the child runs an earlier driver left open although their rows are in
    ``results.parquet`` (it was killed with their calls still queued); rows without a run are
    left to ``report --to-mlflow``. Returns how many were finished."""
    client = _client(ids.uri)
    query = f"tags.`mlflow.parentRunId` = '{ids.parent_run_id}' and attributes.status = 'RUNNING'"
    open_trials = {run.data.tags.get(TRIAL_TAG) for run in _search_all(client, ids, query)}
    return backfill(ids, [row for row in rows if row.trial_id in open_trials])


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
