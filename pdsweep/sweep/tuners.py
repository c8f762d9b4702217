"""The sweep's two Tune experiments: the search, and the repeats of each tier's top configs.

Both issue their trials through the compute ledger (:mod:`pdsweep.sweep.ledger`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pdsweep.cost import Budget
from pdsweep.results.rows import RESULTS_FILE, read_rows
from pdsweep.results.summary import report_or_none
from pdsweep.space import SearchSpace
from pdsweep.sweep.callback import SweepCallback
from pdsweep.sweep.cluster import resources_for, slots
from pdsweep.sweep.estimate import Throughput
from pdsweep.sweep.settings import SweepSettings, SweepState
from pdsweep.sweep.spec import TrialContext, TrialSpec
from pdsweep.training.weights import WeightFile


def trial_context(settings: SweepSettings, space: SearchSpace, train_images: int | None = None,
                  weights: Mapping[str, WeightFile] | None = None) -> TrialContext:
    """What every trial of the sweep shares (``weights``: what the pre-flight found for each
    model that starts pretrained)."""
    return TrialContext(
        training=space.training,
        dataset=settings.dataset,
        split_seed=space.training.seed,
        cache_dir=settings.cache_dir,
        starts_log=settings.store.starts_log,
        memory_cap_gb=settings.trial_memory_cap_gb,
        train_images=train_images,
        finetune=space.finetune,
        weights=dict(weights or {}),
        weights_cache=settings.weights_cache,
        checkpoint_every_s=settings.checkpoint_every_s,
        device_memory_gb=settings.memory_gb,
    )


def search_tuner(settings: SweepSettings, space: SearchSpace, state: SweepState, trainable: Any,
                 callback: SweepCallback, *, restore: bool, prior: Throughput | None = None) -> Any:
    """The search; ``prior``: the pre-flight's measured throughput, for the device-hours cap."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from pdsweep.sweep.ledger import LedgerSearcher
    from pdsweep.sweep.schedulers import search_scheduler
    from pdsweep.sweep.searcher import BudgetSearcher

    path = settings.store.experiment("search")
    if restore and restorable(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    concurrency = settings.concurrency or slots(settings)
    searcher = BudgetSearcher(
        space, [Budget(g, settings.memory_gb) for g in settings.budgets], search=settings.search,
        trials=settings.trials, policy=settings.policy, seed=space.training.seed, store=settings.store,
        concurrency=concurrency,
        context=trial_context(settings, space, state.data.train_images, state.weights), num_classes=state.data.num_classes,
    )
    ledger = LedgerSearcher(searcher, settings.cap, sweep=settings.name, prior=prior, store=settings.store)
    scheduler = search_scheduler(settings, space.training, settings.store)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(ledger, max_concurrent=concurrency),
            scheduler=scheduler, num_samples=searcher.total_trials, reuse_actors=settings.reuse_actors,
        ),
        run_config=run_config(settings, "search", callback),
    )


def repeats_tuner(settings: SweepSettings, space: SearchSpace, state: SweepState, trainable: Any,
                  callback: SweepCallback) -> Any:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from pdsweep.sweep.ledger import LedgerSearcher, seeded_from
    from pdsweep.sweep.schedulers import InPlace
    from pdsweep.sweep.searcher import ListSearcher

    path = settings.store.experiment("repeats")
    if restorable(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    points = [spec.to_dict() for spec in repeat_specs(settings, space, state.data.train_images, state.weights)]
    if not points:
        return _NoTuner()
    spent = seeded_from(read_rows(settings.sweep_dir / RESULTS_FILE))  # the search's compute counts against the cap
    ledger = LedgerSearcher(ListSearcher(points, settings.store, space.training.objective), settings.cap, sweep=settings.name, store=settings.store, **spent)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(ledger, max_concurrent=settings.concurrency or slots(settings)),
            scheduler=InPlace(settings.store), num_samples=len(points), reuse_actors=settings.reuse_actors,
        ),
        run_config=run_config(settings, "repeats", callback),
    )


def repeat_specs(settings: SweepSettings, space: SearchSpace, train_images: int | None = None,
                 weights: Mapping[str, WeightFile] | None = None) -> list[TrialSpec]:
    """Each tier's ``settings.top_k`` best configs again, with seeds they have not trained with,
    until each has ``settings.repeats`` completed seeds."""
    rows = read_rows(settings.sweep_dir / RESULTS_FILE)
    built = report_or_none(settings.name, rows, top_k=settings.top_k)
    context = trial_context(settings, space, train_images, weights)
    specs = []
    for tier in built.tiers if built else ():
        for score in tier.top:
            same = [r for r in rows if r.budget_gflops == tier.budget_gflops and r.config == score.config]
            used = {r.seed for r in same}
            wanted = settings.repeats - len({r.seed for r in same if r.status == "completed"})
            seeds = [seed for seed in range(space.training.seed, space.training.seed + 10_000) if seed not in used]
            specs += [TrialSpec(score.config, tier.budget_gflops, "repeat", seed, context) for seed in seeds[: max(0, wanted)]]
    return specs


def restorable(path: str) -> bool:
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


def run_config(settings: SweepSettings, name: str, callback: SweepCallback) -> Any:
    from ray import tune

    return tune.RunConfig(
        name=name,
        storage_path=settings.store.storage_path,
        callbacks=[callback],
        verbose=2 if settings.verbose else 0,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
    )


def tune_trainable(settings: SweepSettings, space: SearchSpace, state: SweepState) -> Any:
    """The trainable with each trial's resources (imported here so the driver loads torch only
    when a sweep runs)."""
    from ray import tune

    from pdsweep.sweep.trainable import run_trial

    trainable = tune.with_parameters(run_trial, weights_cache=settings.weights_cache)  # resume may have moved it
    return tune.with_resources(trainable, resources_for(settings, space, state.data.worker_gpu_memory_gb))
