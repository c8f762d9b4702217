"""The pre-flight's wall-time estimate, from a measured throughput.

A few training steps (:func:`pdsweep.training.throughput.images_per_second`, about a second
each) of the cheapest and the dearest feasible config, where a trial would run: in the driver
with a local Ray, as a Ray task placed like a trial on a cluster. Seconds per image are taken
as linear in train GFLOPs between the two, and a sweep's wall time is its trials' epochs at
that rate, spread over the slots that train side by side (the GPUs of a GPU cluster, whose
shares split one GPU's throughput; else the concurrent CPU trials). Early stopping only
shortens it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pdsweep.config import Config
from pdsweep.space import SearchSpace

if TYPE_CHECKING:
    from pdsweep.sweep.settings import SweepSettings

MEASURE_S = 1.0  # of steps per measured config


@dataclass(frozen=True)
class Throughput:
    """Seconds per training image at the cheapest and the dearest feasible config (by train GFLOPs)."""

    low_gflops: float
    low_seconds: float
    high_gflops: float
    high_seconds: float
    device: Literal["cpu", "cuda"]
    devices_per_trial: float  # what one measured trial held: its CPUs, or one GPU

    def seconds_per_image(self, gflops: float) -> float:
        if self.high_gflops <= self.low_gflops:
            return self.high_seconds
        slope = (self.high_seconds - self.low_seconds) / (self.high_gflops - self.low_gflops)
        return max(self.low_seconds + slope * (gflops - self.low_gflops), min(self.low_seconds, self.high_seconds))


def measure(settings: SweepSettings, space: SearchSpace, cheapest: Config, dearest: Config) -> Throughput:
    """The throughput of ``cheapest`` and ``dearest``, measured where the trials will run."""
    if settings.address or os.environ.get("RAY_ADDRESS"):
        import ray

        gpus = ray.cluster_resources().get("GPU", 0)
        options = {"num_cpus": settings.cpus_per_trial, "num_gpus": 1 if gpus else 0}
        return ray.get(ray.remote(**options)(_measure).remote(space, cheapest, dearest, settings.cpus_per_trial))
    return _measure(space, cheapest, dearest, settings.cpus_per_trial)


def _measure(space: SearchSpace, cheapest: Config, dearest: Config, cpus: int) -> Throughput:
    import torch

    from pdsweep.cost import train_gflops
    from pdsweep.training.throughput import images_per_second

    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(cpus)  # a trial trains on its own CPUs only
    try:
        low, high = (1 / images_per_second(c, space.step_for(c), device=device, seconds=MEASURE_S) for c in (cheapest, dearest))
    finally:
        torch.set_num_threads(threads)
    return Throughput(train_gflops(cheapest), low, train_gflops(dearest), high, device,
                      float(cpus) if device == "cpu" else 1.0)


def parallel_slots(settings: SweepSettings, trials: int) -> int:
    """How many trials train side by side, in throughput: a GPU's shares split its throughput."""
    import ray

    from pdsweep.sweep.cluster import slots

    gpus = int(ray.cluster_resources().get("GPU", 0))
    available = max(1, gpus) if gpus else slots(settings)
    return max(1, min(available, settings.concurrency or available, trials))
