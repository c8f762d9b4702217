"""The Ray Tune trainable: a thin wrapper that runs :func:`pdsweep.training.train` for one trial.

It reports every epoch's metrics to Tune with the epoch's checkpoint (``ray.tune``'s
``report``/``get_checkpoint``/``Checkpoint``; the ``ray.train`` ones are Train-V2's), resumes
from Tune's checkpoint after a failure or a driver restart, and sends one last report with the
test metrics and the robustness curve, or with what ended it early (``trial_status``).
Everything a trial needs is in its config dict, so a worker on another node needs no route to
the driver's files except the dataset path.
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pdsweep.cost import memory
from pdsweep.results.compute import held_devices
from pdsweep.objective import METRICS, result_keys
from pdsweep.sweep.spec import ROBUSTNESS_PREFIX, TrialSpec
from pdsweep.sweep.watch import NodeWithoutWeights, missing_line
from pdsweep.training.faults import fault_line, fault_status
from pdsweep.training.weights import WeightsNotHere

def run_trial(trial_config: dict[str, Any], weights_cache: str | None = None) -> None:
    """Train one config (the function Tune runs on a worker, given the trial's spec dict;
    ``weights_cache``: the sweep's cache now, which ``resume --weights-cache`` may have moved
    since the trial's spec was made).

    A trial that fails in its own code or data (it diverged, ran out of memory, or raised) ends
    here with a last report that says so (``trial_status``, ``error``), not with an exception:
    Tune retries only what escapes, a worker or node lost, which resumes from the last
    checkpoint.
    """
    import ray
    import torch
    from ray import tune

    from pdsweep.training import loop  # noqa: F401  (imported before a memory cap: libraries map memory)

    started = time.perf_counter()
    context = ray.get_runtime_context()
    # Which machine ran it, and since when (strings and clocks ride along in every result).
    held = context.get_assigned_resources()
    device_kind, devices = held_devices(held)  # for the compute ledger's device-seconds
    node = {"node_id": context.get_node_id(), "started_at": time.time(), "device_kind": device_kind, "devices": devices}
    cpus = held.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    trial = TrialSpec.from_dict(trial_config)
    checkpoint = tune.get_checkpoint()
    _log_start(trial.context.starts_log, resumed=checkpoint is not None)
    epochs: list[Any] = []  # the EpochMetrics reported so far
    cap = None if torch.cuda.is_available() else trial.context.memory_cap_gb  # CUDA maps far more than it uses
    try:
        with memory_cap(cap):
            final = _train(trial, checkpoint, node, epochs, weights_cache)
    except _ReportFailed as failed:  # Ray's side (storage, the session): Tune's retry may help
        raise failed.__cause__ or failed from None
    except WeightsNotHere as error:  # this node's cache, not the config: retried, uncounted, and the driver's
        # watch stops the sweep (resumable) naming the node
        raise NodeWithoutWeights(missing_line(ray.util.get_node_ip_address(), node["node_id"], str(error))) from None
    except Exception as error:  # the trial's own: the same config fails the same way again
        status = fault_status(error)
        metric = trial.settings.objective.val_key
        final = {**node, "done_training": True, "trial_status": status, "error": fault_line(error),
                 "predicted_memory_gb": memory(trial.config, trial.settings.step).gb,
                 # Tune wants the metric in every result: the last epoch's, or NaN before the first.
                 metric: _last(epochs, trial.settings.metric),
                 **({"epoch": epochs[-1].epoch} if epochs else {})}
    if final.get("trial_status") == "oom":  # out of the except block: the failed step's frames are gone
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # a reused actor starts its next trial with the memory back
    tune.report({**final, "trial_seconds": time.perf_counter() - started, "reported_at": time.time()})


def _last(epochs: list[Any], metric: str) -> float:
    """The last epoch's value of ``metric``, or NaN before the first (Tune wants one)."""
    value = epochs[-1].val(metric) if epochs else None
    return float("nan") if value is None else value


class _ReportFailed(Exception):
    """Reporting to Tune failed (not the training): re-raised for Tune to handle."""


def _train(trial: TrialSpec, checkpoint: Any, node: dict[str, Any], epochs: list[int],
           weights_cache: str | None = None) -> dict[str, Any]:
    """The trial's training, reporting each epoch; returns its last report."""
    from ray import tune

    from pdsweep.training.data import load_dataset
    from pdsweep.training.loop import train

    config, context = trial.config, trial.context
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
            saved = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
            try:
                tune.report({**values, **node, "reported_at": time.time(), "done_training": False}, checkpoint=saved)
            except Exception as error:
                raise _ReportFailed() from error
            epochs.append(metrics)

        result = train(config, dataset, trial.settings, checkpoint_dir=work_dir, on_epoch_end=report_epoch,
                       pretrained=trial.weights, weights_cache=weights_cache or context.weights_cache,
                       checkpoint_every_s=context.checkpoint_every_s)
    last = result.history[-1]
    final = {k: v for k, v in asdict(last).items() if v is not None}
    final.update(
        **node,
        done_training=True,
        **result_keys("best_val_", {m: result.best_val(m) for m in METRICS}),
        **result_keys("test_", result.test_scores),
        **{f"test_{m}_interval": list(v) for m, v in result.test_intervals.items() if v is not None},
        class_recall=[[name, recall] for name, recall in zip(dataset.class_names, result.class_recall)],
        split_counts=[[split, images, groups] for split, (images, groups) in dataset.counts().items()],
        scored_by=result.scored_by,
        micro_batch_size=result.micro_batch_size,
        member_turns=result.member_turns,
        train_seconds=result.seconds,  # the trial's own work: model, epochs, test, robustness
        **({"pretrained_blocks": result.pretrained_blocks} if result.pretrained_blocks is not None else {}),
        **({"attention_backend": result.attention_backend} if result.attention_backend else {}),
        **{f"{ROBUSTNESS_PREFIX}{rate:g}": acc for rate, acc in result.robustness.items()},
    )
    return final


@contextlib.contextmanager
def memory_cap(gb: float | None) -> Iterator[None]:
    """Let this process grow by at most ``gb`` GB of address space while the trial runs
    (``RLIMIT_AS``, Linux): an allocation past it fails in the allocator, as on a full GPU."""
    if gb is None:
        yield
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        size = int(handle.read().split()[0]) * resource.getpagesize()
    limit = size + int(gb * 1e9)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


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
