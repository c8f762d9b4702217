"""Benchmark: what 1,000 (or 10,000) trials cost the driver, and whether a row is ever lost.

    python bench/scale.py [--trials 1000] [--concurrency 8] [--epochs 3] [--sleep 0.05]
                          [--tracking sqlite,server] [--checkpoint-every-s 60] [--no-record]
    python bench/scale.py --trials 10000 --tracking sqlite   # the long mode

Runs ``run_sweep`` as a user's sweep runs: local Ray, the real TPE searcher over Optuna's
journal, the tiered ASHA scheduler, the compute ledger, the driver's callback, MLflow (the
sweep's own SQLite store, and a real ``mlflow server`` on 127.0.0.1) and ``results.parquet``.
Only the training is replaced: a stand-in trainable sleeps ``--sleep`` seconds per epoch and
reports each epoch (with a checkpoint once ``--checkpoint-every-s`` has passed since its last),
then a last report, as ``pdsweep.sweep.trainable`` does.
Its accuracy is a smooth function of the config, so TPE has something to model.

Prints, per tracking store:

- trials per second over the whole sweep;
- the driver's time per trial in the first and the last tenth of the sweep: the wall time
  between trial ends (everything the driver does, Ray Tune's loop included) and the part spent
  in pdsweep's own driver code (searcher, ledger, scheduler, callback), timed by wrapping their
  Tune hooks, and in Ray Tune's saves of its experiment state (which hold every trial's state,
  so each grows with the sweep; Tune saves on its adaptive period and at each trial checkpoint);
- the driver's time in its MLflow calls, per trial over the whole sweep (what Tune's loop waits
  for: queueing the calls, which a background thread makes), and the wait at the end for what
  was still queued;
- the driver's resident memory at the start and the end;
- the size of each file the sweep wrote;
- rows lost: trials Tune ran minus rows in ``results.parquet``, and minus MLflow child runs
  closed with their row (both must be 0).

Records the table in bench/RESULTS.md. Goal: 0 rows lost, and the driver's time per trial in the
last tenth within 2x of the first.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pdsweep.paths import MLFLOW_FILE, RESULTS_FILE, STARTS_FILE, STUDY_FILE
from pdsweep.results import ui
from pdsweep.results.rows import read_rows
from pdsweep.sweep import SweepSettings, run_sweep

from results import record

SPACE = """\
axes:
  model: vit_micro
  resolution: [32, 48, 64]
  patch_size: [4, 8]
  depth: [1, 2, 3, 4]
  keep_rate: {{low: 0.1, high: 1.0}}
training:
  epochs: {epochs}
  batch_size: 32
  precision: fp32
  augment: false
"""


def stand_in(sleep_s: float) -> Callable[[dict[str, Any]], None]:
    """A trainable that reports like ``pdsweep.sweep.trainable.run_trial`` without training."""

    def trainable(trial_config: dict[str, Any]) -> None:
        import math
        import random
        import zlib

        import ray
        from ray import tune

        from pdsweep.sweep.spec import TrialSpec
        from pdsweep.sweep.trainable import _log_start

        spec = TrialSpec.from_dict(trial_config)
        _log_start(spec.context.starts_log, resumed=tune.get_checkpoint() is not None)
        config, epochs = spec.config, spec.context.training.epochs
        context = ray.get_runtime_context()
        node = {"node_id": context.get_node_id(), "started_at": time.time(), "device_kind": "cpu", "devices": 1.0}
        began = saved = time.perf_counter()
        # Accuracy: more tokens and blocks help, with noise, so TPE has a landscape to model.
        tokens = (config.resolution / config.patch_size) ** 2 * config.keep_rate
        ceiling = 0.5 + 0.4 * (1 - math.exp(-tokens / 40)) * (1 - math.exp(-config.depth / 2))
        noise = random.Random(spec.seed * 7919 + zlib.crc32(config.name.encode())).gauss(0, 0.01)
        for epoch in range(1, epochs + 1):
            time.sleep(sleep_s)
            accuracy = ceiling * (1 - 0.5 ** epoch) + noise
            due = time.perf_counter() - saved >= spec.context.checkpoint_every_s  # as pdsweep.training.loop
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "state.txt").write_text(f"{epoch}\n")
                tune.report({"epoch": epoch, "train_loss": 2.0 / epoch, "val_accuracy": accuracy, **node,
                             "reported_at": time.time(), "done_training": False},
                            checkpoint=tune.Checkpoint.from_directory(folder) if due else None)
            saved = time.perf_counter() if due else saved
        tune.report({"epoch": epochs, "train_loss": 2.0 / epochs, "val_accuracy": accuracy, **node,
                     "done_training": True, "best_val_accuracy": accuracy, "test_accuracy": accuracy - 0.01,
                     "train_seconds": time.perf_counter() - began, "reported_at": time.time()})

    return trainable


class Timer:
    """Seconds spent in the wrapped driver hooks, with the number of trials ended so far."""

    def __init__(self) -> None:
        self.originals: list[tuple[type, str, Any]] = []  # what wrap() replaced, for restore()
        self.calls: list[tuple[int, float]] = []  # (trials ended when the call began, seconds)
        self.saves: list[tuple[int, float]] = []  # the same for Ray Tune's saves of its experiment state
        self.mlflow: list[tuple[int, float]] = []  # the same for the driver's MLflow calls
        self.flush: list[tuple[int, float]] = []  # the same for its wait, at the end, for the calls still queued
        self.ends: list[float] = []  # perf_counter at each trial's end, as the callback saw it
        self.rss: list[int] = []  # the driver's resident bytes at each trial's end

    def wrap(self, cls: type, name: str, into: list[tuple[int, float]] | None = None) -> None:
        """Time ``cls.name`` when the driver's thread calls it (not a background thread)."""
        original = cls.__dict__.get(name, getattr(cls, name))
        self.originals.append((cls, name, original))
        calls = self.calls if into is None else into

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return original(*args, **kwargs)
            ended = len(self.ends)
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                calls.append((ended, time.perf_counter() - began))

        setattr(cls, name, timed)

    def restore(self) -> None:
        """Put back what wrap() replaced (the next sweep is timed by its own Timer only)."""
        for cls, name, original in reversed(self.originals):
            setattr(cls, name, original)
        self.originals = []

    def mark_end(self) -> None:
        import psutil

        self.ends.append(time.perf_counter())
        self.rss.append(psutil.Process().memory_info().rss)

    def window(self, first: int, last: int) -> tuple[float, float, float]:
        """Wall seconds per trial between ends ``first`` and ``last``, pdsweep's share, and the
        share of Tune's saves of its state."""
        wall = (self.ends[last] - self.ends[first]) / (last - first)
        own = sum(s for ended, s in self.calls if first < ended <= last) / (last - first)
        saves = sum(s for ended, s in self.saves if first < ended <= last) / (last - first)
        return wall, own, saves


def instrument(timer: Timer) -> None:
    """Time pdsweep's driver hooks: the searcher (through the ledger), the scheduler, the callback."""
    from pdsweep.sweep.callback import SweepCallback
    from pdsweep.sweep.ledger import LedgerSearcher
    from pdsweep.sweep.schedulers import TieredASHA

    for name in ("suggest", "on_trial_result", "on_trial_complete"):
        timer.wrap(LedgerSearcher, name)
    for name in ("on_trial_add", "choose_trial_to_run", "on_trial_result", "on_trial_complete"):
        timer.wrap(TieredASHA, name)
    for name in ("on_trial_result", "on_trial_error", "on_experiment_end"):
        timer.wrap(SweepCallback, name)
    from ray.tune.execution.tune_controller import TuneController

    timer.wrap(TuneController, "save_to_dir", into=timer.saves)  # the whole state, the searcher's with it
    from pdsweep.results.tracking import Tracker

    trackers: list[type] = [Tracker]
    try:  # the tracker that queues its calls (absent from pdsweep before it, when this script times that)
        from pdsweep.results.tracking_queue import QueuedTracker

        trackers.append(QueuedTracker)
    except ImportError:
        pass
    for cls in trackers:
        for name in ("epoch", "finish"):
            timer.wrap(cls, name, into=timer.mlflow)
        if "flush" in cls.__dict__:
            timer.wrap(cls, "flush", into=timer.flush)
    record_row = SweepCallback._record
    timer.originals.append((SweepCallback, "_record", record_row))

    def recorded(self: SweepCallback, *args: Any, **kwargs: Any) -> Any:
        ended = len(timer.ends)
        began = time.perf_counter()
        try:
            return record_row(self, *args, **kwargs)
        finally:
            timer.calls.append((ended, time.perf_counter() - began))
            timer.mark_end()

    SweepCallback._record = recorded  # type: ignore[method-assign]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _mlflow_children(uri: str, experiment: str) -> int:
    """Child runs closed with their trial's row (as the back-fill counts them)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs, token = 0, None
    while True:
        page = client.search_runs([found.experiment_id], "tags.`mlflow.parentRunId` != ''", max_results=1000,
                                  page_token=token)
        runs += sum(run.info.status in ("FINISHED", "FAILED") for run in page)
        token = page.token
        if not token:
            return runs


def sweep(root: Path, tracking: str, args: argparse.Namespace) -> dict[str, Any]:
    import pdsweep.sweep.run as run_module
    from ray import tune

    from pdsweep.sweep.cluster import resources_for

    timer = Timer()
    instrument(timer)

    def trainable(settings: Any, space: Any, state: Any) -> Any:
        return tune.with_resources(stand_in(args.sleep), resources_for(settings, space, state.data.worker_gpu_memory_gb))

    run_module.tune_trainable = trainable  # only the training is a stand-in
    server, uri = None, None
    if tracking == "server":
        port = _free_port()
        server = ui.start(str(root), port, f"sqlite:///{root / 'server.db'}")
        uri = f"http://127.0.0.1:{port}"
    name = f"scale-{tracking}"
    settings = SweepSettings(
        name=name, space=str(root / "space.yaml"), budgets=(0.5,), search="tpe", trials=args.trials,
        scheduler="asha", dataset="synthetic:200", runs_dir=str(root / "runs"), cache_dir=str(root / "cache"),
        concurrency=args.concurrency, mlflow_uri=uri, policy="search", estimate=False,
        checkpoint_every_s=args.checkpoint_every_s,
    )
    lines: list[str] = []
    began = time.perf_counter()
    try:
        run_sweep(settings, out=lines.append, err=lines.append)
        seconds = time.perf_counter() - began
        sweep_dir = settings.absolute().sweep_dir
        rows = read_rows(sweep_dir / RESULTS_FILE)
        started = {line.split()[0] for line in (sweep_dir / STARTS_FILE).read_text().splitlines()}
        children = _mlflow_children(uri or f"sqlite:///{root / 'runs' / MLFLOW_FILE}", "space")
    finally:
        timer.restore()
        if server is not None:
            ui.stop(server, grace_s=5)
    n = len(timer.ends)
    tenth = max(1, n // 10)
    first, last = timer.window(0, tenth), timer.window(n - 1 - tenth, n - 1)
    files = {
        RESULTS_FILE: _size(sweep_dir / RESULTS_FILE), STUDY_FILE: _size(sweep_dir / STUDY_FILE),
        "mlflow (SQLite)": _size(root / "runs" / MLFLOW_FILE) if tracking == "sqlite" else _size(root / "server.db"),
        "Tune's experiment (search/)": _size(sweep_dir / "search"), STARTS_FILE: _size(sweep_dir / STARTS_FILE),
    }
    return {"tracking": tracking, "seconds": seconds, "trials": len(started), "rows": len(rows), "children": children,
            "first": first, "last": last, "rss": (timer.rss[0], timer.rss[-1]), "files": files,
            "mlflow": sum(s for _, s in timer.mlflow) / max(1, len(started)), "flush": sum(s for _, s in timer.flush),
            "stopped": sum(r.status == "stopped" for r in rows), "tail": lines[-3:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds per stand-in epoch")
    parser.add_argument("--tracking", default="sqlite,server", help="sqlite and/or server, comma-separated")
    parser.add_argument("--checkpoint-every-s", type=float, default=SweepSettings.checkpoint_every_s,
                        help="as `pdsweep run --checkpoint-every-s` (default pdsweep's, %(default)g; 0: every epoch)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    import ray

    # Slots, not cores: the stand-in trials sleep, so the driver is what runs out first.
    ray.init(num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False)
    results = []
    for tracking in args.tracking.split(","):
        root = Path(tempfile.mkdtemp(prefix=f"pdsweep-bench-scale-{tracking}-"))
        (root / "space.yaml").write_text(SPACE.format(epochs=args.epochs))
        result = sweep(root, tracking, args)
        print(result, flush=True)
        results.append(result)
    ray.shutdown()
    mb = 1e6
    table = ["| tracking | checkpoints | trials | trials/s | driver s/trial, first tenth (pdsweep's hooks; Tune's saves) "
             "| last tenth (pdsweep's hooks; Tune's saves) | last / first | MLflow on the driver s/trial; wait at the end s "
             "| driver RSS MB, start -> end | rows lost (Parquet, MLflow) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    every = f"every {args.checkpoint_every_s:g} s" if args.checkpoint_every_s else "every epoch"
    for r in results:
        (w0, o0, t0), (w1, o1, t1) = r["first"], r["last"]
        table.append(
            f"| {'mlflow server' if r['tracking'] == 'server' else 'SQLite'} | {every} | {r['trials']} "
            f"| {r['trials'] / r['seconds']:.2f} | {w0:.3f} ({o0:.3f}; {t0:.3f}) | {w1:.3f} ({o1:.3f}; {t1:.3f}) "
            f"| {w1 / w0:.2f} | {r['mlflow']:.4f}; {r['flush']:.1f} | {r['rss'][0] / mb:.0f} -> {r['rss'][1] / mb:.0f} "
            f"| {r['trials'] - r['rows']}, {r['trials'] - r['children']} |")
    files = ["| file | " + " | ".join(r["tracking"] for r in results) + " |", "| --- |" + " --- |" * len(results)]
    for key in results[0]["files"]:
        files.append(f"| {key} | " + " | ".join(f"{r['files'][key] / mb:.2f} MB" for r in results) + " |")
    section = "\n".join([
        f"## Driver at scale (`python bench/scale.py --trials {args.trials}`, {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} CPU, {os.cpu_count()} cores)", "",
        f"{args.trials} trials through `run_sweep` (TPE over Optuna's journal, tiered ASHA, the ledger, the callback, "
        f"MLflow, results.parquet), {args.concurrency} at a time, with a stand-in trainable that sleeps {args.sleep:g} s "
        f"per epoch for {args.epochs} epochs and reports each, with a checkpoint when one is due (as the trainable: "
        "`--checkpoint-every-s`). Driver s/trial: wall time between trial ends (Ray Tune's loop included); in brackets "
        "the time in pdsweep's hooks (searcher, ledger, scheduler, callback) and in Ray Tune's saves of its experiment "
        "state (the searcher's state with it). MLflow on the driver: the time Tune's loop spent in the tracker's calls "
        "(`epoch`, `finish`), per trial; the wait at the end: the driver's flush of the calls still queued. Rows lost "
        "in MLflow: trials without a child run closed with their row. Goal: 0 rows lost, last / first <= 2, MLflow "
        "<= 0.1 s a trial on the driver.",
        "", *table, "", *files,
    ])
    print(section)
    if not args.no_record:
        record(f"scale-{args.trials}", section)


if __name__ == "__main__":
    main()
