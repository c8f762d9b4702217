"""What Ray Tune hands a trainable: one trial's :class:`TrialSpec`, as Tune's config dict.

Everything a trial needs is in it, so a worker on another node needs no route to the driver's
files except the dataset path. Tune keeps it as a plain dict (it saves trials as JSON and
shows their configs); :meth:`TrialSpec.to_dict` and :meth:`TrialSpec.from_dict` are the only
way in and out. The keys are those sweeps have used from the start, so trials Tune saved
before the version was recorded still load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from pdsweep._compat import restore_with_defaults
from pdsweep.config import Config
from pdsweep.cost import arrange, train_gflops
from pdsweep.errors import PdsweepError
from pdsweep.results.compute import trial_tflop
from pdsweep.space import TrainingSettings
from pdsweep.training.weights import WeightFile

# Metric names reported to Tune; the scheduler and the searcher read these.
METRIC = "val_accuracy"  # the default objective's per-epoch key (a sweep's own: TrainingSettings.objective)
TIME_ATTR = "epoch"
ROBUSTNESS_PREFIX = "robustness_"  # a result key per test-time keep rate: robustness_0.5
SPEC_VERSION = 6  # 1: trials saved before the version was recorded (the same keys); 2: before pretrained starts;
# 3: before checkpoint intervals (a trial of version <= 3 checkpoints every epoch); 4: before training.metric,
# eval_groups and class_weights; 5: before device_memory_gb (a trial's step as it is)

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
    finetune: TrainingSettings | None = None  # how pretrained trials train; None: as the others
    weights: Mapping[str, WeightFile] = field(default_factory=dict)  # model -> the weights it starts from
    weights_cache: str | None = None  # the Hugging Face cache on the workers; None: their default
    checkpoint_every_s: float = 0.0  # a checkpoint at the first epoch end this long after the last; 0: every epoch
    device_memory_gb: float | None = None  # the budget's memory cap: each step arranged to fit it; None: as it is

    def __setstate__(self, state: dict[str, Any]) -> None:  # pickled by an older pdsweep: new fields default
        restore_with_defaults(self, state)


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
        """The training settings of the trial's init, with its seed, and its step arranged to fit
        the budget's memory cap (:func:`pdsweep.cost.arrange`; without a cap, the device's free
        memory decides when it trains)."""
        context = self.context
        settings = replace(TrainingSettings.of(self.config.init, context.training, context.finetune), seed=self.seed)
        if context.device_memory_gb is None:
            return settings
        arranged = arrange(self.config, settings.step, context.device_memory_gb)
        return settings if arranged is None else settings.arranged(arranged)

    @property
    def weights(self) -> WeightFile | None:
        """The weights a pretrained trial starts from; None for a random start."""
        if self.config.init != "pretrained":
            return None
        try:
            return self.context.weights[self.config.model]
        except KeyError:
            raise PdsweepError(f"trial {self.config.name} starts pretrained but the sweep has no weights for "
                               f"{self.config.model}.") from None

    def to_dict(self) -> dict[str, Any]:
        context = self.context
        return {
            "schema_version": SPEC_VERSION, "config": self.config.to_dict(), "tier": self.tier, "phase": self.phase,
            "seed": self.seed, "training": asdict(context.training), "dataset": context.dataset,
            "split_seed": context.split_seed, "cache_dir": context.cache_dir, "starts_log": context.starts_log,
            **({"memory_cap_gb": context.memory_cap_gb} if context.memory_cap_gb is not None else {}),
            **({"train_images": context.train_images} if context.train_images is not None else {}),
            **({"finetune": asdict(context.finetune)} if context.finetune is not None else {}),
            **({"weights": {m: w.to_dict() for m, w in context.weights.items()}} if context.weights else {}),
            **({"weights_cache": context.weights_cache} if context.weights_cache else {}),
            **({"checkpoint_every_s": context.checkpoint_every_s} if context.checkpoint_every_s else {}),
            **({"device_memory_gb": context.device_memory_gb} if context.device_memory_gb is not None else {}),
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
            TrainingSettings(**values["finetune"]) if values.get("finetune") else None,
            {m: WeightFile.from_dict(w) for m, w in (values.get("weights") or {}).items()},
            values.get("weights_cache"), float(values.get("checkpoint_every_s", 0.0)), values.get("device_memory_gb"),
        )
        return cls(Config.from_dict(values["config"]), float(values["tier"]), values["phase"], int(values["seed"]), context)
