"""The pre-flight: what a sweep will cost, printed before anything runs."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping

from pdsweep.cost import train_gflops, turn_seconds
from pdsweep.errors import PdsweepError
from pdsweep.results.compute import ComputePlan, format_hours, trial_tflop
from pdsweep.space import Plan, SearchSpace, TrainingSettings
from pdsweep.sweep.estimate import Throughput, measure, parallel_slots
from pdsweep.sweep.sampler import BudgetSampler
from pdsweep.sweep.settings import DataProbe, SweepSettings
from pdsweep.training.weights import WeightFile

Print = Callable[[str], None]
SMALLER_START = "--space search_spaces/quickstart.yaml --budget-gflops 0.01"
DAY_HOURS = 24.0


def preflight(settings: SweepSettings, space: SearchSpace, plans: dict[float, Plan], data: DataProbe,
              err: Print, weights: Mapping[str, WeightFile] | None = None) -> tuple[ComputePlan, Throughput | None]:
    """What the sweep will cost, printed before it starts: how trials start and train (per init),
    feasible configs, trials, compute, and (unless ``settings.estimate`` is off) the wall time
    from a measured throughput. A compute cap below the cheapest trial is an error: no trial
    could run."""
    epochs = space.training.epochs
    images = data.train_images
    tiers: list[tuple[int, float]] = []  # (trials, mean train GFLOPs of a trial) per tier
    turns_s: list[float] = []  # per tier, the seconds its trials' member turns spend on copies (on a GPU)
    lines = []
    for gflops, tier in plans.items():
        feasible = [p.cost.train_gflops for p in tier.configs]
        sampler = BudgetSampler(space, tier.budget, settings.policy, data.num_classes)
        note = ""
        if settings.search == "grid":
            grid = sampler.grid()
            trials, per_trial = len(grid), statistics.fmean(train_gflops(c) for c in grid)
        else:
            trials, per_trial = settings.trials, statistics.fmean(feasible)
            if sampler.finite and len(sampler.candidates) < trials:  # a tier trains no config twice
                trials = len(sampler.candidates)
                note = f" (each config that fits once, not {settings.trials})"
        trials += (settings.repeats - 1) * min(settings.top_k, trials)
        tiers.append((trials, per_trial))
        turns_s.append(trials * epochs * statistics.fmean(turn_seconds(p.config, p.cost.setup) for p in tier.configs))
        lines.append(f"  tier {gflops:g} GFLOPs: {len(feasible)} of {tier.architectures} architectures fit; "
                     f"{trials} trials{note}; ~{_flops(trial_tflop(per_trial, images, epochs) * trials * 1e12)}"
                     + _arranged(tier))
    planned = sum(trial_tflop(g, images, epochs) * n for n, g in tiers)
    check_cap(settings, space, plans, data)
    err(f"sweep {settings.name!r}: space {space.name!r}, {settings.search} search, keep policy {settings.policy}, "
        f"{epochs} epochs on {images:,} images" + (f" of {data.train_groups:,} groups" if data.train_groups else "")
        + f" ({settings.dataset})")
    for line in init_lines(space, weights or {}, settings.scheduler):
        err(line)
    err(objective_line(space.training))
    err(stopping_line(settings, space.training))
    for line in lines:
        err(line)
    err(f"  estimated compute: ~{_flops(planned * 1e12)} (train GFLOPs x images x epochs x 3, before early stopping)")
    if settings.cap.any:
        caps = [f"{flag} {value:g}" for flag, value in
                (("--max-tflop", settings.max_tflop), ("--max-device-hours", settings.max_device_hours)) if value is not None]
        err(f"  cap: {', '.join(caps)}; no trial is issued that would pass it (running trials finish)")
    if not settings.estimate:
        err("  wall time: not estimated (--no-estimate)")
        return ComputePlan(planned), None
    configs = [p.config for tier in plans.values() for p in tier.configs]
    cheapest, dearest = min(configs, key=train_gflops), max(configs, key=train_gflops)
    throughput = measure(settings, space, cheapest, dearest)
    total_trials = sum(n for n, _ in tiers)
    slots = parallel_slots(settings, total_trials)
    seconds = sum(n * throughput.seconds_per_image(g) * images * epochs for n, g in tiers) / slots
    if throughput.device == "cuda":
        seconds += sum(turns_s) / slots
    hours = seconds / 3600
    err(f"  estimated wall time: ~{format_hours(hours)} on {slots} {throughput.device.upper()} slot(s) at "
        f"{_rate(1 / throughput.high_seconds)} to {_rate(1 / throughput.low_seconds)} images/s per trial (measured; "
        "before early stopping)")
    if hours > DAY_HOURS and throughput.device == "cpu":
        err(f"  that is {format_hours(hours)} on this machine's CPUs, which have no GPU; start with the smaller space: "
            f"`pdsweep run {SMALLER_START}`")
    return ComputePlan(planned, hours), throughput


def _arranged(tier: Plan) -> str:
    """What fits the memory cap only as arranged (:func:`pdsweep.cost.arrange`), if any does."""
    turns = sum(1 for p in tier.configs if p.cost.setup.member_turns and p.config.ensemble_size > 1)
    micro = sum(1 for p in tier.configs if p.cost.setup.accumulates)
    if not turns and not micro:
        return ""
    parts = ([f"{turns} with the members in turns (their copies to and from the GPU are in the wall time)"] if turns else []) + (
        [f"{micro} in micro-batches (slower per image on a GPU: bench/step_time.py)"] if micro else [])
    return f"; to fit {tier.budget.memory_gb:g} GB: {', '.join(parts)}"


def objective_line(training: TrainingSettings) -> str:
    """What the sweep optimises and how it is scored (see :mod:`pdsweep.objective`)."""
    objective = training.objective
    over = "each group scored by the mean of its images' probabilities" if training.eval_groups == "mean" else "over images"
    weights = "; training loss weighted inverse to class frequency" if training.class_weights == "balanced" else ""
    return (f"  objective: validation {objective.label} ({'minimised' if objective.minimised else 'maximised'}), "
            f"{over}{weights}; every metric is recorded")


def stopping_line(settings: SweepSettings, training: TrainingSettings) -> str:
    """When the sweep may stop a trial early (see :mod:`pdsweep.sweep.schedulers`)."""
    from pdsweep.sweep.schedulers import first_rung

    if settings.scheduler == "none":
        return "  early stopping: none (every trial trains to its last epoch)"
    first = first_rung(training.epochs, training.warmup_epochs, settings.grace_period)
    if first >= training.epochs:
        return f"  early stopping: none (its first rung, epoch {first}, is not before the last of {training.epochs})"
    return (f"  early stopping: ASHA per tier from epoch {first} of {training.epochs} (after {training.warmup_epochs} "
            f"warm-up), reduction factor {settings.reduction_factor:g}; a trial is compared only with trials at its keep "
            "rate or lower")


def init_lines(space: SearchSpace, weights: Mapping[str, WeightFile], scheduler: str = "none") -> list[str]:
    """How the space's trials start and train: each init's settings, and each model's weights."""
    inits = space.inits
    if inits == ("random",):
        return []
    lines = [f"  init: {', '.join(inits)}"]
    for model, found in weights.items():
        lines.append(f"    {model} weights: {found.source} ({found.size_bytes / 1e6:.1f} MB, sha256 {found.sha256[:12]}, "
                     f"{found.depth} blocks, width {found.embed_dim})")
        deeper = sorted({c.blocks for c in space.architectures() if c.model == model and c.blocks > found.depth})
        if deeper:
            lines.append(f"    {model} at depth {', '.join(map(str, deeper))}: blocks after {found.depth} start random")
    for init in inits:
        lines.append(f"    {init} trials train with: {_training(space.training_for(init))}")
    if len(inits) > 1 and scheduler == "asha":
        lines.append("    note: ASHA stops slow starters (random inits, mostly) early; the report pairs pretrained and "
                     "random only where both ran every epoch: --scheduler none compares every config")
    return lines


def _training(settings: TrainingSettings) -> str:
    return (f"{settings.optimizer} lr {settings.lr:g}, weight decay {settings.weight_decay:g}, "
            f"{settings.warmup_epochs} warm-up epoch(s), label smoothing {settings.label_smoothing:g}, "
            f"grad clip {settings.grad_clip if settings.grad_clip is not None else 'none'}, "
            f"augment {'on' if settings.augment else 'off'}")


def check_cap(settings: SweepSettings, space: SearchSpace, plans: dict[float, Plan], data: DataProbe) -> None:
    """A ``--max-tflop`` below the cheapest trial is an error: no trial could run."""
    images, epochs = data.train_images, space.training.epochs
    cheapest = min(p.cost.train_gflops for tier in plans.values() for p in tier.configs)
    smallest = trial_tflop(cheapest, images, epochs)
    if settings.max_tflop is not None and settings.max_tflop < smallest:
        raise PdsweepError(f"--max-tflop {settings.max_tflop:g} is below the cheapest trial's {smallest:.3g} TFLOP "
                           f"({epochs} epochs on {images:,} images): no trial could run; raise it.")


def _rate(images_per_s: float) -> str:
    return f"{images_per_s:,.0f}" if images_per_s >= 100 else f"{images_per_s:.3g}"


def _flops(value: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP"
