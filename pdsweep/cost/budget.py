"""The cost of a config (what the budget caps) and the budget itself."""

from __future__ import annotations

from dataclasses import dataclass

from pdsweep.config import Config
from pdsweep.cost.arrangement import arrange, loosest
from pdsweep.cost.flops import inference_gflops, train_gflops
from pdsweep.cost.memory import MemoryEstimate, memory
from pdsweep.cost.setup import StepSetup
from pdsweep.errors import PdsweepError
from pdsweep.validate import is_number


@dataclass(frozen=True)
class Cost:
    """What one config costs to train: the numbers the budget caps and the planner prints."""

    config: Config
    train_gflops: float
    inference_gflops: float
    memory: MemoryEstimate
    setup: StepSetup = StepSetup()  # the step as arranged to fit (:func:`pdsweep.cost.arrange`)

    @property
    def memory_gb(self) -> float:
        return self.memory.gb


def estimate(config: Config, setup: StepSetup = StepSetup(), memory_gb: float | None = None) -> Cost:
    """Train and inference GFLOPs and peak memory of ``config`` under ``setup``, its step arranged
    to fit ``memory_gb`` where ``setup`` leaves that open (when nothing fits: the arrangement that
    needs the least, so the cost says by how much)."""
    arranged = arrange(config, setup, memory_gb) or loosest(setup, config.ensemble_size)
    return Cost(
        config=config,
        train_gflops=train_gflops(config),
        inference_gflops=inference_gflops(config),
        memory=memory(config, arranged),
        setup=arranged,
    )


@dataclass(frozen=True)
class Budget:
    """A cap on train GFLOPs per image and, optionally, on peak training memory in GB."""

    gflops: float
    memory_gb: float | None = None

    def __post_init__(self) -> None:
        if not (is_number(self.gflops) and self.gflops > 0):
            raise PdsweepError(f"`budget gflops > 0` (and finite) must hold, but got {self.gflops!r}.")
        if self.memory_gb is not None and not (is_number(self.memory_gb) and self.memory_gb > 0):
            raise PdsweepError(f"`budget memory_gb > 0` (and finite) must hold, but got {self.memory_gb!r}.")

    def admits(self, cost: Cost) -> bool:
        return cost.train_gflops <= self.gflops and (
            self.memory_gb is None or cost.memory_gb <= self.memory_gb
        )

    def __str__(self) -> str:
        memory = f" and {self.memory_gb:g} GB" if self.memory_gb is not None else ""
        return f"{self.gflops:g} GFLOPs{memory}"
