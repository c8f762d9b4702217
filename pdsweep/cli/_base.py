"""What every command shares: the parser that fails in one line, the Command shape, flag types,
and the flag groups several commands take. Defaults and choices are read from the settings
dataclasses and the ``Literal`` types, never restated here."""

from __future__ import annotations

import argparse
import difflib
import math
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, get_args

from pdsweep._compat import option_strings
from pdsweep.errors import PdsweepError

if TYPE_CHECKING:
    from pdsweep.config import Config


class UsageError(Exception):
    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so every error is one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)

    def unrecognized(self, extra: list[str]) -> NoReturn:
        """Reject flags this (sub)command does not know, suggesting the nearest one."""
        options = option_strings(self)
        hint = ""
        for word in extra:
            close = difflib.get_close_matches(word.split("=")[0], options, n=1)
            if word.startswith("-") and close:
                hint = f" (did you mean {close[0]}?)"
                break
        self.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


class Command:
    """One subcommand: its flags and what it does. ``groups`` names shared flag groups
    (:func:`flag_groups`) it takes besides ``--debug``."""

    name: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str]
    groups: ClassVar[tuple[str, ...]] = ()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's own flags."""

    def take_action(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name``: the one place a flag's default comes from."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__} has no field {name!r} with a default")


def choices(literal: Any) -> list[str]:
    """The values of a ``Literal[...]`` type, as argparse choices."""
    return list(get_args(literal))


def _number(text: str, holds: Callable[[float], bool], rule: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and holds(value)):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    return _number(text, lambda value: value > 0, "a positive, finite number")


def non_negative_float(text: str) -> float:
    return _number(text, lambda value: value >= 0, "a finite number >= 0")


def budget_list(text: str) -> list[float]:
    """``17.6`` or budget tiers ``1.3,4.6,17.6``."""
    try:
        return [positive_float(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number or comma-separated positive numbers such as 1.3,4.6,17.6, got {text!r}"
        ) from None


def flag_groups() -> dict[str, argparse.ArgumentParser]:
    """Flag groups shared by several commands (argparse parents)."""
    import os

    from pdsweep.space import KeepPolicy
    from pdsweep.sweep.settings import SweepSettings

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    one_config = argparse.ArgumentParser(add_help=False)  # train: one config
    config_flags(one_config)

    budgets = argparse.ArgumentParser(add_help=False)  # plan and run: a space under budget tiers
    budgets.add_argument("--budget-gflops", type=budget_list, metavar="B[,B...]",
                         help="train GFLOPs per image; several comma-separated values are budget tiers (required "
                              "unless the space lists its configs: then every listed config runs)")
    budgets.add_argument("--budget-memory-gb", type=positive_float, metavar="M",
                         help="peak training memory cap in GB (10^9 bytes)")
    budgets.add_argument("--space", default=default(SweepSettings, "space"),
                         help="a space file, or a bundled space name (default: %(default)s)")
    set_flag(budgets)
    budgets.add_argument("--keep-policy", choices=choices(KeepPolicy), default=default(SweepSettings, "policy"),
                         help="fill: the largest keep rate that fits (default); search: sampled below it")

    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"),
                         help="the cluster's dashboard, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)")
    return {"common": common, "one_config": one_config, "budgets": budgets, "cluster": cluster}


def rate_number(text: str) -> float:
    """A keep rate as given: a number (``0.5102``) or a fraction (``25/49``, how a Swin's rates are named)."""
    numerator, slash, denominator = text.strip().partition("/")
    try:
        return float(numerator) / float(denominator) if slash else float(numerator)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number such as 0.5 or a fraction such as 25/49, got {text!r}") from None


def rate_flag(text: str) -> float:
    """:func:`rate_number` as an argparse type."""
    try:
        return rate_number(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def config_flags(parser: argparse.ArgumentParser, *, shape_required: bool = True, shape_note: str = "") -> None:
    """The flags of one config; ``shape_required=False`` leaves --resolution and --patch-size
    optional (``flops --curve`` spans them), with ``shape_note`` in their help."""
    from pdsweep.config import Config
    from pdsweep.presets import PRESETS

    parser.add_argument("--model", required=True, help=f"model preset: {', '.join(PRESETS)}")
    parser.add_argument("--resolution", type=int, required=shape_required, help="image side in pixels" + shape_note)
    parser.add_argument("--patch-size", type=int, help="patch side in pixels (a ViT needs it; a Swin's is 4)" + shape_note)
    parser.add_argument("--keep-rate", type=rate_flag, help="fraction of patches kept in training (default 1; a Swin "
                                                            "takes (n/7)^2: 1, 0.7347 or 36/49, 0.5102 or 25/49, ...)")
    parser.add_argument("--depth", type=int, help="transformer blocks (default: the preset's)")
    parser.add_argument("--ensemble-size", type=int, default=default(Config, "ensemble_size"),
                        help="ensemble members (default %(default)s)")


def keep_flags(parser: argparse.ArgumentParser) -> None:
    """How a config keeps patches, beside :func:`config_flags`: sampling and keep mode (default
    None, so a command can tell them given; :func:`keep_values` fills in the defaults)."""
    from pdsweep.config import KeepMode, Sampling

    parser.add_argument("--sampling", choices=choices(Sampling),
                        help="which patches survive (default random; a Swin keeps its window's rows and columns)")
    parser.add_argument("--keep-mode", choices=choices(KeepMode),
                        help="fixed (default), or uniform: a keep rate drawn per iteration from --keep-range")
    parser.add_argument("--keep-range", metavar="LOW,HIGH",
                        help="keep-rate range for --keep-mode uniform, e.g. 0.5,1 (a Swin's: 9/49,36/49)")


def keep_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config values of --keep-rate and :func:`keep_flags`: keep rate, keep mode, the range's
    low end, and sampling where it was given."""
    keep_mode = args.keep_mode or "fixed"
    keep_rate, keep_low = 1.0 if args.keep_rate is None else args.keep_rate, None
    if keep_mode == "uniform":
        if not args.keep_range:
            raise PdsweepError("--keep-mode uniform needs --keep-range LOW,HIGH (e.g. 0.5,1).")
        if args.keep_rate is not None:
            raise PdsweepError("give --keep-range (its HIGH is the keep rate) or --keep-rate, not both.")
        try:
            keep_low, keep_rate = (rate_number(part) for part in args.keep_range.split(","))
        except ValueError:
            raise PdsweepError(f"--keep-range takes LOW,HIGH such as 0.5,1 (or 9/49,36/49), got {args.keep_range!r}.") from None
    elif args.keep_range:
        raise PdsweepError("--keep-range is for --keep-mode uniform; add --keep-mode uniform or drop it.")
    values: dict[str, Any] = {"keep_rate": keep_rate, "keep_mode": keep_mode, "keep_range_low": keep_low}
    if args.sampling is not None:
        values["sampling"] = args.sampling
    return values


def config_of(args: argparse.Namespace, **values: Any) -> Config:
    """The config the flags of :func:`config_flags` (and ``values``) give: a Swin's patch size is
    its own, and its keep rates are those its window expresses, never rounded silently."""
    from pdsweep.config import Config
    from pdsweep.presets import SwinShape, get_preset
    from pdsweep.windows import rate_problem

    preset = get_preset(args.model)
    patch_size = args.patch_size
    if isinstance(preset, SwinShape):
        if patch_size not in (None, preset.patch_size):
            raise PdsweepError(f"--patch-size: {args.model} has patch size {preset.patch_size} (a Swin merges patches "
                               "in stages); drop --patch-size.")
        patch_size = preset.patch_size
        if values.get("sampling", "random") != "random":
            raise PdsweepError(f"--sampling: {args.model} keeps the same random rows and columns of every window (a "
                               "Swin's own sampling); drop --sampling.")
        ranged = values.get("keep_range_low") is not None  # --keep-range LOW,HIGH gave both
        for flag, rate in (("--keep-range" if ranged else "--keep-rate", values.get("keep_rate")),
                           ("--keep-range", values.get("keep_range_low"))):
            if rate is not None and rate_problem(preset, rate):
                raise PdsweepError(f"{flag}: {rate_problem(preset, rate)}; give one of those.")
    elif patch_size is None:
        raise PdsweepError(f"--patch-size: {args.model} is a ViT and needs one (e.g. 16, or 4 for small images).")
    return Config(model=args.model, resolution=args.resolution, patch_size=patch_size, depth=args.depth,
                  ensemble_size=args.ensemble_size, **values)


def set_flag(parser: argparse.ArgumentParser, what: str = "a value of the space file") -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                        help=f"change {what} before it is checked, e.g. --set training.epochs=2 --set "
                             "axes.resolution=[32,64] (YAML values; repeatable, the later wins)")


def window_flag(parser: argparse.ArgumentParser) -> None:
    """``--window LOW,HIGH``, beside ``--dataset``: :func:`dataset_with_window` folds it in."""
    parser.add_argument("--window", type=_window_text, metavar="LOW,HIGH",
                        help="pixel values shown black..white, those outside clipped (16-bit, float and DICOM images: "
                             "e.g. 0,4095, or -1000,400 in Hounsfield units); the dataset's ?window=LOW,HIGH option")


def _window_text(text: str) -> str:
    from pdsweep.training.decode import Window

    try:
        Window.parse(text)
    except PdsweepError as error:
        raise argparse.ArgumentTypeError(str(error).rstrip(".")) from None
    return text


def dataset_with_window(dataset: str, window: str | None) -> str:
    """``--dataset`` with ``--window`` added as its ``?window=`` option (so the cache keys on it)."""
    from pdsweep.training.data import DATASET_OPTIONS, DatasetSpec

    if window is None:
        return dataset
    spec = DatasetSpec.parse(dataset)
    if "window" not in DATASET_OPTIONS.get(spec.kind, ()):
        raise PdsweepError(f"--window: {spec.kind} images are 8-bit RGB and take no window; drop --window.")
    if "window" in spec.options:
        raise PdsweepError(f"--window and ?window= in --dataset {dataset} both give a window; keep one.")
    return str(DatasetSpec(spec.kind, f"{spec.arg}{'&' if '?' in spec.arg else '?'}window={window}"))


def runs_dir_flag(parser: argparse.ArgumentParser) -> None:
    from pdsweep.paths import DEFAULT_RUNS_DIR

    parser.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="where sweeps are kept (default ./%(default)s)")


def json_flag(parser: argparse.ArgumentParser, what: str = "print JSON") -> None:
    parser.add_argument("--json", action="store_true", help=what)


def metric_flag(parser: argparse.ArgumentParser) -> None:
    """``--metric``: what the search or the training ranks by (``training.metric``)."""
    from pdsweep.objective import MetricName

    parser.add_argument("--metric", choices=choices(MetricName),
                        help="what to optimise: accuracy (default), balanced_accuracy, auc (macro one-vs-rest beyond "
                             "two classes), macro_f1, or loss (minimised); sets training.metric. Every metric is "
                             "recorded whatever this is")


def with_metric(overrides: list[str] | tuple[str, ...], metric: str | None) -> tuple[str, ...]:
    """The ``--set`` overrides with ``--metric`` last (so it wins over a --set of the same key)."""
    return (*overrides, *((f"training.metric={metric}",) if metric else ()))
