"""What Ray Tune hands a trainable: one trial's :class:`TrialSpec`, as Tune's config dict.

Everything a trial needs is in it, so a worker on another node needs no route to the driver's
files except the dataset path. Tune keeps it as a plain dict (it saves trials as JSON and
shows their configs); :meth:`TrialSpec.to_dict` and :meth:`TrialSpec.from_dict` are the only
way in and out. The keys are those sweeps have used from the start, so trials Tune saved
before the version was recorded still load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from pdsweep.config import Config
from pdsweep.cost import train_gflops
from pdsweep.errors import PdsweepError
from pdsweep.results.compute import trial_tflop
from pdsweep.space import TrainingSettings

# Metric names reported to Tune; the scheduler and the searcher read these.
METRIC = "val_accuracy"
TIME_ATTR = "epoch"
SPEC_VERSION = 2  # 1: trials saved before the version was recorded (the same keys)

Phase = Literal["search", "repeat"]


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares: how it trains and where its data is."""

    training: TrainingSettings
    dataset: str
    split_seed: int  # the data split's seed: the space's, whatever the trial's own seed
    cache_dir: str | None = None
    starts_log: str | None = None  # one line per trial start, where workers can write it
    memory_cap_gb: float | None = None  # the memory a trial's process may add (CPU workers); None: no cap
    train_images: int | None = None  # the training split's size, for the compute ledger; None: before it


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its config, its budget tier, its phase and seed, and the shared context."""

    config: Config
    tier: float  # the budget tier's GFLOPs
    phase: Phase
    seed: int
    context: TrialContext

    @property
    def planned_tflop(self) -> float:
        """The trial's training compute at every epoch (the ledger counts a running trial so)."""
        return trial_tflop(train_gflops(self.config), self.context.train_images or 0, self.context.training.epochs)

    @property
    def settings(self) -> TrainingSettings:
        """The training settings with this trial's seed."""
        return replace(self.context.training, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        context = self.context
        return {
            "schema_version": SPEC_VERSION, "config": self.config.to_dict(), "tier": self.tier, "phase": self.phase,
            "seed": self.seed, "training": asdict(context.training), "dataset": context.dataset,
            "split_seed": context.split_seed, "cache_dir": context.cache_dir, "starts_log": context.starts_log,
            **({"memory_cap_gb": context.memory_cap_gb} if context.memory_cap_gb is not None else {}),
            **({"train_images": context.train_images} if context.train_images is not None else {}),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialSpec:
        version = values.get("schema_version", 1)
        if version > SPEC_VERSION:
            raise PdsweepError(f"a trial of schema version {version} is newer than this pdsweep reads ({SPEC_VERSION}); "
                               "upgrade pdsweep on every node.")
        context = TrialContext(
            TrainingSettings(**values["training"]), values["dataset"], values["split_seed"],
            values.get("cache_dir"), values.get("starts_log"), values.get("memory_cap_gb"), values.get("train_images"),
        )
        return cls(Config.from_dict(values["config"]), float(values["tier"]), values["phase"], int(values["seed"]), context)
