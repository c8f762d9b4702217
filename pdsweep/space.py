"""Search-space files (``search_spaces/*.yaml``) -> validated :class:`SearchSpace` objects.

A file has an ``axes`` section and an optional ``training`` section::

    description: what the space is for
    axes:
      model: [deit_tiny, deit_small]        # a list: categorical
      resolution: [64, 112, 224]
      patch_size: 16                        # a scalar: fixed
      depth: {low: 6, high: 12, step: 6}    # Optuna's short form: a range (step, log optional)
      ensemble_size: 1
      keep_rate: {low: 0.05, high: 1.0}
    training:
      epochs: 30
      batch_size: 64

Every mistake is reported with the file, the key path and what is allowed; unknown keys are
errors (with the nearest valid key), never silently ignored.
"""

from __future__ import annotations

import difflib
import itertools
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pdsweep.config import KEEP_MODES, OPTIMIZERS, PRECISIONS, SAMPLINGS, Config, OptimizerName, Precision
from pdsweep.errors import PdsweepError
from pdsweep.presets import PRESETS

Value = int | float | str


@dataclass(frozen=True)
class Categorical:
    """A fixed list of choices; a fixed value is a list of one."""

    choices: tuple[Value, ...]

    def values(self) -> tuple[Value, ...]:
        return self.choices


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def values(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1, self.step))


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def values(self) -> tuple[float, ...]:
        """The grid of a stepped range. A continuous range has none: callers ask for bounds."""
        if self.step is None:
            raise ValueError("a continuous range has no finite list of values.")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return tuple(round(self.low + i * self.step, 12) for i in range(count))


Axis = Categorical | IntRange | FloatRange


@dataclass(frozen=True)
class TrainingSettings:
    """How every trial of a space trains. ``momentum`` is fixed at 0.9 for SGD.

    ``precision: bf16-mixed`` is bf16 autocast on a GPU; a CPU trains in fp32.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: OptimizerName = "sgd"
    lr: float = 0.01
    weight_decay: float = 5e-5
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    precision: Precision = "bf16-mixed"
    seed: int = 0


@dataclass(frozen=True)
class SearchSpace:
    """The axes a sweep searches and how its trials train."""

    name: str
    axes: Mapping[str, Axis]
    training: TrainingSettings = field(default_factory=TrainingSettings)
    description: str = ""
    source: str = "<memory>"

    @property
    def keep_rate(self) -> Axis:
        return self.axes["keep_rate"]

    def architectures(self, num_classes: int = 10) -> list[Config]:
        """Every combination of the axes other than the keep rate, at keep rate 1."""
        names = [name for name in ARCHITECTURE_AXES if name in self.axes]
        value_lists = [self.axes[name].values() for name in names]
        return [
            Config(keep_rate=1.0, num_classes=num_classes, **dict(zip(names, values)))  # type: ignore[arg-type]
            for values in itertools.product(*value_lists)
        ]


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
    return [Path(__file__).resolve().parent.parent / "search_spaces", Path(sys.prefix) / "share" / "pdsweep" / "search_spaces"]


def bundled_space_names() -> list[str]:
    names = {p.stem for d in bundled_space_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def resolve_space(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a bundled space (``paper``, ``quickstart``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix == "" and path.parent == Path("."):
        for directory in bundled_space_dirs():
            candidate = directory / f"{path.name}.yaml"
            if candidate.is_file():
                return candidate
    if path.is_dir():
        raise PdsweepError(f"space file {str(path)!r} is a directory; give a YAML file.")
    bundled = ", ".join(bundled_space_names()) or "none found"
    raise PdsweepError(
        f"space file {str(path)!r} not found; give a path to a YAML file or a bundled space "
        f"name ({bundled})."
    )


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Read and validate a search-space file (a path or a bundled name)."""
    import yaml

    path = resolve_space(name_or_path)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise PdsweepError(f"{path}: not valid YAML{where}: {problem}.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PdsweepError(f"{path}: cannot read the space file ({error}).") from None
    return parse_space(document, name=path.stem, source=str(path))


def parse_space(document: Any, *, name: str, source: str = "<memory>") -> SearchSpace:
    """Validate a space already parsed from YAML (a mapping)."""
    where = _Where(source)
    top = where.mapping(document, "", allowed=("description", "axes", "training"))
    description = top.get("description", "")
    if not isinstance(description, str):
        where.fail("description", f"must be text, got {description!r}")
    if "axes" not in top:
        where.fail("axes", f"is missing; a space needs at least: {', '.join(_REQUIRED_AXES)}")
    axes = _parse_axes(where, top["axes"])
    training = _parse_training(where, top.get("training") or {})
    space = SearchSpace(name=name, axes=axes, training=training, description=description, source=source)
    _check_combinations(where, space)
    return space


@dataclass(frozen=True)
class _Where:
    """Formats errors as ``FILE: key.path: problem``."""

    source: str

    def fail(self, key_path: str, problem: str) -> None:
        prefix = f"{self.source}: {key_path}: " if key_path else f"{self.source}: "
        raise PdsweepError(prefix + problem + ".")

    def mapping(self, value: Any, key_path: str, *, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None and key_path:
            value = {}
        if not isinstance(value, dict):
            what = "the file" if not key_path else "this section"
            self.fail(key_path, f"{what} must be a mapping of keys ({', '.join(allowed)}), got {_kind(value)}")
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(_join(key_path, str(key)), f"unknown key; {hint}valid keys: {', '.join(allowed)}")
        return value


def _join(key_path: str, key: str) -> str:
    return f"{key_path}.{key}" if key_path else key


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


# Each axis: (what its values must be, the check, whether a numeric range is allowed).
def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_keep_rate(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1


_AXIS_RULES: dict[str, tuple[str, Callable[[Any], bool], type | None]] = {
    "model": (f"one of {', '.join(PRESETS)}", lambda v: v in PRESETS, None),
    "resolution": ("a positive integer (pixels)", _is_positive_int, int),
    "patch_size": ("a positive integer (pixels)", _is_positive_int, int),
    "depth": ("a positive integer (blocks)", _is_positive_int, int),
    "ensemble_size": ("a positive integer", _is_positive_int, int),
    "keep_rate": ("a number in (0, 1]", _is_keep_rate, float),
    "sampling": (f"one of {', '.join(SAMPLINGS)}", lambda v: v in SAMPLINGS, None),
    "keep_mode": (f"one of {', '.join(KEEP_MODES)}", lambda v: v in KEEP_MODES, None),
}


def _parse_axes(where: _Where, raw: Any) -> dict[str, Axis]:
    section = where.mapping(raw, "axes", allowed=tuple(_AXIS_RULES))
    for name in _REQUIRED_AXES:
        if name not in section:
            where.fail(f"axes.{name}", "is missing; give a value, a list, or {low: ..., high: ...}")
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
            where.fail(at, f"must be {what}, got {_kind(value)}")
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
            where.fail(f"{key_path}.{bound}", f"must be {what}, got {_kind(raw[bound])}")
    low, high, step, log = raw["low"], raw["high"], raw.get("step"), raw.get("log", False)
    if low > high:
        where.fail(key_path, f"`low <= high` must hold, got low={low}, high={high}")
    if not isinstance(log, bool):
        where.fail(f"{key_path}.log", f"must be true or false, got {_kind(log)}")
    if step is not None:
        step_ok = _is_positive_int(step) if numeric is int else isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0
        if not step_ok:
            where.fail(f"{key_path}.step", f"must be a positive {'integer' if numeric is int else 'number'}, got {_kind(step)}")
        if log:
            where.fail(key_path, "takes step or log, not both (as Optuna)")
    if numeric is int:
        return IntRange(low, high, step if step is not None else 1, log)
    return FloatRange(float(low), float(high), None if step is None else float(step), log)


def _parse_training(where: _Where, raw: Any) -> TrainingSettings:
    names = tuple(f.name for f in fields(TrainingSettings))
    section = where.mapping(raw, "training", allowed=names)
    rules: dict[str, tuple[str, Callable[[Any], bool]]] = {
        "epochs": ("a positive integer", _is_positive_int),
        "batch_size": ("a positive integer", _is_positive_int),
        "optimizer": (f"one of {', '.join(OPTIMIZERS)}", lambda v: v in OPTIMIZERS),
        "lr": ("a positive number", lambda v: _is_number(v) and v > 0),
        "weight_decay": ("a number >= 0", lambda v: _is_number(v) and v >= 0),
        "warmup_epochs": ("an integer >= 0", lambda v: _is_positive_int(v) or v == 0),
        "label_smoothing": ("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1),
        "grad_clip": ("a positive number, or null for none", lambda v: v is None or (_is_number(v) and v > 0)),
        "precision": (f"one of {', '.join(PRECISIONS)}", lambda v: v in PRECISIONS),
        "seed": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    }
    for key, value in section.items():
        what, ok = rules[key]
        if not ok(value):
            where.fail(f"training.{key}", f"must be {what}, got {_kind(value)}")
    return TrainingSettings(**section)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_combinations(where: _Where, space: SearchSpace) -> None:
    resolutions = space.axes["resolution"].values()
    patch_sizes = space.axes["patch_size"].values()
    bad = [f"{r}/{p}" for r in resolutions for p in patch_sizes if int(r) % int(p)]
    if bad:
        where.fail(
            "axes",
            f"every patch size must divide every resolution, but {', '.join(bad)} do not; "
            "drop those values or split the space into files",
        )

