"""The sweep: ``pdsweep run`` and ``pdsweep resume`` on Ray Tune.

:func:`run_sweep` checks everything a sweep needs (space, budgets, dataset, Ray) before it
writes anything, prints the pre-flight (feasible configs, trials, estimated compute), then runs
one Tune experiment in which the budget tiers' searches share the cluster
(:class:`~pdsweep.sweep.searcher.BudgetSearcher`, :class:`~pdsweep.sweep.schedulers.TieredASHA`),
and a second one that re-trains each tier's best config with further seeds (``--repeats``). A
driver-side callback appends each finished trial to ``results.parquet`` and prints one line.

The sweep folder, ``RUNS_DIR/NAME/``: ``sweep.json`` (:class:`~pdsweep.sweep.settings.SweepState`),
``results.parquet``, ``optuna.journal`` (the studies), ``starts.log`` (one line per trial
start), and Tune's experiments ``search/`` and ``repeats/``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pdsweep._compat import alias_legacy_modules
from pdsweep.cost import Budget
from pdsweep.errors import PdsweepError
from pdsweep.paths import DEFAULT_RUNS_DIR, is_uri
from pdsweep.results import report, tracking
from pdsweep.results.rows import FAILED, RESULTS_FILE, ResultRow, read_rows
from pdsweep.results.summary import report_or_none, summary_lines
from pdsweep.space import SearchSpace, load_space, parse_space, plan
from pdsweep.sweep.callback import SweepCallback
from pdsweep.sweep.cluster import (
    check_address,
    connect,
    probe_dataset,
    probe_on_cluster,
    resources_for,
    warn_if_not_shared,
)
from pdsweep.sweep.preflight import preflight
from pdsweep.sweep.settings import SweepSettings, SweepState, read_state
from pdsweep.sweep.store import RESUME_FILES, SWEEP_FILE, SweepStore, relocate
from pdsweep.sweep.tuners import repeats_tuner, run_trial, search_tuner

Print = Callable[[str], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep ended with: its rows, its report, whether it was interrupted."""

    name: str
    results_path: str  # a path or a URI
    rows: tuple[ResultRow, ...]
    report: report.Report | None  # None until a trial has finished
    interrupted: bool = False

    @property
    def all_failed(self) -> bool:
        return bool(self.rows) and all(r.status in FAILED for r in self.rows)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_sweep(settings: SweepSettings, *, out: Print = print, err: Print = _stderr) -> SweepOutcome:
    """Check, plan, and run a new sweep; nothing is written until every check has passed."""
    settings = settings.absolute()
    space = load_space(settings.space)
    budgets = [Budget(g, settings.memory_gb) for g in settings.budgets]
    store = settings.store
    store.check()
    if store.exists():
        raise PdsweepError(
            f"sweep {settings.name!r} exists in {settings.runs_dir}; continue it with `pdsweep resume "
            f"{settings.name}` or choose another --name."
        )
    check_address(settings.address)
    if settings.address or os.environ.get("RAY_ADDRESS"):  # the dataset path is the workers': look where they will
        connect(settings.address, settings.verbose)
        data = probe_on_cluster(settings, space)
    else:
        data = probe_dataset(settings, space)
    plans = {b.gflops: plan(space, b, policy=settings.policy, num_classes=data.num_classes) for b in budgets}
    uri = settings.mlflow_uri or tracking.default_uri(store.local_dir.parent)
    tracking.check_reachable(uri)
    connect(settings.address, settings.verbose)
    warn_if_not_shared(store, err)
    preflight(settings, space, plans, data, err)
    settings.sweep_dir.mkdir(parents=True, exist_ok=store.remote)
    state = SweepState(settings, Path(space.source).read_text(), data)
    state.write()
    params = {**{k: v for k, v in asdict(settings).items() if v is not None}, "space": space.name, **data.to_dict()}
    experiment = settings.experiment or space.name
    ids = tracking.start_sweep(
        uri, experiment, None if settings.mlflow_uri else tracking.artifact_root(store.local_dir.parent),
        settings.name, params, files=[Path(space.source), settings.sweep_dir / SWEEP_FILE],
    )
    state = replace(state, mlflow=ids)
    state.write()
    err(f"  MLflow: experiment {experiment!r}, parent run {settings.name!r} in {uri}")
    return _execute(state, space, restore=False, out=out, err=err)


def resume_sweep(name: str, runs_dir: str = DEFAULT_RUNS_DIR, *, address: str | None = None,
                 out: Print = print, err: Print = _stderr) -> SweepOutcome:
    """Continue a sweep whose driver died: finished trials are kept, the rest run once."""
    store = SweepStore(runs_dir if is_uri(runs_dir) else str(Path(runs_dir).expanduser().resolve()), name)
    store.fetch(*RESUME_FILES)
    state = read_state(store, shown=runs_dir)
    relocate(store)  # Ray's pickled searcher and callback look here for the sweep's files
    alias_legacy_modules()  # ... and sweeps of pdsweep 0.1 pickled them under their old module names
    if address is not None:
        state = replace(state, settings=replace(state.settings, address=address))
    settings = state.settings
    space = parse_space(_yaml(state.space_text), name=Path(settings.space).stem, source=str(store.local_dir / SWEEP_FILE))
    check_address(settings.address)
    if state.mlflow:
        tracking.check_reachable(state.mlflow.uri)
    connect(settings.address, settings.verbose)
    if state.mlflow:
        tracking.reopen(state.mlflow)
    err(f"resuming sweep {name!r} ({state.phase} phase)")
    return _execute(state, space, restore=True, out=out, err=err)


def _execute(state: SweepState, space: SearchSpace, *, restore: bool, out: Print, err: Print) -> SweepOutcome:
    from ray import tune

    settings = state.settings
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")  # save Tune's state at every step: resume loses nothing
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # ... on purpose
    if not settings.verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the engine that honours verbose=0
    trainable = tune.with_resources(run_trial(), resources_for(settings, space, state.data.worker_gpu_memory_gb))
    callback = SweepCallback(settings, err, state.mlflow)
    interrupted = False
    if state.phase == "search":
        interrupted = _fit(search_tuner(settings, space, state, trainable, callback, restore=restore))
        if not interrupted:
            state = replace(state, phase="repeats" if settings.repeats > 1 else "done")
            state.write()
    if state.phase == "repeats" and not interrupted:
        interrupted = _fit(repeats_tuner(settings, space, trainable, callback))
        if not interrupted:
            state = replace(state, phase="done")
            state.write()
    rows = tuple(read_rows(settings.sweep_dir / RESULTS_FILE))
    outcome = SweepOutcome(settings.name, settings.store.where(RESULTS_FILE), rows,
                           report_or_none(settings.name, rows), interrupted)
    if outcome.report is not None and not interrupted:
        _write_report(outcome.report, state)
    if state.mlflow:
        tracking.end_sweep(state.mlflow, "KILLED" if interrupted else "FINISHED")
    if callback.tracker is not None and callback.tracker.warning():
        err(callback.tracker.warning().replace("NAME", settings.name))
    for line in summary_lines(outcome.name, len(outcome.rows), outcome.results_path, outcome.report):
        out(line)
    if interrupted:
        err(f"interrupted; continue with `pdsweep resume {settings.name} --runs-dir {settings.runs_dir}`.")
    return outcome


def _write_report(built: report.Report, state: SweepState) -> None:
    """``report.md`` and ``report.png`` in the sweep folder, published and logged to MLflow."""
    settings = state.settings
    files = report.write(built, settings.sweep_dir / "report")
    settings.store.publish(*(str(Path("report") / f.name) for f in files))
    if state.mlflow:
        try:
            tracking.log_artifacts(state.mlflow, files)
        except Exception:  # the tracker's warning says what MLflow missed
            log.debug("could not log the report to MLflow", exc_info=True)


def _fit(tuner: Any) -> bool:
    """Run a Tuner; True if it stopped (Ctrl-C) with trials still unfinished."""
    grid = tuner.fit()
    return grid is not None and grid.num_terminated + grid.num_errors < len(grid)


def _yaml(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)
