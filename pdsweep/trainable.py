"""The Ray Tune trainable: a thin wrapper that runs :func:`pdsweep.train.train` for one trial.

It reports every epoch's metrics to Tune with the epoch's checkpoint (``ray.tune``'s
``report``/``get_checkpoint``/``Checkpoint``; the ``ray.train`` ones are Train-V2's), resumes
from Tune's checkpoint after a failure or a driver restart, and sends one last report with the
test metrics and the robustness curve. Everything a trial needs is in its config dict, so a
worker on another node needs no route to the driver's files except the dataset path.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

# Metric names reported to Tune; the scheduler and the searcher read these.
METRIC = "val_accuracy"
TIME_ATTR = "epoch"


def trial_space(
    config: dict[str, Any], *, tier: float, phase: str, seed: int, training: dict[str, Any],
    dataset: str, split_seed: int, cache_dir: str | None, starts_log: str | None = None,
) -> dict[str, Any]:
    """The config dict of one Tune trial."""
    return {
        "config": config, "tier": tier, "phase": phase, "seed": seed, "training": training,
        "dataset": dataset, "split_seed": split_seed, "cache_dir": cache_dir, "starts_log": starts_log,
    }


def run_trial(trial: dict[str, Any]) -> None:
    """Train one config (the function Tune runs on a worker)."""
    import ray
    import torch
    from ray import tune

    from pdsweep.config import Config
    from pdsweep.data import load_dataset
    from pdsweep.space import TrainingSettings
    from pdsweep.train import train

    started = time.perf_counter()
    context = ray.get_runtime_context()
    # Which machine ran it, and since when (strings and clocks ride along in every result).
    node = {"node_id": context.get_node_id(), "started_at": time.time()}
    cpus = context.get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    config = Config(**trial["config"])
    settings = TrainingSettings(**{**trial["training"], "seed": trial["seed"]})
    checkpoint = tune.get_checkpoint()
    _log_start(trial, resumed=checkpoint is not None)
    dataset = load_dataset(
        trial["dataset"], config.resolution, seed=trial["split_seed"],
        cache_dir=Path(trial["cache_dir"]) if trial["cache_dir"] else None,
    )
    with tempfile.TemporaryDirectory(prefix="pdsweep-trial-") as work:
        work_dir = Path(work)
        if checkpoint is not None:
            checkpoint.to_directory(work)

        def report_epoch(metrics: Any, checkpoint_dir: Path | None) -> None:
            values = {k: v for k, v in asdict(metrics).items() if v is not None}
            tune.report({**values, **node, "reported_at": time.time(), "done_training": False}, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

        result = train(config, dataset, settings, checkpoint_dir=work_dir, on_epoch_end=report_epoch)
    last = result.history[-1]
    final = {k: v for k, v in asdict(last).items() if v is not None}
    final.update(
        **node,
        done_training=True,
        best_val_accuracy=result.best_val_accuracy,
        test_accuracy=result.test_accuracy,
        train_seconds=result.seconds,  # the trial's own work: model, epochs, test, robustness
        trial_seconds=time.perf_counter() - started,
        reported_at=time.time(),
        **({"test_auc": result.test_auc} if result.test_auc is not None else {}),
        **{f"robustness_{rate:g}": acc for rate, acc in result.robustness.items()},
    )
    tune.report(final)


def _log_start(trial: dict[str, Any], *, resumed: bool) -> None:
    """Append one line per trial start (for the exactly-once check of resumed sweeps)."""
    if not trial.get("starts_log"):
        return
    from ray import tune

    context = tune.get_context()
    line = f"{context.get_trial_id()} {'resumed' if resumed else 'fresh'} {os.getpid()}\n"
    try:
        with open(trial["starts_log"], "a") as handle:
            handle.write(line)
    except OSError:  # a worker that cannot reach the driver's folder: the log is a convenience
        pass
