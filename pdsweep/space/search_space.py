"""A search space: the axes a sweep searches and how its trials train."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from pdsweep.config import Config, architecture_axes
from pdsweep.cost import KeepRates
from pdsweep.errors import PdsweepError
from pdsweep.space.axes import Axis, Categorical, FloatRange, keep_rates
from pdsweep.space.settings import TrainingSettings

# A space larger than this is a typo (a range with a tiny step), not a sweep.
MAX_VALUES_PER_AXIS = 10_000
MAX_ARCHITECTURES = 100_000


@dataclass(frozen=True)
class SearchSpace:
    """The axes a sweep searches and how its trials train."""

    name: str
    axes: Mapping[str, Axis]
    training: TrainingSettings = field(default_factory=TrainingSettings)
    description: str = ""
    source: str = "<memory>"

    def __post_init__(self) -> None:
        for axis in REQUIRED_AXES:
            if axis not in self.axes:
                raise PdsweepError(f"axes.{axis}: is missing; give a value, a list, or {{low: ..., high: ...}}.")
        architectures = math.prod(len(self.axes[name]) for name in architecture_axes() if name in self.axes)
        if architectures > MAX_ARCHITECTURES:
            raise PdsweepError(
                f"axes: {architectures:,} architectures is more than {MAX_ARCHITECTURES:,}; "
                "use fewer values or larger range steps."
            )
        resolutions = self.axes["resolution"].values()
        patch_sizes = self.axes["patch_size"].values()
        bad = [f"{r}/{p}" for r in resolutions for p in patch_sizes if int(r) % int(p)]
        if bad:
            raise PdsweepError(
                f"axes: every patch size must divide every resolution, but {', '.join(bad)} do not; "
                "drop those values or split the space into files."
            )

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

    def architectures(self, num_classes: int = 10) -> list[Config]:
        """Every combination of the axes other than the keep rate, at the highest keep rate.

        Under keep mode uniform, the drawn range starts at the space's lowest keep rate.
        """
        names = [name for name in architecture_axes() if name in self.axes]
        value_lists = [self.axes[name].values() for name in names]
        low, high = self.keep_rate_bounds
        configs = []
        for values in itertools.product(*value_lists):
            axes = dict(zip(names, values))
            uniform_low = low if axes.get("keep_mode") == "uniform" else None
            configs.append(Config(keep_rate=high, keep_range_low=uniform_low, num_classes=num_classes, **axes))  # type: ignore[arg-type]
        return configs


REQUIRED_AXES = ("model", "resolution", "patch_size", "keep_rate")
DEFAULT_AXES: dict[str, Axis] = {
    "ensemble_size": Categorical((1,)),
    "sampling": Categorical(("random",)),
    "keep_mode": Categorical(("fixed",)),
}
