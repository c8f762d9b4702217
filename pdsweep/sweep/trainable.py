"""The Ray Tune trainable: a thin wrapper that runs :func:`pdsweep.training.train` for one trial.

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

from pdsweep.sweep.spec import TrialSpec

def run_trial(trial_config: dict[str, Any]) -> None:
    """Train one config (the function Tune runs on a worker, given the trial's spec dict)."""
    import ray
    import torch
    from ray import tune

    from pdsweep.training.data import load_dataset
    from pdsweep.training.loop import train

    started = time.perf_counter()
    context = ray.get_runtime_context()
    # Which machine ran it, and since when (strings and clocks ride along in every result).
    node = {"node_id": context.get_node_id(), "started_at": time.time()}
    cpus = context.get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    trial = TrialSpec.from_dict(trial_config)
    config, context = trial.config, trial.context
    checkpoint = tune.get_checkpoint()
    _log_start(context.starts_log, resumed=checkpoint is not None)
    dataset = load_dataset(
        context.dataset, config.resolution, seed=context.split_seed,
        cache_dir=Path(context.cache_dir) if context.cache_dir else None,
    )
    with tempfile.TemporaryDirectory(prefix="pdsweep-trial-") as work:
        work_dir = Path(work)
        if checkpoint is not None:
            checkpoint.to_directory(work)

        def report_epoch(metrics: Any, checkpoint_dir: Path | None) -> None:
            values = {k: v for k, v in asdict(metrics).items() if v is not None}
            tune.report({**values, **node, "reported_at": time.time(), "done_training": False}, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

        result = train(config, dataset, trial.settings, checkpoint_dir=work_dir, on_epoch_end=report_epoch)
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


def _log_start(starts_log: str | None, *, resumed: bool) -> None:
    """Append one line per trial start (for the exactly-once check of resumed sweeps)."""
    if not starts_log:
        return
    from ray import tune

    context = tune.get_context()
    line = f"{context.get_trial_id()} {'resumed' if resumed else 'fresh'} {os.getpid()}\n"
    try:
        with open(starts_log, "a") as handle:
            handle.write(line)
    except OSError:  # a worker that cannot reach the driver's folder: the log is a convenience
        pass
