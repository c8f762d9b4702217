"""What a sweep was asked (:class:`SweepSettings`) and where it stands (:class:`SweepState`).

``sweep.json`` holds the state: the settings, the space file's text, what the dataset probe
found, the phase, and the MLflow ids, so ``pdsweep resume`` repeats the sweep exactly.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pdsweep.errors import PdsweepError
from pdsweep.paths import DEFAULT_RUNS_DIR
from pdsweep.results.compute import ComputeCap, ComputePlan
from pdsweep.results import TOP_K
from pdsweep.results.tracking import TrackingIds
from pdsweep.space import KeepPolicy
from pdsweep.space.overrides import parse_overrides
from pdsweep.sweep.sampler import SearchKind
from pdsweep.sweep.store import SWEEP_FILE, SweepStore
from pdsweep.training.weights import WeightFile
from pdsweep.validate import is_number, is_positive_int

SchedulerName = Literal["asha", "none"]
Phase = Literal["search", "repeats", "done"]
STATE_VERSION = 4  # 1: sweep.json written before the version was recorded; 2: before the compute plan; 3: before weights


@dataclass(frozen=True)
class SweepSettings:
    """Everything ``pdsweep run`` was asked; saved in ``sweep.json`` so ``resume`` repeats it."""

    name: str
    space: str = "paper"
    overrides: tuple[str, ...] = ()  # --set KEY.PATH=VALUE on the space file, in order
    budgets: tuple[float, ...] = ()  # none: a space of listed configs, under its dearest config's cost (an axes space needs one)
    memory_gb: float | None = None
    policy: KeepPolicy = "fill"
    search: SearchKind = "tpe"
    trials: int = 8
    concurrency: int | None = None  # None: as many as the cluster's resources allow
    scheduler: SchedulerName | None = None  # None: asha, or none for a space of listed configs (a recipe)
    grace_period: int | None = None  # None: a quarter of the epochs; never within warm-up (schedulers.first_rung)
    reduction_factor: float = 2.0
    repeats: int = 1
    top_k: int | None = None  # configs per tier that --repeats re-trains; None: 3 (a recipe: every listed config)
    max_tflop: float | None = None  # no trial is issued that would take the sweep's compute past it
    max_device_hours: float | None = None  # ... or its device-hours
    estimate: bool = True  # measure a few training steps in the pre-flight, for the wall-time estimate
    dataset: str = "synthetic"
    runs_dir: str = DEFAULT_RUNS_DIR
    address: str | None = None
    cpus_per_trial: int = 1
    gpu_memory_gb: float | None = None
    max_failures: int = 2  # retries of a trial whose worker or node was lost (from its last checkpoint)
    resource_timeout_s: float = 600.0  # no trial running and some waiting for a node this long: the sweep stops (resumable)
    # A trial checkpoints at the first epoch end this long after its last checkpoint (0: every epoch).
    # Each checkpoint makes Ray Tune save the whole experiment's state (with num_to_keep, see
    # tuners.run_config), which grows with the trials: per epoch, that bounds a long sweep's driver
    # by the epoch rate (bench/scale.py); a retried or resumed trial redoes at most this much.
    checkpoint_every_s: float = 60.0
    trial_memory_cap_gb: float | None = None  # the memory a trial's process may add on a CPU worker
    cache_dir: str | None = None
    weights_cache: str | None = None  # the Hugging Face cache pretrained weights are read from; None: HF's default
    verbose: bool = False
    mlflow_uri: str | None = None  # None: SQLite at RUNS_DIR/mlflow.db
    experiment: str | None = None  # None: the space's name
    reuse_actors: bool = True  # a fresh actor per trial costs ~2.5 s here (bench/sweep_overhead.py)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise PdsweepError(f"sweep name {self.name!r} must be letters, digits, '.', '_' or '-'.")
        for name in ("trials", "repeats", "top_k", "cpus_per_trial"):
            if not is_positive_int(getattr(self, name)) and not (name == "top_k" and self.top_k is None):
                raise PdsweepError(f"`--{name.replace('_', '-')}` must be a positive integer, got {getattr(self, name)!r}.")
        if self.grace_period is not None and not is_positive_int(self.grace_period):
            raise PdsweepError(f"`--grace-period` must be a positive integer, got {self.grace_period!r}.")
        if self.concurrency is not None and not is_positive_int(self.concurrency):
            raise PdsweepError(f"`--concurrency` must be a positive integer, got {self.concurrency!r}.")
        if not self.reduction_factor > 1:
            raise PdsweepError(f"`--reduction-factor > 1` must hold, got {self.reduction_factor!r}.")
        if self.trial_memory_cap_gb is not None and not self.trial_memory_cap_gb > 0:
            raise PdsweepError(f"`--trial-memory-cap-gb > 0` must hold, got {self.trial_memory_cap_gb!r}.")
        for name in ("max_tflop", "max_device_hours"):
            value = getattr(self, name)
            if value is not None and not (is_number(value) and value > 0):
                raise PdsweepError(f"`--{name.replace('_', '-')}` must be a positive number, got {value!r}.")
        if not (is_number(self.checkpoint_every_s) and 0 <= self.checkpoint_every_s < float("inf")):
            raise PdsweepError(f"`--checkpoint-every-s` must be a number of seconds >= 0, got {self.checkpoint_every_s!r}.")
        if not (is_number(self.resource_timeout_s) and 0 < self.resource_timeout_s < float("inf")):
            raise PdsweepError(f"`--resource-timeout` must be a positive number of minutes, got {self.resource_timeout_s!r} s.")
        if self.max_failures < 0:
            raise PdsweepError(f"`--max-failures >= 0` must hold, got {self.max_failures!r}.")
        parse_overrides(self.overrides)  # each a KEY.PATH=VALUE; what it sets is checked with the space

    @property
    def store(self) -> SweepStore:
        return SweepStore(self.runs_dir, self.name)

    @property
    def cap(self) -> ComputeCap:
        return ComputeCap(self.max_tflop, self.max_device_hours)

    def absolute(self) -> SweepSettings:
        """Local paths made absolute: Ray runs each trial in its own working directory."""
        from pdsweep.training.data import DatasetSpec

        def local(path: str) -> str:
            return path if "://" in path else str(Path(path).expanduser().resolve())

        return replace(self, runs_dir=local(self.runs_dir), dataset=str(DatasetSpec.parse(self.dataset).absolute()),
                       cache_dir=local(self.cache_dir) if self.cache_dir else None,
                       weights_cache=local(self.weights_cache) if self.weights_cache else None)

    @property
    def sweep_dir(self) -> Path:
        """The local folder of the driver's files (a mirror when ``runs_dir`` is a URI)."""
        return self.store.local_dir


def default_name() -> str:
    return time.strftime("sweep-%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class DataProbe:
    """What a look at the dataset (where the trials run) found before the sweep started."""

    num_classes: int
    train_images: int
    worker_gpu_memory_gb: float | None = None  # a GPU node's memory, when the probe ran on one
    train_groups: int | None = None  # the groups (patients, exams) of the training split; None: no groups

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class SweepState:
    """``sweep.json``: everything ``pdsweep resume`` needs to continue a sweep."""

    settings: SweepSettings
    space_text: str  # the space file as it was when the sweep started
    data: DataProbe
    phase: Phase = "search"
    mlflow: TrackingIds | None = None
    compute: ComputePlan | None = None  # None: a sweep started before the compute ledger
    weights: Mapping[str, WeightFile] = field(default_factory=dict)  # model -> the weights its pretrained trials load

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": STATE_VERSION, "settings": asdict(self.settings), "space_text": self.space_text,
            **self.data.to_dict(), "phase": self.phase, **({"mlflow": self.mlflow.to_dict()} if self.mlflow else {}),
            **({"compute": self.compute.to_dict()} if self.compute else {}),
            **({"weights": {m: w.to_dict() for m, w in self.weights.items()}} if self.weights else {}),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, runs_dir: str | None = None) -> SweepState:
        """The state of a ``sweep.json`` (any version so far); ``runs_dir``: where it is now."""
        version = values.get("schema_version", 1)
        if not isinstance(version, int) or version > STATE_VERSION:
            raise PdsweepError(f"sweep.json has schema version {version!r}, newer than this pdsweep reads "
                               f"({STATE_VERSION}); upgrade pdsweep to continue this sweep.")
        missing = [key for key in ("settings", "space_text", "phase", "num_classes") if key not in values]
        if missing:
            raise KeyError(missing[0])
        saved = values["settings"]
        settings = SweepSettings(**{**saved, "budgets": tuple(saved["budgets"]), "overrides": tuple(saved.get("overrides", ())),
                                    "top_k": saved.get("top_k") or TOP_K,  # saved before it was: the default then
                                    "runs_dir": runs_dir or saved["runs_dir"]})
        data = DataProbe(values["num_classes"], values.get("train_images", 0), values.get("worker_gpu_memory_gb"),
                         values.get("train_groups"))
        mlflow = TrackingIds.from_dict(values["mlflow"]) if values.get("mlflow") else None
        compute = ComputePlan.from_dict(values["compute"]) if values.get("compute") else None
        weights = {m: WeightFile.from_dict(w) for m, w in (values.get("weights") or {}).items()}
        return cls(settings, values["space_text"], data, values["phase"], mlflow, compute, weights)

    def write(self) -> None:
        """Atomically, then published to a remote runs dir."""
        store = self.settings.store
        partial = store.local_dir / f".{SWEEP_FILE}.partial"
        try:
            partial.write_text(json.dumps(self.to_dict(), indent=2))
            os.replace(partial, store.local_dir / SWEEP_FILE)
        finally:
            partial.unlink(missing_ok=True)
        store.publish(SWEEP_FILE)


def read_state(store: SweepStore, shown: str | None = None) -> SweepState:
    """The state of the sweep in ``store`` (fetched first when it lives at a URI); ``shown``: the
    runs dir as the user gave it, for the message when there is no such sweep."""
    path = store.require(shown)
    try:
        values = json.loads(path.read_text())
        if not isinstance(values, dict):
            raise TypeError(f"a JSON object was expected, not {type(values).__name__}")
        return SweepState.from_dict(values, runs_dir=store.runs_dir)
    except PdsweepError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise PdsweepError(f"{path} is damaged ({type(error).__name__}: {error}); "
                           "it cannot be resumed, start a new sweep.") from None
