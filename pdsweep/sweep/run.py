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
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pdsweep._compat import alias_legacy_modules, end_at_once, retry_uncounted, tune_interruption
from pdsweep.cost import Budget
from pdsweep.errors import PdsweepError
from pdsweep.interrupts import sigterm_as_ctrl_c
from pdsweep.paths import DEFAULT_RUNS_DIR, MLFLOW_FILE, is_uri
from pdsweep.results import TOP_K, report, report_output, tracking
from pdsweep.results.compute import ComputePlan
from pdsweep.results.rows import FAILED, RESULTS_FILE, ResultRow, read_rows
from pdsweep.results.summary import report_or_none, summary_lines
from pdsweep.space import SearchSpace, listed_budget, load_space, parse_space, plan
from pdsweep.space.overrides import apply_overrides, described, parse_overrides
from pdsweep.sweep.callback import SweepCallback, driving
from pdsweep.sweep.cluster import (
    check_address, check_capacity, connect, probe_dataset, probe_on_cluster, warn_if_not_shared,
)
from pdsweep.sweep.estimate import Throughput
from pdsweep.sweep.ledger import forget_stop, stopped_by
from pdsweep.sweep.preflight import check_cap, preflight
from pdsweep.sweep.settings import DataProbe, SweepSettings, SweepState, read_state
from pdsweep.sweep.lock import SweepLock
from pdsweep.sweep.store import RESUME_FILES, SWEEP_FILE, SweepStore, relocate, retried
from pdsweep.sweep.trust import check_private
from pdsweep.sweep.watch import ClusterWatch, check_nodes, node_without_weights, trial_nodes
from pdsweep.sweep.tuners import repeats_tuner, search_tuner, tune_trainable
from pdsweep.training.faults import memory_kill
from pdsweep.training.weights import WeightFile, check_unchanged, inspect_space

Print = Callable[[str], None]


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
    ready = _prepare(settings, err)
    settings, store = ready.settings, ready.settings.store
    settings.sweep_dir.mkdir(parents=True, exist_ok=store.remote)
    tracked = False
    try:
        with SweepLock(store, err), sigterm_as_ctrl_c():
            state = SweepState(settings, Path(ready.space.source).read_text(), ready.data, compute=ready.planned,
                               weights=ready.weights)
            state.write()
            state = replace(state, mlflow=_start_tracking(state, ready.space, ready.tracking_uri, err))
            tracked = True
            state.write()
            return _execute(state, ready.space, restore=False, out=out, err=err, prior=ready.throughput,
                            checked_nodes=ready.checked_nodes)
    finally:
        if not tracked and not store.remote:  # MLflow refused the new store: no half-made sweep is left
            shutil.rmtree(settings.sweep_dir, ignore_errors=True)


def check_sweep(settings: SweepSettings, *, err: Print = _stderr) -> ComputePlan:
    """Every check ``run_sweep`` makes and its pre-flight (printed to ``err``), then stop:
    nothing is written and no trial runs (``pdsweep run --dry-run``). Returns the planned compute."""
    return _prepare(settings, err).planned


@dataclass(frozen=True)
class _Ready:
    """A new sweep that passed every check: what the pre-flight found."""

    settings: SweepSettings
    space: SearchSpace
    weights: dict[str, WeightFile]
    data: DataProbe
    planned: ComputePlan
    throughput: Throughput | None
    tracking_uri: str
    checked_nodes: frozenset[str]  # the nodes found to hold the pretrained weights


def _prepare(settings: SweepSettings, err: Print) -> _Ready:
    settings = settings.absolute()
    space = load_space(settings.space, settings.overrides)
    settings = (_recipe_settings(settings, space) if space.configs
                else replace(settings, scheduler=settings.scheduler or "asha", top_k=settings.top_k or TOP_K))
    if not settings.budgets and not space.configs:
        listed_budget(space)  # the error: an axes space needs a budget
    weights = inspect_space(space, settings.weights_cache)  # every pretrained start's weights, found and checked
    store = settings.store
    store.check()
    if store.exists():
        raise PdsweepError(
            f"sweep {settings.name!r} exists in {settings.runs_dir}; continue it with `pdsweep resume "
            f"{settings.name}` or choose another --name."
        )
    check_address(settings.address)
    on_cluster = bool(settings.address or os.environ.get("RAY_ADDRESS"))
    if on_cluster:  # the dataset path is the workers': look where they will
        connect(settings.address, settings.verbose)
        check_capacity(settings, err)  # before the probe, which would wait for such a node
        checked = check_nodes(settings, weights)  # every node that may run a trial, before the first
        data = probe_on_cluster(settings, space)
    else:
        data = probe_dataset(settings, space)
    if not settings.budgets:  # every listed config runs: the tier's budget is the dearest one's cost
        settings = replace(settings, budgets=(listed_budget(space, data.num_classes, settings.memory_gb).gflops,))
    budgets = [Budget(g, settings.memory_gb) for g in settings.budgets]
    plans = {b.gflops: plan(space, b, policy=settings.policy, num_classes=data.num_classes) for b in budgets}
    check_cap(settings, space, plans, data)
    uri = settings.mlflow_uri or store.tracking_uri
    tracking.check_reachable(uri)
    connect(settings.address, settings.verbose)
    if not on_cluster:
        check_capacity(settings, err)
    warn_if_not_shared(store, err)
    planned, throughput = preflight(settings, space, plans, data, err, weights)
    if not on_cluster:  # this machine, whose cache inspect_space checked
        checked = set(trial_nodes(settings.cpus_per_trial))
    return _Ready(settings, space, dict(weights), data, planned, throughput, uri, frozenset(checked))


def _recipe_settings(settings: SweepSettings, space: SearchSpace) -> SweepSettings:
    """A recipe (a space of listed configs) compares every listed config at equal footing: each
    trains once (grid), to its last epoch (no early stopping), under one budget, and ``--repeats``
    re-trains every one of them, not only the best few."""
    def refuse(problem: str) -> None:
        raise PdsweepError(f"space {space.name!r} lists its configs, to compare them as listed: {problem}.")

    if settings.search != "grid":
        refuse(f"use --search grid (not {settings.search})")
    if settings.policy != "fill":
        refuse("their keep rates are as listed; drop --keep-policy search")
    if len(settings.budgets) > 1:
        refuse("give one --budget-gflops or none (each tier would train every config again with the same seed)")
    if settings.scheduler == "asha":
        refuse("ASHA would stop some of them early and compare part-trained configs with trained ones; drop "
               "--scheduler asha")
    if settings.top_k is not None:
        refuse(f"--repeats re-trains every one of its {len(space.configs)} configs, not the best few; drop --top-k")
    return replace(settings, scheduler="none", top_k=len(space.configs))


def resume_sweep(name: str, runs_dir: str = DEFAULT_RUNS_DIR, *, address: str | None = None,
                 mlflow_uri: str | None = None, no_mlflow: bool = False, trust: bool = False,
                 weights_cache: str | None = None, resource_timeout_s: float | None = None,
                 out: Print = print, err: Print = _stderr) -> SweepOutcome:
    """Continue a sweep whose driver stopped: finished trials are kept, the rest run once.

    ``mlflow_uri``: log to this tracking store from now on (the finished trials are back-filled
    into it); ``no_mlflow``: log nothing now (``pdsweep report --to-mlflow`` back-fills later);
    ``trust``: resume from a local sweep folder that other users can write (Tune's state in it is
    unpickled: :mod:`pdsweep.sweep.trust`); ``weights_cache``: read the pretrained weights from
    this cache from now on (checked as when the sweep started: the same files, unchanged);
    ``resource_timeout_s``: a new ``--resource-timeout``.
    """
    if mlflow_uri and no_mlflow:
        raise PdsweepError("give --mlflow-uri or --no-mlflow, not both.")
    store = SweepStore(runs_dir if is_uri(runs_dir) else str(Path(runs_dir).expanduser().resolve()), name)
    if not store.remote or not store.exists():
        store.require(shown=runs_dir)  # no such sweep: say so before anything is locked or written
    if not trust and (not store.remote or runs_dir.startswith("file://")):
        # A file:// runs dir is a local folder too: Tune restores from it directly.
        local = store.local_dir if not store.remote else Path(urlparse(runs_dir).path) / name
        if local.is_dir():
            check_private(local)
    if not store.remote:
        read_state(store, shown=runs_dir)  # a damaged sweep.json is refused before the lock file is made
    with SweepLock(store, err), sigterm_as_ctrl_c():
        store.fetch(*RESUME_FILES)
        state = read_state(store, shown=runs_dir)
        changed = {**({"weights_cache": str(Path(weights_cache).expanduser().resolve())} if weights_cache else {}),
                   **({"resource_timeout_s": resource_timeout_s} if resource_timeout_s is not None else {})}
        if changed:
            if weights_cache and not state.weights:
                raise PdsweepError(f"sweep {name!r} starts no model from pretrained weights; drop --weights-cache.")
            state = replace(state, settings=replace(state.settings, **changed))
        check_unchanged(state.weights, state.settings.weights_cache)  # the weights the sweep checked, still here
        relocate(store)  # Ray's pickled searcher and callback look here for the sweep's files
        alias_legacy_modules()  # ... and sweeps of pdsweep 0.1 pickled them under their old module names
        if address is not None:
            state = replace(state, settings=replace(state.settings, address=address))
        settings = state.settings
        space = space_of(state, str(store.local_dir / SWEEP_FILE))
        check_address(settings.address)
        connect(settings.address, settings.verbose)
        # The cluster may have changed since the sweep started: checked before MLflow is touched.
        check_capacity(settings, err, fix=f"continue on a cluster with such a node: pdsweep resume {name} --address ...")
        on_cluster = bool(settings.address or os.environ.get("RAY_ADDRESS"))
        checked = check_nodes(settings, state.weights) if on_cluster else set(trial_nodes(settings.cpus_per_trial))
        if changed:
            state.write()  # what this resume changed holds for the next
        state = _resume_tracking(state, space, mlflow_uri, no_mlflow, err)
        if state.mlflow and not no_mlflow:
            tracking.reopen(state.mlflow)
        err(f"resuming sweep {name!r} ({state.phase} phase)")
        return _execute(state, space, restore=True, out=out, err=err, log=not no_mlflow, checked_nodes=frozenset(checked))


def _start_tracking(state: SweepState, space: SearchSpace, uri: str, err: Print) -> tracking.TrackingIds:
    settings = state.settings
    store = settings.store
    params = {**{k: v for k, v in asdict(settings).items() if v is not None}, "space": space.name, **state.data.to_dict(),
              "overrides": " ".join(settings.overrides), "metric": space.training.metric,
              "eval_groups": space.training.eval_groups}
    experiment = settings.experiment or space.name
    ids = tracking.start_sweep(
        uri, experiment, None if settings.mlflow_uri else tracking.artifact_root(store.tracking_root),
        settings.name, params, files=sorted({Path(space.source), settings.sweep_dir / SWEEP_FILE}),
    )
    if store.remote and not settings.mlflow_uri:
        store.publish(MLFLOW_FILE)
    err(f"  MLflow: experiment {experiment!r}, parent run {settings.name!r} in {uri}")
    return ids


def _resume_tracking(state: SweepState, space: SearchSpace, mlflow_uri: str | None, no_mlflow: bool,
                     err: Print) -> SweepState:
    """The tracking store this driver logs to: the sweep's own (found where the sweep is now),
    another one (``--mlflow-uri``, back-filled), or none (``--no-mlflow``)."""
    settings = state.settings
    if no_mlflow:  # sweep.json keeps its ids, for that back-fill
        err("MLflow: not logging; back-fill later with `pdsweep report --to-mlflow " + settings.name + "`.")
        return state
    if mlflow_uri:
        tracking.check_reachable(mlflow_uri)
        settings = replace(settings, mlflow_uri=mlflow_uri)
        state = replace(state, settings=settings)
        ids = _start_tracking(state, space, mlflow_uri, err)
        rows = read_rows(settings.sweep_dir / RESULTS_FILE)
        logged = tracking.backfill(ids, rows)
        err(f"MLflow: logging to {mlflow_uri} from now on; back-filled {logged} finished trial(s).")
        state = replace(state, mlflow=ids)
        state.write()
        return state
    if state.mlflow is None:
        return state
    ids = state.mlflow
    if settings.mlflow_uri is None:  # the default store: where the sweep is now, not where it was
        found = settings.store.tracking_uri
        recorded, here = Path(ids.uri.removeprefix("sqlite:///")), Path(found.removeprefix("sqlite:///"))
        if found != ids.uri and (here.is_file() or not recorded.is_file()):
            tracking.check_sweep(replace(ids, uri=found), settings.name)
            tracking.relocate_artifacts(found, recorded.parent, here.parent)
            ids = replace(ids, uri=found)
            state = replace(state, mlflow=ids)
            state.write()
    tracking.check_sweep(ids, settings.name)
    return replace(state, mlflow=ids)


def _execute(state: SweepState, space: SearchSpace, *, restore: bool, out: Print, err: Print,
             log: bool = True, prior: Throughput | None = None, checked_nodes: frozenset[str] = frozenset()) -> SweepOutcome:
    """Run the sweep's phases (``log``: to MLflow; ``prior``: the pre-flight's measured
    throughput; ``checked_nodes``: those found to hold the pretrained weights); on every way out
    the MLflow runs are closed with a true status. A sweep the cluster watch stopped (a node
    without the weights, trials that waited past ``--resource-timeout``) ends in one line."""
    settings = state.settings
    # A worker Ray's memory monitor killed would be killed again by the same allocation: its
    # trial ends at once, as oom, and is told to Optuna as infeasible (other losses are retried).
    end_at_once(memory_kill)
    retry_uncounted(node_without_weights)  # a node without the weights: the watch stops the sweep, resumable
    # Tune saves its experiment state (every trial's, so a save grows with the sweep) on its own
    # adaptive period, max(10 s, 19 x a save's time), and at each trial checkpoint (num_to_keep;
    # trials checkpoint every --checkpoint-every-s). A driver killed between saves loses nothing:
    # the searcher, the ledger and the scheduler reconcile what Tune's state lacks with the journal
    # and results.parquet on resume (pdsweep.sweep.searcher, .ledger, .schedulers).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # the checkpoints' saves
    if not settings.verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the engine that honours verbose=0
    labels = tracking.listed_tags(space.configs)  # a recipe's trials named by label and group in MLflow
    active = [SweepCallback(settings, err, state.mlflow if log else None, labels)]  # the callback Tune calls, as it changes
    watch = active[0].watch = ClusterWatch(settings, state.weights, set(checked_nodes))
    status = "FAILED"
    with tracking.quick_requests():  # a tracking store that went away costs seconds, not minutes
        try:
            with sigterm_as_ctrl_c():  # again: ray.init installed its own SIGTERM handler
                state, interrupted = _phases(state, space, active, restore=restore, prior=prior)
                active[0].flush()
                rows = tuple(read_rows(settings.sweep_dir / RESULTS_FILE))
                outcome = SweepOutcome(settings.name, settings.store.where(RESULTS_FILE), rows,
                                       report_or_none(settings.name, rows, **report_options(state)), interrupted)
                if outcome.report is not None and not interrupted:
                    _write_report(outcome.report, state, active[0].tracker)
            status = "KILLED" if interrupted else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            err(f"interrupted; continue with `pdsweep resume {settings.name} --runs-dir {settings.runs_dir}`.")
            raise
        finally:
            _close_tracking(state, active[0], status)
    tracker = active[0].tracker
    if tracker is not None and tracker.warning():
        err(tracker.warning().replace("NAME", settings.name))
    if interrupted and watch.reason is not None:
        raise PdsweepError(f"{watch.reason}; the sweep is saved: `pdsweep resume {settings.name} --runs-dir "
                           f"{settings.runs_dir}`.")
    for line in summary_lines(outcome.name, len(outcome.rows), outcome.results_path, outcome.report):
        out(line)
    if interrupted:
        err(f"interrupted; continue with `pdsweep resume {settings.name} --runs-dir {settings.runs_dir}`.")
    return outcome


def _phases(state: SweepState, space: SearchSpace, active: list[SweepCallback], *,
            restore: bool, prior: Throughput | None = None) -> tuple[SweepState, bool]:
    """The search, then the repeats; returns the state and whether it was interrupted.
    ``active[0]`` is kept the callback Tune calls (a restored Tuner calls the one it unpickled).
    Once a compute cap has stopped issuing trials, no phase issues more."""
    settings = state.settings
    trainable = tune_trainable(settings, space, state)
    interrupted = False
    forget_stop(settings.name)  # a ledger Tune restores says so again
    if state.phase == "search":
        tuner = search_tuner(settings, space, state, trainable, active[0], restore=restore, prior=prior)
        active[0] = driving(active[0])
        interrupted = _fit(tuner)
        state = _capped(state)
        if not interrupted:
            repeats = settings.repeats > 1 and not (state.compute and state.compute.stopped_by)
            state = replace(state, phase="repeats" if repeats else "done")
            _write_state(state, active[0])
    if state.phase == "repeats" and not interrupted:
        tuner = repeats_tuner(settings, space, state, trainable, active[0])
        active[0] = driving(active[0])
        interrupted = _fit(tuner)
        state = _capped(state)
        if not interrupted:
            state = replace(state, phase="done")
            _write_state(state, active[0])
    return state, interrupted


def _capped(state: SweepState) -> SweepState:
    """The state, with the cap that stopped the phase just run (if one did) in its compute plan."""
    cap = stopped_by(state.settings.name)
    if cap is None or (state.compute and state.compute.stopped_by == cap):
        return state
    plan = state.compute or ComputePlan()  # a sweep started before the ledger
    return replace(state, compute=replace(plan, stopped_by=cap))


def report_options(state: SweepState) -> dict[str, Any]:
    """What :func:`report.build` takes from a sweep's state: how many top configs, the plan, the caps."""
    return {"top_k": state.settings.top_k, "plan": state.compute, "cap": state.settings.cap}


def _write_state(state: SweepState, callback: SweepCallback) -> None:
    """``sweep.json`` with the new phase; storage that fails is retried, then warned about (a
    resume from the older phase redoes nothing: a finished experiment restores as finished)."""
    error = retried(state.write)
    if error is not None:
        callback.err(f"warning: cannot write {SWEEP_FILE} ({error}); `pdsweep resume` will pick up from the "
                     "phase before.")


def _close_tracking(state: SweepState, callback: SweepCallback, status: str) -> None:
    """End the children still open (their trials were interrupted) and the parent run; these
    last calls go through even while the tracker's breaker is open."""
    ids = callback.mlflow_ids
    if ids is None:
        return
    tracker = callback.tracker or tracking.Tracker(ids)  # no trial ran under this driver
    # A driver killed outright (SIGKILL) loses what it had queued: a trial it had finished and
    # written to results.parquet may still have an open run. Finish those from the rows first, so
    # the close below ends only the runs of trials that were really lost.
    tracker.flush(tracker.flush_s)
    if tracker.warning() is None:  # the store answered so far
        try:
            with tracking.quick_requests():
                tracking.finish_open(ids, callback.rows.values())
        except Exception:  # the store went out: the end's warning says so, and report --to-mlflow back-fills
            pass
    tracker.close_open("KILLED", sweep_done=status == "FINISHED")
    tracker.end_sweep(status)
    unsent = tracker.flush(tracker.flush_s)  # the queued calls, sent before the store is published or the driver exits
    if unsent:
        callback.err(unsent.replace("NAME", state.settings.name))
    store = state.settings.store
    if store.remote and not state.settings.mlflow_uri:
        callback.warn_storage(retried(lambda: store.publish(MLFLOW_FILE)))


def _write_report(built: report.Report, state: SweepState, tracker: tracking.Tracker | None) -> None:
    """``report.md`` and ``report.png`` in the sweep folder, published and logged to MLflow."""
    settings = state.settings
    files = report_output.write(built, settings.sweep_dir / "report")
    retried(lambda: settings.store.publish(*(str(Path("report") / f.name) for f in files)))  # also in the sweep folder
    if tracker is not None:
        tracker.artifacts(files)  # the tracker's warning says what MLflow missed


def _fit(tuner: Any) -> bool:
    """Run a Tuner; True if it was stopped (Ctrl-C, SIGTERM) before its trials were all done."""
    # Tune's warnings of its own per-trial files, a line per trial, are not news to the user: its
    # TensorBoard logger skips the list values pdsweep reports (per-class recall), and at its end
    # Tune looks for a result.json of each trial, which a trial stopped before its first result
    # lacks. pdsweep's rows are in results.parquet and MLflow.
    quiet = [logging.getLogger(name) for name in ("ray.tune.analysis.experiment_analysis", "ray.tune.logger.tensorboardx")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    # Nor is the traceback of a trial whose node lacks the weights: the sweep stops in one line that says so.
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    controller.addFilter(_not_node_without_weights)
    try:
        with tune_interruption() as stopped:
            grid = tuner.fit()
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
        controller.removeFilter(_not_node_without_weights)
    return stopped[0] or (grid is not None and grid.num_terminated + grid.num_errors < len(grid))


def _not_node_without_weights(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return error is None or not node_without_weights(error)


def space_of(state: SweepState, source: str | None = None) -> SearchSpace:
    """The space a sweep searches: the file's text it kept when it started, with its overrides."""
    import yaml

    changes = parse_overrides(state.settings.overrides)
    document = apply_overrides(yaml.safe_load(state.space_text), changes)
    source = source or str(state.settings.sweep_dir / SWEEP_FILE)
    return parse_space(document, name=Path(state.settings.space).stem, source=source, shown=described(source, changes))
