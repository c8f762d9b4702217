"""A search space: the axes a sweep searches and how its trials train."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pdsweep._compat import restore_with_defaults
from pdsweep.config import Config, Init, architecture_axes
from pdsweep.cost import KeepRates, StepSetup
from pdsweep.errors import PdsweepError
from pdsweep.presets import PRESETS, SwinShape, get_preset
from pdsweep.space.axes import Axis, Categorical, FloatRange, keep_rates
from pdsweep.space.listed import ListedConfig, check_listed
from pdsweep.space.settings import TrainingSettings
from pdsweep.space.weights import WeightSource
from pdsweep.windows import names_rate, rates_text, rates_within, resolution_problem, resolutions_text, window_keep_nearest

# A space larger than this is a typo (a range with a tiny step), not a sweep.
MAX_VALUES_PER_AXIS = 10_000
MAX_ARCHITECTURES = 100_000


@dataclass(frozen=True)
class SearchSpace:
    """The axes a sweep searches and how its trials train.

    ``weights`` maps a model preset to its pretrained weights. Without an ``init`` axis, a model
    with weights starts pretrained and one without starts random. ``finetune`` is how pretrained
    trials train (the ``training`` settings with the ``finetune`` section's on top); random
    ones train by ``training``. Epochs, batch size, precision and seed are the same for both,
    so pretrained and random configs compare at equal cost.

    ``configs``, when given, are the space's only points, run as listed
    (:mod:`pdsweep.space.listed`); ``axes`` then holds the values they span.
    """

    name: str
    axes: Mapping[str, Axis]
    training: TrainingSettings = field(default_factory=TrainingSettings)
    description: str = ""
    source: str = "<memory>"
    weights: Mapping[str, WeightSource] = field(default_factory=dict)
    finetune: TrainingSettings | None = None
    configs: tuple[ListedConfig, ...] = ()

    def __post_init__(self) -> None:
        swins = [PRESETS.get(str(m)) for m in self.axes["model"].values()] if "model" in self.axes else []
        if "patch_size" not in self.axes and swins and all(isinstance(p, SwinShape) for p in swins):
            # a space of Swins only: the patch size is theirs (a space is canonical, as a config is)
            object.__setattr__(self, "axes", {**self.axes, "patch_size": Categorical((swins[0].patch_size,))})  # type: ignore[union-attr]
        for axis in REQUIRED_AXES:
            if axis not in self.axes:
                raise PdsweepError(f"axes.{axis}: is missing; give a value, a list, or {{low: ..., high: ...}}.")
        self._check_weights()
        if self.configs:
            check_listed(self.configs)
            return  # each listed config checked itself; the axes only say what they span
        architectures = math.prod(len(self.axes[name]) for name in architecture_axes() if name in self.axes)
        if architectures > MAX_ARCHITECTURES:
            raise PdsweepError(
                f"axes: {architectures:,} architectures is more than {MAX_ARCHITECTURES:,}; "
                "use fewer values or larger range steps."
            )
        resolutions = self.axes["resolution"].values()
        patch_sizes = self.axes["patch_size"].values()
        self._check_swin(resolutions)
        vits = [m for m in self.models if get_preset(m).family == "vit"]
        bad = [f"{r}/{p}" for r in resolutions for p in patch_sizes if int(r) % int(p)] if vits else []
        if bad:
            raise PdsweepError(
                f"axes: every patch size must divide every resolution, but {', '.join(bad)} do not; "
                "drop those values or split the space into files."
            )

    @property
    def models(self) -> list[str]:
        return [str(m) for m in self.axes["model"].values()]

    def _check_swin(self, resolutions: list[Any]) -> None:
        """Every resolution and some keep rate must suit each Swin of the space (its windows)."""
        low, high = self.keep_rate_bounds
        for model in self.models:
            preset = get_preset(model)
            if not isinstance(preset, SwinShape):
                continue
            for resolution in resolutions:
                problem = resolution_problem(preset, int(resolution))
                if problem:
                    raise PdsweepError(f"axes.resolution: {model} cannot train at {resolution} px ({problem}); use "
                                       f"{resolutions_text(preset)}, or split the space into files.")
            depths = self.axes["depth"].values() if "depth" in self.axes else []
            shallow = [d for d in depths if d is not None and int(d) < preset.min_depth]
            if shallow:
                raise PdsweepError(f"axes.depth: {model} needs depth >= {preset.min_depth} (its stages hold "
                                   f"{'+'.join(map(str, preset.depths))} blocks and depth changes the third), but the "
                                   f"space gives {shallow[0]}; drop it or split the space into files.")
            if not rates_within(low, high, preset.window):
                raise PdsweepError(f"axes.keep_rate: {model} keeps (n/{preset.window})^2 of its tokens "
                                   f"({rates_text(preset.window)}), and none lies in [{low:g}, {high:g}]; widen "
                                   "the keep rates to include one.")

    @property
    def notes(self) -> tuple[str, ...]:
        """What the space means for its Swins: the axes that do not apply to them, the keep rates a
        window takes of the space's, and the test-time rates its robustness curve measures."""
        if self.configs:
            return self._test_keep_notes(dict.fromkeys(e.config.model for e in self.configs))
        notes = []
        low, high = self.keep_rate_bounds
        for model in self.models:
            preset = get_preset(model)
            if not isinstance(preset, SwinShape):
                continue
            ignored = [name for name, own in (("patch_size", preset.patch_size), ("sampling", "random"))
                       if name in self.axes and set(self.axes[name].values()) != {own}]
            if ignored:
                notes.append(f"{' and '.join(ignored)} {'do' if len(ignored) > 1 else 'does'} not apply to {model} (patch {preset.patch_size}; rows and "
                             "columns kept per window): ignored for it.")
            rates = rates_within(low, high, preset.window)
            notes.append(f"{model} keeps (n/{preset.window})^2 of its tokens, so within the space's keep rates "
                         f"[{low:g}, {high:g}] it takes {', '.join(f'{r:.4g}' for r in reversed(rates))}.")
        return (*notes, *self._test_keep_notes(self.models))

    def _test_keep_notes(self, models: Iterable[str]) -> tuple[str, ...]:
        """The test-time keep rates each Swin's robustness curve measures: the window rates
        nearest ``training.test_keep_rates`` (rates that meet at one rate give one point)."""
        notes = []
        for model in models:
            preset = get_preset(model)
            if not isinstance(preset, SwinShape):
                continue
            W = preset.window
            asked = [r for r in self.training.test_keep_rates if r < 1]
            kept = {r: (window_keep_nearest(r, W) / W) ** 2 for r in asked}
            moved = [f"{r:g} -> {k:.4g}" for r, k in kept.items() if not names_rate(r, k)]
            if not moved:
                continue
            merged = len(set(kept.values())) < len(kept)
            notes.append(f"{model}'s robustness curve measures the window rates nearest training.test_keep_rates: "
                         f"{', '.join(moved)}" + ("; rates that meet give one point." if merged else "."))
        return tuple(notes)

    def __setstate__(self, state: dict[str, Any]) -> None:  # pickled by an older pdsweep: new fields default
        restore_with_defaults(self, state)

    def _check_weights(self) -> None:
        models = [str(m) for m in self.axes["model"].values()]
        for model in self.weights:
            if model not in models:
                raise PdsweepError(f"weights.{model}: the space has no model {model!r} (axes.model: "
                                   f"{', '.join(models)}); drop the entry or add the model.")
        if self.configs:
            bare = list(dict.fromkeys(e.config.model for e in self.configs
                                      if e.config.init == "pretrained" and e.config.model not in self.weights))
        elif "init" in self.axes and "pretrained" in self.axes["init"].values():
            bare = [m for m in models if m not in self.weights]
        else:
            bare = []
        if bare:
            where = "configs" if self.configs else "axes.init"
            raise PdsweepError(
                f"{where}: pretrained needs weights for every model, but {', '.join(bare)} has none; list a "
                f"source under weights.{bare[0]} (a hub name such as timm/deit_tiny_patch16_224.fb_in1k or a "
                f"local .safetensors file), or drop pretrained from {where}."
            )
        if self.finetune is not None and not self.starts_pretrained:
            raise PdsweepError("finetune: applies to pretrained trials, but no trial of this space starts pretrained; "
                               "list weights for a model, or drop the finetune section.")
        if self.finetune is not None:
            shared = [k for k in SHARED_SETTINGS if getattr(self.finetune, k) != getattr(self.training, k)]
            if shared:
                raise PdsweepError(
                    f"finetune.{shared[0]}: is shared by pretrained and random trials (they compare at equal cost "
                    f"and memory); set it in the training section instead."
                )

    @property
    def inits(self) -> tuple[Init, ...]:
        """The inits some trial of the space starts from."""
        if "init" in self.axes:
            return tuple(self.axes["init"].values())  # type: ignore[return-value]
        return tuple(sorted({self.init_for(str(m)) for m in self.axes["model"].values()}, reverse=True))  # type: ignore[arg-type]

    @property
    def starts_pretrained(self) -> bool:
        return "pretrained" in self.inits

    def init_for(self, model: str) -> Init:
        """The init of ``model``'s trials when the space has no ``init`` axis."""
        return "pretrained" if model in self.weights else "random"

    def complete(self, values: dict[str, Any]) -> dict[str, Any]:
        """An architecture's axis values with its init filled in when the space has no init axis."""
        return values if "init" in values else {**values, "init": self.init_for(values["model"])}

    def training_for(self, init: str) -> TrainingSettings:
        """How a trial of ``init`` trains."""
        return TrainingSettings.of(init, self.training, self.finetune)

    def step_for(self, config: Config) -> StepSetup:
        """What the cost model needs of ``config``'s training: batch size, precision, optimizer."""
        return self.training_for(config.init).step

    @property
    def keep_rate(self) -> Axis:
        return self.axes["keep_rate"]

    @property
    def keep_rates(self) -> KeepRates:
        """The keep rates the space allows, as the feasibility search takes them."""
        return keep_rates(self.keep_rate)

    @property
    def keep_rate_bounds(self) -> tuple[float, float]:
        """The lowest and highest keep rate the space allows (a stepped range: its ends)."""
        axis = self.keep_rate
        if isinstance(axis, FloatRange):
            return axis.low, axis.high
        return self.keep_rates.low, self.keep_rates.high

    def listed(self, num_classes: int = 10) -> list[Config]:
        """The listed configs (``configs``), for a dataset of ``num_classes``."""
        return [entry.for_classes(num_classes) for entry in self.configs]

    def architectures(self, num_classes: int = 10) -> list[Config]:
        """Every combination of the axes other than the keep rate, at the highest keep rate; the
        listed configs, as listed, when the space lists them.

        Under keep mode uniform, the drawn range starts at the space's lowest keep rate.
        """
        if self.configs:
            return self.listed(num_classes)
        names = [name for name in architecture_axes() if name in self.axes]
        value_lists = [self.axes[name].values() for name in names]
        low, high = self.keep_rate_bounds
        configs = []
        for values in itertools.product(*value_lists):
            axes = self.complete(dict(zip(names, values)))
            uniform_low = low if axes.get("keep_mode") == "uniform" else None
            configs.append(Config(keep_rate=high, keep_range_low=uniform_low, num_classes=num_classes, **axes))  # type: ignore[arg-type]
        return list(dict.fromkeys(configs))  # a Swin ignores patch size and sampling: one config for all


REQUIRED_AXES = ("model", "resolution", "patch_size", "keep_rate")  # patch_size: not for a space of Swins only
# Training settings a finetune section may not change: pretrained and random trials share them.
SHARED_SETTINGS = ("epochs", "batch_size", "precision", "seed", "attention", "test_keep_rates")
DEFAULT_AXES: dict[str, Axis] = {
    "ensemble_size": Categorical((1,)),
    "sampling": Categorical(("random",)),
    "keep_mode": Categorical(("fixed",)),
}
