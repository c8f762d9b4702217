"""Search-space files (``search_spaces/*.yaml``) -> validated :class:`SearchSpace` objects.

A file has an ``axes`` section (or a ``configs`` list, :mod:`pdsweep.space.listed`) and an
optional ``training`` section::

    description: what the space is for
    axes:
      model: [deit_tiny, deit_small]        # a list: categorical
      resolution: [64, 112, 224]
      patch_size: 16                        # a scalar: fixed
      depth: {low: 6, high: 12, step: 6}    # Optuna's short form: a range (step or log optional)
      ensemble_size: 1
      keep_rate: {low: 0.05, high: 1.0}
      init: [pretrained, random]            # optional; default: pretrained where weights are given
    weights:                                # model preset -> a hub name or a local timm state dict
      deit_tiny: timm/deit_tiny_patch16_224.fb_in1k
    training:
      epochs: 30
      batch_size: 64
    finetune:                               # optional: pretrained trials train so instead
      optimizer: sgd
      lr: 0.01

``--set KEY.PATH=VALUE`` on the command line changes a value before the file is checked
(:mod:`pdsweep.space.overrides`). YAML anchors, aliases and merge keys work as in ``yaml.safe_load``; a top-level key beginning
with ``x-`` is skipped, a place to define them (``x-base: &base {epochs: 30}``, then
``training: {<<: *base, lr: 0.001}``).

Every mistake is reported with the file, the key path and what is allowed; unknown and
duplicate keys are errors (with the nearest valid key), never silently ignored. The value
objects check themselves too, so a space built in code obeys the same rules.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

from pdsweep.config import INITS, KEEP_MODES, SAMPLINGS, Config, space_axes
from pdsweep.config import axes as config_axes
from pdsweep.errors import PdsweepError
from pdsweep.presets import PRESETS, SwinShape
from pdsweep.windows import rate_problem
from pdsweep.space.axes import Axis, Categorical, FloatRange, IntRange
from pdsweep.space.listed import EXTRA_KEYS, LABEL_KEYS, REQUIRED_KEYS, ListedConfig, check_listed
from pdsweep.space.overrides import apply_overrides, described, parse_overrides
from pdsweep.space.search_space import DEFAULT_AXES, REQUIRED_AXES, MAX_VALUES_PER_AXIS, SearchSpace
from pdsweep.space.settings import TrainingSettings
from pdsweep.space.weights import WeightSource
from pdsweep.validate import describe_value, is_number, is_positive_int, is_rate
from pdsweep.yamlfile import read_yaml


EXTENSION_PREFIX = "x-"  # top-level keys the parser skips, as in Compose files: `x-base: &base {...}`


def bundled_space_dirs() -> list[Path]:
    """Where the spaces shipped with pdsweep live: the source tree, or the installed share dir."""
    return [
        Path(__file__).resolve().parents[2] / "search_spaces",  # the source tree (pdsweep/space/ -> root)
        Path(sys.prefix) / "share" / "pdsweep" / "search_spaces",
    ]


def bundled_space_names() -> list[str]:
    """The bundled spaces (``paper``) and the study's recipes (``paper/keep_rate``)."""
    names = {p.relative_to(d).with_suffix("").as_posix() for d in bundled_space_dirs() if d.is_dir()
             for pattern in ("*.yaml", "*/*.yaml") for p in d.glob(pattern)}
    return sorted(names)


def resolve_space(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or a bundled space by name (``paper``, a recipe ``paper/keep_rate``)
    or file name (``paper.yaml``)."""
    names = bundled_space_names()
    spaces, recipes = [n for n in names if "/" not in n], [n for n in names if "/" in n]
    bundled = (", ".join(spaces) or "none found") + (f"; the study's recipes: {', '.join(recipes)}" if recipes else "")
    if not str(name_or_path).strip():
        raise PdsweepError(f"no space given; give a path to a YAML file or a bundled space name ({bundled}).")
    path = Path(name_or_path)
    if path.is_file():
        return path
    if not path.is_absolute() and len(path.parts) <= 2 and ".." not in path.parts:
        file_name = path if path.suffix in (".yaml", ".yml") else path.with_name(f"{path.name}.yaml")
        for directory in bundled_space_dirs():
            if (directory / file_name).is_file():
                return directory / file_name
    if path.is_dir():  # after the bundled names: a folder called paper/ does not hide the space paper
        raise PdsweepError(f"space file {str(path)!r} is a directory; give a YAML file.")
    raise PdsweepError(
        f"space file {str(path)!r} not found; give a path to a YAML file or a bundled space "
        f"name ({bundled})."
    )


def load_space(name_or_path: str | Path, overrides: Iterable[str] = ()) -> SearchSpace:
    """Read and validate a search-space file (a path or a bundled name), with ``overrides``
    (``--set KEY.PATH=VALUE``, :mod:`pdsweep.space.overrides`) applied before it is checked."""
    path = resolve_space(name_or_path)
    changes = parse_overrides(overrides)
    document = apply_overrides(read_yaml(path, "the space file", _strict_loader()), changes)
    return parse_space(document, name=path.stem, source=str(path), base_dir=path.resolve().parent,
                       shown=described(str(path), changes))


SWEEP_WIDE = ("metric", "eval_groups")  # training settings finetune cannot change


def load_training(name_or_path: str | Path | None, overrides: Iterable[str] = ()) -> TrainingSettings:
    """The training settings of a space file (or the defaults, without one) with ``training.KEY``
    overrides: what ``pdsweep train`` takes, whose config its own flags give."""
    changes = parse_overrides(overrides)
    for change in changes:
        if change.path[0] != "training":
            raise PdsweepError(f"--set {change.key}: train trains the config its flags give (--model, --resolution, "
                               "...); here --set takes training.KEY=VALUE.")
    if name_or_path:
        return load_space(name_or_path, overrides).training
    where = _Where(described("the default training settings", changes))
    settings = tuple(f.name for f in fields(TrainingSettings))
    document = apply_overrides({"training": {}}, changes)
    training = where.mapping(document["training"], "training", allowed=settings)
    try:
        return TrainingSettings(**training)
    except PdsweepError as error:
        raise PdsweepError(f"{where.source}: {error}") from None


def _strict_loader() -> type:
    """PyYAML's safe loader, refusing duplicate keys (it keeps the last one silently). Merge
    keys (``<<: *base``) work as in ``yaml.safe_load``: a key given beside a merge overrides the
    merged one, which is not a duplicate."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # expanded by flatten_mapping below
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
        loader.flatten_mapping(node)
        return loader.construct_mapping(node)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def parse_space(document: Any, *, name: str, source: str = "<memory>", base_dir: Path | None = None,
                shown: str | None = None) -> SearchSpace:
    """Validate a space already parsed from YAML (a mapping). A relative weight file is taken
    relative to ``base_dir`` (the space file's folder; default: the working directory);
    ``shown``: how messages name the file (default ``source``)."""
    shown = shown or source
    where = _Where(shown)
    if isinstance(document, dict):  # top-level x- keys are the file's own (a place for YAML anchors)
        document = {k: v for k, v in document.items() if not (isinstance(k, str) and k.startswith(EXTENSION_PREFIX))}
    top = where.mapping(document, "", allowed=("description", "axes", "configs", "weights", "training", "finetune"))
    description = top.get("description", "")
    if not isinstance(description, str):
        where.fail("description", f"must be text, got {describe_value(description)}")
    if "axes" in top and "configs" in top:
        where.fail("configs", "a space gives axes (to search) or configs (to run as listed), not both; "
                              "split it into two files")
    if "axes" not in top and "configs" not in top:
        where.fail("axes", f"is missing; a space needs at least: {', '.join(REQUIRED_AXES)} (or a configs list)")
    weights = _parse_weights(where, top.get("weights"), base_dir or Path.cwd())
    listed = _parse_configs(where, top["configs"], set(weights)) if "configs" in top else ()
    axes = _parse_axes(where, top["axes"]) if "axes" in top else _listed_axes(listed)
    settings = tuple(f.name for f in fields(TrainingSettings))
    training = where.mapping(top.get("training"), "training", allowed=settings)
    finetune = where.mapping(top.get("finetune"), "finetune", allowed=settings) if "finetune" in top else None
    try:
        base = TrainingSettings(**training)
        tuned = None
        if finetune is not None:
            try:
                tuned = TrainingSettings(**{**training, **finetune})
            except PdsweepError as error:
                raise PdsweepError(str(error).replace("training.", "finetune.", 1)) from None
            for key in SWEEP_WIDE:  # one objective, scored one way, for every trial of a sweep
                if getattr(tuned, key) != getattr(base, key):
                    raise PdsweepError(f"finetune.{key}: every trial of a sweep is judged alike, so {key} is set under "
                                       f"training only; drop finetune.{key}.")
        return SearchSpace(
            name=name, axes=axes, training=base, description=description, source=source,
            weights=weights, finetune=tuned, configs=listed,
        )
    except PdsweepError as error:  # the value objects' own checks, located in the file
        raise PdsweepError(f"{shown}: {error}") from None


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
            self.fail(key_path, f"{what} must be a mapping of keys ({', '.join(allowed)}), got {describe_value(value)}")
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                extension = "" if key_path else f" (or a name beginning with {EXTENSION_PREFIX}, which is ignored)"
                self.fail(_join(key_path, str(key)), f"unknown key; {hint}valid keys: {', '.join(allowed)}{extension}")
        return value


def _parse_weights(where: _Where, raw: Any, base_dir: Path) -> dict[str, WeightSource]:
    section = where.mapping(raw, "weights", allowed=tuple(PRESETS))
    weights = {}
    for model, text in section.items():
        try:
            source = WeightSource.parse(text)
        except PdsweepError as error:
            where.fail(f"weights.{model}", str(error).removesuffix("."))
        if source.kind == "file" and not Path(source.location).is_absolute():
            source = WeightSource("file", str(base_dir / source.location))
        weights[model] = source
    return weights


def _join(key_path: str, key: str) -> str:
    return f"{key_path}.{key}" if key_path else key


# Each space axis (:func:`pdsweep.config.space_axes`): what its values must be, and the check.
# A numeric axis also takes a range, of its declared type.
AXIS_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "model": (f"one of {', '.join(PRESETS)}", lambda v: isinstance(v, str) and v in PRESETS),
    "resolution": ("a positive integer (pixels)", is_positive_int),
    "patch_size": ("a positive integer (pixels)", is_positive_int),
    "keep_rate": ("a number in (0, 1]", is_rate),
    "depth": ("a positive integer (blocks)", is_positive_int),
    "ensemble_size": ("a positive integer", is_positive_int),
    "sampling": (f"one of {', '.join(SAMPLINGS)}", lambda v: isinstance(v, str) and v in SAMPLINGS),
    "keep_mode": (f"one of {', '.join(KEEP_MODES)}", lambda v: isinstance(v, str) and v in KEEP_MODES),
    "init": (f"one of {', '.join(INITS)}", lambda v: isinstance(v, str) and v in INITS),
}


def _parse_configs(where: _Where, raw: Any, with_weights: set[str]) -> tuple[ListedConfig, ...]:
    """The ``configs`` list: each entry a mapping of one value per axis, a label and a group. An
    entry without ``init`` starts pretrained when the space lists weights for its model
    (``with_weights``), as in a space of axes."""
    if not isinstance(raw, list) or not raw:
        where.fail("configs", f"must be a non-empty list of configs (mappings such as {{model: deit_tiny, "
                              f"resolution: 224, patch_size: 16, keep_rate: 0.5}}), got {describe_value(raw)}")
    kinds = {info.name: info.kind for info in config_axes()}
    allowed = (*space_axes(), *EXTRA_KEYS, *LABEL_KEYS)
    listed = []
    for index, entry in enumerate(raw):
        key_path = f"configs[{index}]"
        if not isinstance(entry, dict):
            where.fail(key_path, f"must be a mapping of axis values ({', '.join(allowed)}), got {describe_value(entry)}")
        where.mapping(entry, key_path, allowed=allowed)
        preset = PRESETS.get(entry.get("model"))  # type: ignore[arg-type]
        swin = preset if isinstance(preset, SwinShape) else None
        missing = [key for key in REQUIRED_KEYS if key not in entry and not (swin and key == "patch_size")]
        if missing:
            where.fail(f"{key_path}.{missing[0]}", f"is missing; each listed config gives at least "
                                                   f"{', '.join(REQUIRED_KEYS)}")
        for key, value in entry.items():
            if key in LABEL_KEYS:
                if not isinstance(value, str | int) or isinstance(value, bool):
                    where.fail(f"{key_path}.{key}", f"must be text, got {describe_value(value)}")
                continue
            what, ok = AXIS_RULES.get(key, ("a number in (0, 1]", is_rate))
            if isinstance(value, list | dict):
                where.fail(f"{key_path}.{key}", f"a listed config takes one value ({what}), not a list or range; "
                                                "list one config per value")
            if not ok(value):
                where.fail(f"{key_path}.{key}", f"must be {what}, got {describe_value(value)}")
            if swin and key in ("keep_rate", "keep_range_low") and rate_problem(swin, value):
                where.fail(f"{key_path}.{key}", f"{rate_problem(swin, value)}; give one of those")
            own = {"patch_size": swin.patch_size, "sampling": "random"} if swin else {}
            if key in own and value != own[key]:  # what a Swin takes of these axes is its own
                said = "random (the same rows and columns of every window)" if key == "sampling" else own[key]
                where.fail(f"{key_path}.{key}", f"{entry['model']} is a Swin, whose {key} is {said}; drop the key")
        values = {key: kinds[key](value) if kinds[key] is float else value
                  for key, value in entry.items() if key not in LABEL_KEYS}
        if swin:
            values.setdefault("patch_size", swin.patch_size)
        values.setdefault("init", "pretrained" if entry["model"] in with_weights else "random")
        try:
            config = Config(**values)
        except PdsweepError as error:
            where.fail(key_path, str(error).removesuffix("."))
        listed.append(ListedConfig(config, str(entry.get("label", "")), str(entry.get("group", ""))))
    try:
        check_listed(tuple(listed))
    except PdsweepError as error:
        raise PdsweepError(f"{where.source}: {error}") from None
    return tuple(listed)


def _listed_axes(listed: tuple[ListedConfig, ...]) -> dict[str, Axis]:
    """The axes a config list spans: each axis's values, in the order first listed."""
    axes = dict(DEFAULT_AXES)
    for name in space_axes():
        values = tuple(dict.fromkeys(getattr(entry.config, name) for entry in listed))
        if name != "depth" or None not in values:
            axes[name] = Categorical(values)
        elif len(values) > 1:  # some at the preset's depth, some not: the blocks each has
            axes[name] = Categorical(tuple(dict.fromkeys(entry.config.blocks for entry in listed)))
    return axes


def _parse_axes(where: _Where, raw: Any) -> dict[str, Axis]:
    kinds = {info.name: info.kind for info in config_axes() if info.space}
    section = where.mapping(raw, "axes", allowed=tuple(kinds))
    parsed = dict(DEFAULT_AXES)
    for name, value in section.items():
        what, ok = AXIS_RULES[name]
        numeric = kinds[name] if kinds[name] in (int, float) else None
        parsed[name] = _parse_axis(where, f"axes.{name}", value, (what, ok, numeric))
    return parsed


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
            where.fail(at, f"must be {what}, got {describe_value(value)}")
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
            where.fail(f"{key_path}.{bound}", f"must be {what}, got {describe_value(raw[bound])}")
    low, high, step, log = raw["low"], raw["high"], raw.get("step"), raw.get("log", False)
    if low > high:
        where.fail(key_path, f"`low <= high` must hold, got low={low}, high={high}")
    if not isinstance(log, bool):
        where.fail(f"{key_path}.log", f"must be true or false, got {describe_value(log)}")
    if step is not None:
        step_ok = is_positive_int(step) if numeric is int else is_number(step) and step > 0
        if not step_ok:
            kind = "integer" if numeric is int else "number"
            where.fail(f"{key_path}.step", f"must be a positive {kind}, got {describe_value(step)}")
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
