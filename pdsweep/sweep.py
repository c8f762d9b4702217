"""The sweep: ``pdsweep run`` and ``pdsweep resume`` on Ray Tune.

:func:`run_sweep` checks everything a sweep needs (space, budgets, dataset, Ray) before it
writes anything, prints the pre-flight (feasible configs, trials, estimated compute), then runs
one Tune experiment in which the budget tiers' searches share the cluster
(:class:`~pdsweep.searcher.BudgetSearcher`, :class:`~pdsweep.searcher.TieredASHA`), and a second
one that re-trains each tier's best config with further seeds (``--repeats``). A driver-side
callback appends each finished trial to ``results.parquet`` and prints one line for it.

The sweep folder, ``RUNS_DIR/NAME/``: ``sweep.json`` (settings and the space, for resume),
``results.parquet``, ``optuna.journal`` (the studies), ``starts.log`` (one line per trial
start), and Tune's experiments ``search/`` and ``repeats/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pdsweep import cost, report, results, tracking
from pdsweep.config import Config
from pdsweep.errors import PdsweepError
from pdsweep.plan import KeepPolicy, plan
from pdsweep.progress import SweepCallback, report_or_none, summary_lines
from pdsweep.sampler import BudgetSampler, SearchKind
from pdsweep.space import SearchSpace, load_space, parse_space
from pdsweep.store import STARTS_FILE, STUDY_FILE, SWEEP_FILE, SweepStore, relocate
from pdsweep.validate import is_positive_int

Print = Callable[[str], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepSettings:
    """Everything ``pdsweep run`` was asked; saved in ``sweep.json`` so ``resume`` repeats it."""

    name: str
    space: str = "paper"
    budgets: tuple[float, ...] = (17.6,)
    memory_gb: float | None = None
    policy: KeepPolicy = "fill"
    search: SearchKind = "tpe"
    trials: int = 8
    concurrency: int | None = None  # None: as many as the cluster's resources allow
    scheduler: Literal["asha", "none"] = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0
    repeats: int = 1
    dataset: str = "synthetic"
    runs_dir: str = "pdsweep-runs"
    address: str | None = None
    cpus_per_trial: int = 1
    gpu_memory_gb: float | None = None
    max_failures: int = 2
    cache_dir: str | None = None
    verbose: bool = False
    mlflow_uri: str | None = None  # None: SQLite at RUNS_DIR/mlflow.db
    experiment: str | None = None  # None: the space's name
    reuse_actors: bool = True  # a fresh actor per trial costs ~2.5 s here (bench/sweep_overhead.py)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise PdsweepError(f"sweep name {self.name!r} must be letters, digits, '.', '_' or '-'.")
        for name in ("trials", "grace_period", "repeats", "cpus_per_trial"):
            if not is_positive_int(getattr(self, name)):
                raise PdsweepError(f"`--{name.replace('_', '-')}` must be a positive integer, got {getattr(self, name)!r}.")
        if self.concurrency is not None and not is_positive_int(self.concurrency):
            raise PdsweepError(f"`--concurrency` must be a positive integer, got {self.concurrency!r}.")
        if not self.reduction_factor > 1:
            raise PdsweepError(f"`--reduction-factor > 1` must hold, got {self.reduction_factor!r}.")
        if self.max_failures < 0:
            raise PdsweepError(f"`--max-failures >= 0` must hold, got {self.max_failures!r}.")

    @property
    def store(self) -> SweepStore:
        return SweepStore(self.runs_dir, self.name)

    def absolute(self) -> SweepSettings:
        """Local paths made absolute: Ray runs each trial in its own working directory."""
        from pdsweep.data import DatasetSpec

        def local(path: str) -> str:
            return path if "://" in path else str(Path(path).expanduser().resolve())

        return replace(self, runs_dir=local(self.runs_dir), dataset=str(DatasetSpec.parse(self.dataset).absolute()),
                       cache_dir=local(self.cache_dir) if self.cache_dir else None)

    @property
    def sweep_dir(self) -> Path:
        """The local folder of the driver's files (a mirror when ``runs_dir`` is a URI)."""
        return self.store.local_dir


@dataclass
class SweepOutcome:
    name: str
    results_path: str  # a path or a URI
    rows: list[dict[str, Any]]
    report: report.Report | None  # None until a trial has finished
    interrupted: bool = False

    @property
    def all_failed(self) -> bool:
        return bool(self.rows) and all(r["status"] == "error" for r in self.rows)


def default_name() -> str:
    return time.strftime("sweep-%Y%m%d-%H%M%S")


# ---- run and resume -------------------------------------------------------------------------


def run_sweep(settings: SweepSettings, *, out: Print = print, err: Print | None = None) -> SweepOutcome:
    """Check, plan, and run a new sweep; nothing is written until every check has passed."""
    err = err or (lambda line: print(line, file=sys.stderr, flush=True))
    settings = settings.absolute()
    space = load_space(settings.space)
    budgets = [cost.Budget(g, settings.memory_gb) for g in settings.budgets]
    store = settings.store
    store.check()
    if store.exists():
        raise PdsweepError(
            f"sweep {settings.name!r} exists in {settings.runs_dir}; continue it with `pdsweep resume "
            f"{settings.name}` or choose another --name."
        )
    _check_address(settings.address)
    on_cluster = bool(settings.address or os.environ.get("RAY_ADDRESS"))
    if on_cluster:  # the dataset path is the workers': look at it where the trials will
        _connect(settings.address, settings.verbose)
        data = _probe_on_cluster(settings, space)
    else:
        data = _probe_dataset(settings, space)
    plans = {b.gflops: plan(space, b, policy=settings.policy, num_classes=data["num_classes"]) for b in budgets}
    uri = settings.mlflow_uri or tracking.default_uri(store.local_dir.parent)
    tracking.check_reachable(uri)
    _connect(settings.address, settings.verbose)
    _warn_if_not_shared(store, err)
    _preflight(settings, space, plans, data, err)
    settings.sweep_dir.mkdir(parents=True, exist_ok=store.remote)
    state = {"settings": asdict(settings), "space_text": Path(space.source).read_text(), **data, "phase": "search"}
    _write_state(settings, state)
    params = {**{k: v for k, v in asdict(settings).items() if v is not None}, "space": space.name, **data}
    state["mlflow"] = tracking.start_sweep(
        uri, settings.experiment or space.name,
        None if settings.mlflow_uri else tracking.artifact_root(store.local_dir.parent), settings.name, params,
        files=[Path(space.source), settings.sweep_dir / SWEEP_FILE],
    )
    _write_state(settings, state)
    err(f"  MLflow: experiment {settings.experiment or space.name!r}, parent run {settings.name!r} in {uri}")
    return _execute(settings, space, state, restore=False, out=out, err=err)


def resume_sweep(name: str, runs_dir: str = "pdsweep-runs", *, address: str | None = None,
                 out: Print = print, err: Print | None = None) -> SweepOutcome:
    """Continue a sweep whose driver died: finished trials are kept, the rest run once."""
    err = err or (lambda line: print(line, file=sys.stderr, flush=True))
    store = SweepStore(runs_dir if "://" in runs_dir else str(Path(runs_dir).expanduser().resolve()), name)
    store.fetch(SWEEP_FILE, results.RESULTS_FILE, STUDY_FILE)
    sweep_dir = store.local_dir
    if not (sweep_dir / SWEEP_FILE).is_file():
        known = store.known(SWEEP_FILE)
        listing = f"known sweeps: {', '.join(known)}" if known else f"no sweeps in {runs_dir}"
        raise PdsweepError(f"no sweep named {name!r} in {runs_dir}; {listing}.")
    try:
        state = json.loads((sweep_dir / SWEEP_FILE).read_text())
        missing = [key for key in ("settings", "space_text", "phase", "num_classes") if key not in state]
        if missing:
            raise KeyError(missing[0])
        settings = SweepSettings(**{**state["settings"], "budgets": tuple(state["settings"]["budgets"]),
                                    "runs_dir": store.runs_dir})
    except (ValueError, KeyError, TypeError) as error:
        raise PdsweepError(f"{sweep_dir / SWEEP_FILE} is damaged ({type(error).__name__}: {error}); "
                           "it cannot be resumed, start a new sweep.") from None
    relocate(store)  # Ray's pickled searcher and callback look here for the sweep's files
    if address is not None:
        settings = replace(settings, address=address)
    space = parse_space(_yaml(state["space_text"]), name=Path(settings.space).stem, source=str(sweep_dir / SWEEP_FILE))
    _check_address(settings.address)
    if state.get("mlflow"):
        tracking.check_reachable(state["mlflow"]["uri"])
    _connect(settings.address, settings.verbose)
    if state.get("mlflow"):
        tracking.reopen(state["mlflow"])
    err(f"resuming sweep {name!r} ({state['phase']} phase)")
    return _execute(settings, space, state, restore=True, out=out, err=err)


def _execute(settings: SweepSettings, space: SearchSpace, state: dict[str, Any], *, restore: bool,
             out: Print, err: Print) -> SweepOutcome:
    from ray import tune

    sweep_dir = settings.sweep_dir
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")  # save Tune's state at every step: resume loses nothing
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # ... on purpose
    if not settings.verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the engine that honours verbose=0
    trainable = tune.with_resources(_run_trial(), _resources_for(settings, space, state.get("worker_gpu_memory_gb")))
    callback = SweepCallback(settings, err, state.get("mlflow"))
    interrupted = False
    if state["phase"] == "search":
        tuner = _search_tuner(settings, space, state, trainable, callback, restore=restore)
        interrupted = _fit(tuner)
        if not interrupted:
            state["phase"] = "repeats" if settings.repeats > 1 else "done"
            _write_state(settings, state)
    if state["phase"] == "repeats" and not interrupted:
        tuner = _repeats_tuner(settings, space, state, trainable, callback)
        interrupted = _fit(tuner)
        if not interrupted:
            state["phase"] = "done"
            _write_state(settings, state)
    rows = results.read_rows(sweep_dir / results.RESULTS_FILE)
    outcome = SweepOutcome(settings.name, settings.store.where(results.RESULTS_FILE), rows,
                           report_or_none(settings.name, rows), interrupted)
    if outcome.report is not None and not interrupted:
        files = report.write(outcome.report, sweep_dir / "report")
        settings.store.publish(*(str(Path("report") / f.name) for f in files))
        if state.get("mlflow"):
            try:
                tracking.log_artifacts(state["mlflow"], files)
            except Exception:  # the tracker's warning below says what MLflow missed
                log.debug("could not log the report to MLflow", exc_info=True)
    if state.get("mlflow"):
        tracking.end_sweep(state["mlflow"], "KILLED" if interrupted else "FINISHED")
    if callback.tracker is not None and callback.tracker.warning():
        err(callback.tracker.warning().replace("NAME", settings.name))
    for line in summary_lines(outcome):
        out(line)
    if interrupted:
        err(f"interrupted; continue with `pdsweep resume {settings.name} --runs-dir {settings.runs_dir}`.")
    return outcome


def _fit(tuner: Any) -> bool:
    """Run a Tuner; True if it stopped (Ctrl-C) with trials still unfinished."""
    grid = tuner.fit()
    return grid is not None and grid.num_terminated + grid.num_errors < len(grid)


# ---- the two Tune experiments ---------------------------------------------------------------


def _trial_fields(settings: SweepSettings, space: SearchSpace, state: dict[str, Any]) -> dict[str, Any]:
    training = asdict(space.training)
    return {
        "seed": space.training.seed,
        "training": training,
        "dataset": settings.dataset,
        "split_seed": space.training.seed,
        "cache_dir": settings.cache_dir,
        # Trial starts are logged where workers can write: the sweep folder when it is local.
        "starts_log": None if settings.store.remote else str(settings.sweep_dir / STARTS_FILE),
    }


def _search_tuner(settings: SweepSettings, space: SearchSpace, state: dict[str, Any], trainable: Any,
                  callback: SweepCallback, *, restore: bool) -> Any:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from pdsweep.searcher import BudgetSearcher, TieredASHA

    path = settings.store.experiment("search")
    if restore and _restorable(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    searcher = BudgetSearcher(
        space, [cost.Budget(g, settings.memory_gb) for g in settings.budgets], search=settings.search,
        trials=settings.trials, policy=settings.policy, seed=space.training.seed, store=settings.store,
        trial_fields=_trial_fields(settings, space, state), num_classes=state["num_classes"],
    )
    scheduler = (
        TieredASHA(list(settings.budgets), max_t=space.training.epochs, grace_period=settings.grace_period,
                   reduction_factor=settings.reduction_factor, store=settings.store)
        if settings.scheduler == "asha" else None
    )
    concurrency = settings.concurrency or _slots(settings)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
            scheduler=scheduler, num_samples=searcher.total_trials, reuse_actors=settings.reuse_actors,
        ),
        run_config=_run_config(settings, "search", callback),
    )


def _repeats_tuner(settings: SweepSettings, space: SearchSpace, state: dict[str, Any], trainable: Any,
                   callback: SweepCallback) -> Any:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from pdsweep.searcher import ListSearcher

    path = settings.store.experiment("repeats")
    if _restorable(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    fields = _trial_fields(settings, space, state)
    rows = results.read_rows(settings.sweep_dir / results.RESULTS_FILE)
    built = report_or_none(settings.name, rows)
    points = []
    for tier in built.tiers if built else ():
        if tier.best is None:
            continue
        best = tier.best.config
        same = [r for r in rows if r["budget_gflops"] == tier.budget_gflops and report.config_of(r) == best]
        used = {r["seed"] for r in same}
        wanted = settings.repeats - len({r["seed"] for r in same if r["status"] == "completed"})
        seeds = [seed for seed in range(space.training.seed, space.training.seed + 10_000) if seed not in used]
        for seed in seeds[: max(0, wanted)]:
            points.append({**fields, "config": best.to_dict(), "tier": tier.budget_gflops, "phase": "repeat", "seed": seed})
    if not points:
        return _NoTuner()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(ListSearcher(points), max_concurrent=settings.concurrency or _slots(settings)),
            num_samples=len(points), reuse_actors=settings.reuse_actors,
        ),
        run_config=_run_config(settings, "repeats", callback),
    )


def _restorable(path: str) -> bool:
    """Tune can restore an experiment once it has saved its state, not just its Tuner."""
    from pyarrow import fs
    from ray import tune

    if not tune.Tuner.can_restore(path):
        return False
    filesystem, root = fs.FileSystem.from_uri(path) if "://" in path else (fs.LocalFileSystem(), path)
    listing = filesystem.get_file_info(fs.FileSelector(root, allow_not_found=True))
    return any(info.base_name.startswith("experiment_state") for info in listing)


class _NoTuner:
    def fit(self) -> None:
        return None


def _run_config(settings: SweepSettings, name: str, callback: SweepCallback) -> Any:
    from ray import tune

    return tune.RunConfig(
        name=name,
        storage_path=settings.store.storage_path,
        callbacks=[callback],
        verbose=2 if settings.verbose else 0,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
    )


def _run_trial() -> Callable[[dict[str, Any]], None]:
    from pdsweep.trainable import run_trial

    return run_trial


def _resources_for(settings: SweepSettings, space: SearchSpace,
                   worker_gpu_memory_gb: float | None = None) -> Callable[[dict[str, Any]], dict[str, float]]:
    """CPUs on CPU-only Ray; on GPU nodes a GPU share sized from the predicted memory and the
    GPU's memory (``--gpu-memory-gb``, else what the cluster probe saw on a GPU node, else this
    machine's GPU)."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    gpu_memory = settings.gpu_memory_gb or worker_gpu_memory_gb or (_local_gpu_memory_gb() if gpus else None)
    training = space.training

    def resources(trial: dict[str, Any]) -> dict[str, float]:
        if not gpus:
            return {"cpu": settings.cpus_per_trial}
        if gpu_memory is None:
            return {"cpu": settings.cpus_per_trial, "gpu": 1}
        config = Config(**trial["config"])
        needed = cost.memory(config, batch_size=training.batch_size, precision=training.precision,
                             optimizer=training.optimizer).gb
        share = min(1.0, math.ceil(needed / gpu_memory * 8) / 8)  # in eighths: several small trials share a GPU
        return {"cpu": settings.cpus_per_trial, "gpu": max(share, 0.125)}

    return resources


def _slots(settings: SweepSettings) -> int:
    import ray

    resources = ray.cluster_resources()
    if resources.get("GPU", 0):
        return max(1, int(resources["GPU"] * 8))  # at most eight trials per GPU; Ray packs by memory share
    return max(1, int(resources.get("CPU", 1) // settings.cpus_per_trial))


def _local_gpu_memory_gb() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 1e9
    except Exception:  # a broken CUDA install must not stop a CPU sweep
        return None
    return None


# ---- checks before anything is written ------------------------------------------------------


def _probe_dataset(settings: SweepSettings, space: SearchSpace) -> dict[str, Any]:
    """Load the dataset once on the driver (builds the cache): classes and training images."""
    from pdsweep.data import DatasetSpec, load_dataset

    spec = DatasetSpec.parse(settings.dataset)
    resolution = min(int(r) for r in space.axes["resolution"].values())
    dataset = load_dataset(spec, resolution, seed=space.training.seed,
                           cache_dir=Path(settings.cache_dir) if settings.cache_dir else None)
    return {"num_classes": dataset.num_classes, "train_images": len(dataset.train)}


PROBE_TIMEOUT_S = 900  # an autoscaling cluster may have to start its first worker for the probe


def _probe_on_cluster(settings: SweepSettings, space: SearchSpace) -> dict[str, Any]:
    """:func:`_probe_dataset` as a Ray task placed like a trial: on a GPU node when the cluster
    has GPUs, else where a trial's CPUs are free (a head started with no CPUs never qualifies, so
    an autoscaler starts a worker). The path is resolved where the trials will read it, and that
    node's GPU memory sizes the trials' GPU shares."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    options = {"num_cpus": 0, "num_gpus": 0.01} if gpus else {"num_cpus": settings.cpus_per_trial}
    task = ray.remote(**options)(_probe_worker).remote(settings, space)
    try:
        return ray.get(task, timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(task, force=True)
        needs = "a GPU" if gpus else f"{settings.cpus_per_trial} CPU(s)"
        raise PdsweepError(
            f"no node of the cluster could run a trial ({needs}) within {PROBE_TIMEOUT_S // 60} minutes; "
            "are its workers up (`ray status`)?"
        ) from None
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, PdsweepError):
            raise PdsweepError(f"on the cluster: {error.cause}") from None
        raise


def _probe_worker(settings: SweepSettings, space: SearchSpace) -> dict[str, Any]:
    memory = _local_gpu_memory_gb()
    return {**_probe_dataset(settings, space), **({"worker_gpu_memory_gb": memory} if memory else {})}


def _warn_if_not_shared(store: SweepStore, err: Print) -> None:
    """A local runs dir works on one machine; say so when the cluster has several."""
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    hosts = {node.get("NodeManagerAddress") for node in nodes}
    if not store.remote and len(nodes) > 1:
        where = "machines" if len(hosts) > 1 else "nodes"
        err(f"  note: --runs-dir {store.runs_dir} is a local folder and the cluster has {len(nodes)} {where}; "
            "trials elsewhere save checkpoints there only if every node mounts it at the same path. "
            "Otherwise give a URI (s3://, gs://) or a shared filesystem.")


def _connect(address: str | None, verbose: bool) -> None:
    """Join the Ray at ``address`` (fail fast and clearly), or start a local one."""
    import logging

    import ray

    _check_address(address)
    if ray.is_initialized():  # already connected (a test session, a notebook)
        return
    local = not address and not os.environ.get("RAY_ADDRESS")  # inside a Ray job, Ray says where it is
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=verbose,
                 **({"include_dashboard": False} if local else {}))
    except ConnectionError as error:
        raise PdsweepError(f"cannot connect to Ray at {address or 'a local instance'} ({error}).") from None


def _check_address(address: str | None) -> None:
    """A Ray address must answer on its port (within seconds), or the sweep does not start."""
    if not address or address == "auto":
        return
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        raise PdsweepError(
            f"cannot reach Ray at {address}; start a cluster there with `ray start --head` "
            "(its GCS listens on port 6379), or drop --address to use a local Ray."
        ) from None


def _host_port(address: str) -> tuple[str, int]:
    match = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address)
    if not match:
        raise PdsweepError(f"--address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}.")
    return match.group(1), int(match.group(2))


def _preflight(settings: SweepSettings, space: SearchSpace, plans: dict[float, Any], data: dict[str, Any], err: Print) -> None:
    epochs = space.training.epochs
    images = data["train_images"]
    total = 0.0
    lines = []
    for gflops, tier in plans.items():
        feasible = [p.cost.train_gflops for p in tier.configs]
        if settings.search == "grid":
            sampler = BudgetSampler(space, tier.budget, settings.policy, data["num_classes"])
            grid = sampler.grid()
            trials, per_trial = len(grid), statistics.fmean(cost.train_gflops(c) for c in grid)
        else:
            trials, per_trial = settings.trials, statistics.fmean(feasible)
        trials += settings.repeats - 1
        compute = trials * per_trial * 1e9 * images * epochs * 3  # forward + backward
        total += compute
        lines.append(f"  tier {gflops:g} GFLOPs: {len(feasible)} of {tier.architectures} architectures fit; "
                     f"{trials} trials; ~{_flops(compute)}")
    err(f"sweep {settings.name!r}: space {space.name!r}, {settings.search} search, keep policy {settings.policy}, "
        f"{epochs} epochs on {images:,} images ({settings.dataset})")
    for line in lines:
        err(line)
    err(f"  estimated compute: ~{_flops(total)} (train GFLOPs x images x epochs x 3, before early stopping)")


def _flops(value: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP"


def _write_state(settings: SweepSettings, state: dict[str, Any]) -> None:
    partial = settings.sweep_dir / f".{SWEEP_FILE}.partial"
    partial.write_text(json.dumps(state, indent=2))
    os.replace(partial, settings.sweep_dir / SWEEP_FILE)
    settings.store.publish(SWEEP_FILE)


def _yaml(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)
