"""Search-space files (``search_spaces/*.yaml``) -> validated :class:`SearchSpace` objects.

A file has an ``axes`` section and an optional ``training`` section::

    description: what the space is for
    axes:
      model: [deit_tiny, deit_small]        # a list: categorical
      resolution: [64, 112, 224]
      patch_size: 16                        # a scalar: fixed
      depth: {low: 6, high: 12, step: 6}    # Optuna's short form: a range (step or log optional)
      ensemble_size: 1
      keep_rate: {low: 0.05, high: 1.0}
    training:
      epochs: 30
      batch_size: 64

Every mistake is reported with the file, the key path and what is allowed; unknown and
duplicate keys are errors (with the nearest valid key), never silently ignored. The value
objects check themselves too, so a space built in code obeys the same rules.
"""

from __future__ import annotations

import difflib
import itertools
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

from pdsweep.config import (
    KEEP_MODES,
    OPTIMIZERS,
    PRECISIONS,
    SAMPLINGS,
    Config,
    OptimizerName,
    Precision,
)
from pdsweep.errors import PdsweepError
from pdsweep.presets import PRESETS
from pdsweep.validate import is_number, is_positive_int, is_rate

# A space larger than this is a typo (a range with a tiny step), not a sweep.
MAX_VALUES_PER_AXIS = 10_000
MAX_ARCHITECTURES = 100_000

Value = int | float | str


@dataclass(frozen=True)
class Categorical:
    """A fixed list of choices; a fixed value is a list of one."""

    choices: tuple[Value, ...]

    def __len__(self) -> int:
        return len(self.choices)

    def values(self) -> tuple[Value, ...]:
        return self.choices


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def __len__(self) -> int:
        return (self.high - self.low) // self.step + 1

    def values(self) -> tuple[int, ...]:
        """Every value; ``log`` shapes how a sampler draws them, not which exist."""
        return tuple(range(self.low, self.high + 1, self.step))


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def __len__(self) -> int:
        if self.step is None:
            raise ValueError("a continuous range has no finite list of values.")
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def values(self) -> tuple[float, ...]:
        """The grid of a stepped range. A continuous range has none: callers ask for bounds."""
        return tuple(round(self.low + i * self.step, 12) for i in range(len(self)))  # type: ignore[operator]


Axis = Categorical | IntRange | FloatRange


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    hint = ""
    if isinstance(value, str):
        try:
            float(value)
            hint = " (YAML reads numbers like 5e-2 as text: write 5.0e-2 or 0.05)"
        except ValueError:
            pass
    return f"{type(value).__name__} {value!r}{hint}"


_TRAINING_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "epochs": ("a positive integer", is_positive_int),
    "batch_size": ("a positive integer", is_positive_int),
    "optimizer": (f"one of {', '.join(OPTIMIZERS)}", lambda v: isinstance(v, str) and v in OPTIMIZERS),
    "lr": ("a positive number", lambda v: is_number(v) and v > 0),
    "weight_decay": ("a number >= 0", lambda v: is_number(v) and v >= 0),
    "warmup_epochs": ("an integer >= 0", lambda v: is_positive_int(v) or (v == 0 and not isinstance(v, bool))),
    "label_smoothing": ("a number in [0, 1)", lambda v: is_number(v) and 0 <= v < 1),
    "grad_clip": ("a positive number, or null for none", lambda v: v is None or (is_number(v) and v > 0)),
    "precision": (f"one of {', '.join(PRECISIONS)}", lambda v: isinstance(v, str) and v in PRECISIONS),
    "augment": ("true or false", lambda v: isinstance(v, bool)),
    "seed": ("an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
}


@dataclass(frozen=True)
class TrainingSettings:
    """How every trial of a space trains. ``momentum`` is fixed at 0.9 for SGD.

    AdamW is the default because ViTs trained from scratch (pdsweep's default: nothing is
    downloaded) barely move under SGD; SGD suits fine-tuning from ``--pretrained`` weights.

    ``precision: bf16-mixed`` is bf16 autocast on a GPU; a CPU trains in fp32. ``augment``
    turns on random resized crops, flips, small rotations and colour jitter.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: OptimizerName = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    precision: Precision = "bf16-mixed"
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name, (what, ok) in _TRAINING_RULES.items():
            value = getattr(self, name)
            if not ok(value):
                raise PdsweepError(f"training.{name}: must be {what}, got {_describe(value)}.")


@dataclass(frozen=True)
class SearchSpace:
    """The axes a sweep searches and how its trials train."""

    name: str
    axes: Mapping[str, Axis]
    training: TrainingSettings = field(default_factory=TrainingSettings)
    description: str = ""
    source: str = "<memory>"

    def __post_init__(self) -> None:
        for axis in _REQUIRED_AXES:
            if axis not in self.axes:
                raise PdsweepError(f"axes.{axis}: is missing; give a value, a list, or {{low: ..., high: ...}}.")
        architectures = math.prod(len(self.axes[name]) for name in ARCHITECTURE_AXES if name in self.axes)
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
    def keep_rate_bounds(self) -> tuple[float, float]:
        """The lowest and highest keep rate the space allows."""
        axis = self.keep_rate
        if isinstance(axis, FloatRange):
            return axis.low, axis.high
        values = [float(v) for v in axis.values()]
        return min(values), max(values)

    def architectures(self, num_classes: int = 10) -> list[Config]:
        """Every combination of the axes other than the keep rate, at the highest keep rate.

        Under keep mode uniform, the drawn range starts at the space's lowest keep rate.
        """
        names = [name for name in ARCHITECTURE_AXES if name in self.axes]
        value_lists = [self.axes[name].values() for name in names]
        low, high = self.keep_rate_bounds
        configs = []
        for values in itertools.product(*value_lists):
            axes = dict(zip(names, values))
            uniform_low = low if axes.get("keep_mode") == "uniform" else None
            configs.append(Config(keep_rate=high, keep_range_low=uniform_low, num_classes=num_classes, **axes))  # type: ignore[arg-type]
        return configs


# Axes that make an architecture, in the order configs list them.
ARCHITECTURE_AXES = ("model", "resolution", "patch_size", "depth", "ensemble_size", "sampling", "keep_mode")
_REQUIRED_AXES = ("model", "resolution", "patch_size", "keep_rate")
_DEFAULT_AXES: dict[str, Axis] = {
    "ensemble_size": Categorical((1,)),
    "sampling": Categorical(("random",)),
    "keep_mode": Categorical(("fixed",)),
}


# ---- loading ------------------------------------------------------------------------------


def bundled_space_dirs() -> list[Path]:
    """Where the spaces shipped with pdsweep live: the source tree, or the installed share dir."""
    return [
        Path(__file__).resolve().parent.parent / "search_spaces",
        Path(sys.prefix) / "share" / "pdsweep" / "search_spaces",
    ]


def bundled_space_names() -> list[str]:
    names = {p.stem for d in bundled_space_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def resolve_space(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or a bundled space by name (``paper``) or file name (``paper.yaml``)."""
    bundled = ", ".join(bundled_space_names()) or "none found"
    if not str(name_or_path).strip():
        raise PdsweepError(f"no space given; give a path to a YAML file or a bundled space name ({bundled}).")
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise PdsweepError(f"space file {str(path)!r} is a directory; give a YAML file.")
    if path.parent == Path("."):
        file_name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
        for directory in bundled_space_dirs():
            if (directory / file_name).is_file():
                return directory / file_name
    raise PdsweepError(
        f"space file {str(path)!r} not found; give a path to a YAML file or a bundled space "
        f"name ({bundled})."
    )


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Read and validate a search-space file (a path or a bundled name)."""
    import yaml

    path = resolve_space(name_or_path)
    try:
        document = yaml.load(path.read_text(), Loader=_strict_loader())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise PdsweepError(f"{path}: not valid YAML{where}: {problem}.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PdsweepError(f"{path}: cannot read the space file ({error}).") from None
    return parse_space(document, name=path.stem, source=str(path))


def _strict_loader() -> type:
    """PyYAML's safe loader, refusing duplicate keys (it keeps the last one silently)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be text, not {type(key).__name__}", key_node.start_mark
                ) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def parse_space(document: Any, *, name: str, source: str = "<memory>") -> SearchSpace:
    """Validate a space already parsed from YAML (a mapping)."""
    where = _Where(source)
    top = where.mapping(document, "", allowed=("description", "axes", "training"))
    description = top.get("description", "")
    if not isinstance(description, str):
        where.fail("description", f"must be text, got {_describe(description)}")
    if "axes" not in top:
        where.fail("axes", f"is missing; a space needs at least: {', '.join(_REQUIRED_AXES)}")
    axes = _parse_axes(where, top["axes"])
    training = where.mapping(top.get("training"), "training", allowed=tuple(f.name for f in fields(TrainingSettings)))
    try:
        return SearchSpace(
            name=name, axes=axes, training=TrainingSettings(**training), description=description, source=source
        )
    except PdsweepError as error:  # the value objects' own checks, located in the file
        raise PdsweepError(f"{source}: {error}") from None


@dataclass(frozen=True)
class _Where:
    """Formats errors as ``FILE: key.path: problem``."""

    source: str

    def fail(self, key_path: str, problem: str) -> NoReturn:
        prefix = f"{self.source}: {key_path}: " if key_path else f"{self.source}: "
        raise PdsweepError(prefix + problem + ".")

    def mapping(self, value: Any, key_path: str, *, allowed: tuple[str, ...]) -> dict[str, Any]:
        """A mapping with only ``allowed`` keys; a section left empty (``training:``) is {}."""
        if value is None and key_path:
            return {}
        if not isinstance(value, dict):
            what = "the file" if not key_path else "this section"
            self.fail(key_path, f"{what} must be a mapping of keys ({', '.join(allowed)}), got {_describe(value)}")
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(_join(key_path, str(key)), f"unknown key; {hint}valid keys: {', '.join(allowed)}")
        return value


def _join(key_path: str, key: str) -> str:
    return f"{key_path}.{key}" if key_path else key


# Each axis: what its values must be, the check, and the number type of a range (None: no range).
_AXIS_RULES: dict[str, tuple[str, Callable[[Any], bool], type | None]] = {
    "model": (f"one of {', '.join(PRESETS)}", lambda v: isinstance(v, str) and v in PRESETS, None),
    "resolution": ("a positive integer (pixels)", is_positive_int, int),
    "patch_size": ("a positive integer (pixels)", is_positive_int, int),
    "depth": ("a positive integer (blocks)", is_positive_int, int),
    "ensemble_size": ("a positive integer", is_positive_int, int),
    "keep_rate": ("a number in (0, 1]", is_rate, float),
    "sampling": (f"one of {', '.join(SAMPLINGS)}", lambda v: isinstance(v, str) and v in SAMPLINGS, None),
    "keep_mode": (f"one of {', '.join(KEEP_MODES)}", lambda v: isinstance(v, str) and v in KEEP_MODES, None),
}


def _parse_axes(where: _Where, raw: Any) -> dict[str, Axis]:
    section = where.mapping(raw, "axes", allowed=tuple(_AXIS_RULES))
    axes = dict(_DEFAULT_AXES)
    for name, value in section.items():
        axes[name] = _parse_axis(where, f"axes.{name}", value, _AXIS_RULES[name])
    return axes


def _parse_axis(where: _Where, key_path: str, raw: Any, rule: tuple[str, Callable[[Any], bool], type | None]) -> Axis:
    what, ok, numeric = rule
    if isinstance(raw, dict):
        if numeric is None:
            where.fail(key_path, f"takes a value or a list ({what}), not a range")
        return _parse_range(where, key_path, raw, what, ok, numeric)
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        where.fail(key_path, f"the list is empty; give at least one value ({what})")
    for i, value in enumerate(values):
        if not ok(value):
            at = f"{key_path}[{i}]" if isinstance(raw, list) else key_path
            where.fail(at, f"must be {what}, got {_describe(value)}")
    if len(set(values)) != len(values):
        where.fail(key_path, f"lists a value twice: {values}")
    return Categorical(tuple(values))


def _parse_range(
    where: _Where, key_path: str, raw: dict[str, Any], what: str, ok: Callable[[Any], bool], numeric: type
) -> Axis:
    where.mapping(raw, key_path, allowed=("low", "high", "step", "log"))
    for bound in ("low", "high"):
        if bound not in raw:
            where.fail(f"{key_path}.{bound}", "is missing; a range needs low and high")
        if not ok(raw[bound]):
            where.fail(f"{key_path}.{bound}", f"must be {what}, got {_describe(raw[bound])}")
    low, high, step, log = raw["low"], raw["high"], raw.get("step"), raw.get("log", False)
    if low > high:
        where.fail(key_path, f"`low <= high` must hold, got low={low}, high={high}")
    if not isinstance(log, bool):
        where.fail(f"{key_path}.log", f"must be true or false, got {_describe(log)}")
    if step is not None:
        step_ok = is_positive_int(step) if numeric is int else is_number(step) and step > 0
        if not step_ok:
            kind = "integer" if numeric is int else "number"
            where.fail(f"{key_path}.step", f"must be a positive {kind}, got {_describe(step)}")
        if log:
            where.fail(key_path, "takes step or log, not both (as Optuna)")
    axis: Axis
    if numeric is int:
        axis = IntRange(low, high, step if step is not None else 1, log)
    else:
        axis = FloatRange(float(low), float(high), None if step is None else float(step), log)
    if (numeric is int or step is not None) and len(axis) > MAX_VALUES_PER_AXIS:  # type: ignore[arg-type]
        where.fail(key_path, f"spans {len(axis):,} values, more than {MAX_VALUES_PER_AXIS:,}; use a larger step")  # type: ignore[arg-type]
    return axis
