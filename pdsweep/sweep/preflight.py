"""The pre-flight: what a sweep will cost, printed before anything runs."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from pdsweep.cost import train_gflops
from pdsweep.space import Plan, SearchSpace
from pdsweep.sweep.sampler import BudgetSampler
from pdsweep.sweep.settings import DataProbe, SweepSettings

Print = Callable[[str], None]


def preflight(settings: SweepSettings, space: SearchSpace, plans: dict[float, Plan], data: DataProbe, err: Print) -> None:
    """What the sweep will cost, printed before it starts: feasible configs, trials, compute."""
    epochs = space.training.epochs
    images = data.train_images
    total = 0.0
    lines = []
    for gflops, tier in plans.items():
        feasible = [p.cost.train_gflops for p in tier.configs]
        if settings.search == "grid":
            sampler = BudgetSampler(space, tier.budget, settings.policy, data.num_classes)
            grid = sampler.grid()
            trials, per_trial = len(grid), statistics.fmean(train_gflops(c) for c in grid)
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
