"""One point of the search space: which ViT, at which resolution and patch size, which keep rate.

The kept-token count is part of the point, not an afterthought. ``patches_kept`` is the one
formula (timm's): ``max(1, int(N * keep_rate))``. A rate derived as ``n / N`` does not survive it
in floating point (``int(49 * (1 / 49)) == 0``), so :func:`keep_rate_for` returns the smallest
float that does. A sampling strategy may keep fewer than asked (``structured`` keeps whole rows
and columns: a rows x cols product); :func:`strategy_count` says how many, the cost model
charges that, and the model keeps exactly that many.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, get_args

from pdsweep.errors import PdsweepError
from pdsweep.presets import Family, ModelPreset, SwinShape, get_preset
from pdsweep.validate import check_choice, check_positive_int, is_rate
from pdsweep.windows import (
    rates_text,
    resolution_problem,
    resolutions_text,
    window_keep_at_least,
    window_keep_at_most,
)

Sampling = Literal["random", "structured", "block", "grid"]
KeepMode = Literal["fixed", "uniform"]
Init = Literal["random", "pretrained"]

SAMPLINGS: tuple[str, ...] = get_args(Sampling)
KEEP_MODES: tuple[str, ...] = get_args(KeepMode)
INITS: tuple[str, ...] = get_args(Init)


@dataclass(frozen=True)
class AxisInfo:
    """One config axis as the rest of pdsweep sees it: a results column, an MLflow param.

    ``kind`` is the column's type; ``space`` says whether a space file searches it (the others
    follow from the space and the dataset); ``nullable`` whether its column may be empty;
    ``order`` its place among the columns (and in lists of the axes), which need not be the
    field order: fields with defaults must follow those without.
    """

    name: str
    kind: type
    space: bool
    nullable: bool = False
    order: int = 0


def _axis(kind: type, *, order: int, space: bool, nullable: bool = False) -> dict[str, Any]:
    return {"axis": (kind, space, nullable, order)}


def patches_kept(num_patches: int, keep_rate: float) -> int:
    """Patch tokens kept in training (class token not included), as timm counts them."""
    return max(1, int(num_patches * keep_rate))


def keep_rate_for(num_patches: int, count: int) -> float:
    """The smallest keep rate ``r`` with ``int(num_patches * r) == count``; ``1 / N`` for one patch.

    ``count / num_patches`` can land an ulp off in either direction (``49 * (16 / 49) < 16``),
    so step by ulps to the exact boundary. (Every rate below ``1 / N`` also keeps one patch,
    through ``max(1, ...)``; ``1 / N`` is the natural name for it.)
    """
    if not 1 <= count <= num_patches:
        raise PdsweepError(f"`1 <= count <= num_patches` must hold, but got {count=}, {num_patches=}.")
    if count == 1:
        return 1 / num_patches  # max(1, ...) keeps one patch at any rate; this is the natural one
    rate = count / num_patches
    while int(num_patches * rate) < count:
        rate = math.nextafter(rate, math.inf)
    while int(num_patches * math.nextafter(rate, 0.0)) >= count:
        rate = math.nextafter(rate, 0.0)
    return rate


def structured_shape(grid: int, count: int) -> tuple[int, int]:
    """Rows x columns of a ``grid`` x ``grid`` patch grid that ``structured`` keeps for ``count``.

    Each axis keeps about ``sqrt(count)`` lines (a keep rate of ``sqrt(keep_rate)`` per axis);
    among near-square shapes, the largest product not above ``count``, then the squarest.
    """
    root = math.isqrt(count)
    best = (0, 0, 0)  # (product, -|rows - cols|, rows)
    for rows in range(max(1, root - 1), min(grid, root + 1) + 1):
        cols = min(grid, count // rows)
        best = max(best, (rows * cols, -abs(rows - cols), rows))
    rows = best[2]
    return rows, min(grid, count // rows)


def lattice_shape(grid: int, count: int) -> tuple[int, int]:
    """Rows x columns of the regular lattice ``grid`` draws ``count`` patches from.

    The smallest near-square product not below ``count``; the strategy keeps ``count`` of its
    points.
    """
    root = math.isqrt(count)
    best: tuple[int, int, int] | None = None  # (product, |rows - cols|, rows)
    for rows in range(max(1, root - 1), min(grid, root + 2) + 1):
        cols = -(-count // rows)
        if cols <= grid and (best is None or (rows * cols, abs(rows - cols)) < best[:2]):
            best = (rows * cols, abs(rows - cols), rows)
    if best is None:  # count close to grid^2: whole rows
        rows = -(-count // grid)
        return rows, grid
    return best[2], -(-count // best[2])


def strategy_count(grid: int, count: int, sampling: str) -> int:
    """Patches a sampling strategy keeps when asked for ``count`` of ``grid ** 2``."""
    if sampling == "structured":
        rows, cols = structured_shape(grid, count)
        return rows * cols
    return count


@dataclass(frozen=True)
class Config:
    """One trial's architecture and keep rate. Derived values are properties.

    ``depth=None`` means the preset's block count. ``num_classes`` is the dataset's, needed for
    the head's cost and the model. ``keep_mode="uniform"`` draws the kept count afresh each
    iteration, uniformly between those of ``keep_range_low`` and ``keep_rate`` (the paper's
    regularizer); ``fixed`` keeps ``keep_rate`` throughout. ``init`` says how the weights start:
    ``random``, or ``pretrained`` from the weight source the space lists for the model.
    """

    # The axes, declared once: results columns, MLflow params, plan JSON and the space parser's
    # axis list are derived from these fields (:func:`axes`).
    model: str = field(metadata=_axis(str, order=0, space=True))
    resolution: int = field(metadata=_axis(int, order=1, space=True))
    patch_size: int = field(metadata=_axis(int, order=2, space=True))
    keep_rate: float = field(default=1.0, metadata=_axis(float, order=5, space=True))
    depth: int | None = field(default=None, metadata=_axis(int, order=3, space=True))  # columns hold the blocks
    ensemble_size: int = field(default=1, metadata=_axis(int, order=4, space=True))
    sampling: Sampling = field(default="random", metadata=_axis(str, order=7, space=True))
    keep_mode: KeepMode = field(default="fixed", metadata=_axis(str, order=8, space=True))
    keep_range_low: float | None = field(default=None, metadata=_axis(float, order=6, space=False, nullable=True))
    init: Init = field(default="random", metadata=_axis(str, order=9, space=True))
    num_classes: int = field(default=10, metadata=_axis(int, order=11, space=False))

    def __post_init__(self) -> None:
        preset = get_preset(self.model)
        if isinstance(preset, SwinShape):  # the axes a Swin does not take: its own values
            object.__setattr__(self, "patch_size", preset.patch_size)
            object.__setattr__(self, "sampling", "random")
        for name in ("resolution", "patch_size", "ensemble_size", "num_classes"):
            check_positive_int(name, getattr(self, name))
        if self.depth is not None:
            check_positive_int("depth", self.depth)
        if isinstance(preset, SwinShape):  # its own rule (its patch size is not the user's to change)
            self._check_resolution(preset)
        elif self.resolution % self.patch_size:
            raise PdsweepError(
                f"patch size {self.patch_size} does not divide resolution {self.resolution}; "
                f"use a patch size that divides it (e.g. {_divisors_hint(self.resolution)})."
            )
        rate = self.keep_rate
        if not is_rate(rate):
            raise PdsweepError(f"`0 < keep_rate <= 1` must hold, but got keep_rate={rate!r}.")
        check_choice("sampling", self.sampling, SAMPLINGS)
        check_choice("keep mode", self.keep_mode, KEEP_MODES)
        check_choice("init", self.init, INITS)
        low = self.keep_range_low
        if self.keep_mode == "uniform" and not (is_rate(low) and low <= rate):  # type: ignore[operator]
            raise PdsweepError(
                f"keep mode uniform needs `0 < keep_range_low <= keep_rate`, but got "
                f"keep_range_low={low!r}, keep_rate={rate!r}; give a range such as 0.5,1."
            )
        if self.keep_mode == "fixed" and low is not None:
            raise PdsweepError("keep_range_low is for keep mode uniform; drop it or use uniform.")
        if isinstance(preset, SwinShape):
            self._window_rates(preset)
            self._check_swin(preset)
        if self.keep_mode == "uniform" and self.keep_range_low == self.keep_rate:  # a range of one rate trains
            object.__setattr__(self, "keep_mode", "fixed")  # as fixed does: one config, one name (a search
            object.__setattr__(self, "keep_range_low", None)  # does not train it twice)

    def _window_rates(self, preset: SwinShape) -> None:
        """A Swin's keep rates moved onto those its window expresses, (n/W)^2: down for the keep
        rate (as a ViT's ``int(N * rate)`` rounds down), up for a uniform range's low end, so the
        range stays inside the one given; a range that holds no such rate is an error.

        Where a config changes what it was given (with a Swin's patch size and sampling, above,
        and a uniform range of one rate, which is fixed, below): a config is canonical, so configs
        that train alike compare, hash and name alike."""
        W = preset.window
        high = window_keep_at_most(self.keep_rate, W)
        if self.keep_mode == "uniform":
            low = window_keep_at_least(self.keep_range_low, W)  # type: ignore[arg-type]
            if low > high:
                raise PdsweepError(
                    f"keep mode uniform on {self.model} draws the rows and columns its window keeps, and no keep "
                    f"rate it expresses ({rates_text(W)}) lies in [{self.keep_range_low:g}, {self.keep_rate:g}]; "
                    "give a range that holds one."
                )
            object.__setattr__(self, "keep_range_low", (low / W) ** 2)
        object.__setattr__(self, "keep_rate", (high / W) ** 2)

    def _check_resolution(self, preset: SwinShape) -> None:
        problem = resolution_problem(preset, self.resolution)
        if problem:
            raise PdsweepError(f"{self.model} cannot train at {self.resolution} px: {problem}; use one of "
                               f"{resolutions_text(preset)}")

    def _check_swin(self, preset: SwinShape) -> None:
        if self.depth is not None:
            preset.stage_depths(self.depth)

    @property
    def family(self) -> Family:
        """``vit`` or ``swin``."""
        return self.preset.family

    @property
    def window_keeps(self) -> range:
        """A Swin's rows (and columns) kept per window in training: one n, or a range drawn
        uniformly each step."""
        preset = self.preset
        if not isinstance(preset, SwinShape):
            raise PdsweepError(f"{self.model} is a ViT: it keeps patches, not window rows.")
        high = window_keep_at_most(self.keep_rate, preset.window)
        low = window_keep_at_least(self.keep_range_low, preset.window) if self.keep_mode == "uniform" else high  # type: ignore[arg-type]
        return range(min(low, high), high + 1)

    @property
    def stage_depths(self) -> tuple[int, ...]:
        """A Swin's blocks per stage."""
        preset = self.preset
        if not isinstance(preset, SwinShape):
            raise PdsweepError(f"{self.model} is a ViT: it has no stages.")
        return preset.stage_depths(self.depth)

    @property
    def preset(self) -> ModelPreset:
        return get_preset(self.model)

    @property
    def blocks(self) -> int:
        """Transformer blocks: the config's depth, else the preset's."""
        return self.depth if self.depth is not None else self.preset.depth

    @property
    def grid_size(self) -> int:
        """Patches along one side of the (square) image."""
        return self.resolution // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def mean_keep_rate(self) -> float:
        """The share of patches kept on average in training: the keep rate, or the middle of a
        uniform keep range (early stopping compares trials by it)."""
        if self.keep_mode == "uniform" and self.keep_range_low is not None:
            return (self.keep_range_low + self.keep_rate) / 2
        return self.keep_rate

    @property
    def requested_counts(self) -> range:
        """Patch counts asked of the strategy in training: one, or a range drawn uniformly (a ViT's)."""
        if self.family == "swin":
            raise PdsweepError(f"{self.model} keeps rows and columns per window (window_keeps), not patch counts.")
        high = patches_kept(self.num_patches, self.keep_rate)
        if self.keep_mode == "uniform":
            return range(patches_kept(self.num_patches, self.keep_range_low), high + 1)  # type: ignore[arg-type]
        return range(high, high + 1)

    @property
    def patches_kept(self) -> int:
        """Patches kept in training (the most, under keep mode uniform). A Swin keeps n x n of each
        window's W x W."""
        preset = self.preset
        if isinstance(preset, SwinShape):
            return (self.grid_size // preset.window * self.window_keeps[-1]) ** 2
        return strategy_count(self.grid_size, self.requested_counts[-1], self.sampling)

    @property
    def tokens_kept(self) -> int:
        """Tokens into the first block in training: kept patches plus the class token (a Swin has
        none)."""
        return self.patches_kept + (self.family == "vit")

    @property
    def name(self) -> str:
        """A readable run name, e.g. ``deit_base-448px-p16-d12-k0.25-x1`` (``-pretrained`` appended
        for a pretrained start)."""
        keep = f"{self.keep_rate:.3g}"
        if self.keep_mode == "uniform":
            keep = f"{self.keep_range_low:.3g}~{keep}"
        sampling = "" if self.sampling == "random" else f"-{self.sampling}"
        init = "" if self.init == "random" else f"-{self.init}"
        if self.family == "swin":  # patch 4 and window sampling always: not named
            return f"{self.model}-{self.resolution}px-d{self.blocks}-k{keep}-x{self.ensemble_size}{init}"
        return (
            f"{self.model}-{self.resolution}px-p{self.patch_size}-d{self.blocks}"
            f"-k{keep}-x{self.ensemble_size}{sampling}{init}"
        )

    def with_keep_count(self, count: int) -> Config:
        """The same architecture asking its strategy for ``count`` patches (the top of a range)."""
        return replace(self, keep_rate=keep_rate_for(self.num_patches, count))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def columns(self) -> dict[str, Any]:
        """The config as results columns: every axis (``depth`` resolved to the blocks), then
        the derived ones (:data:`DERIVED_COLUMNS`)."""
        values = {**asdict(self), "depth": self.blocks, **{info.name: getattr(self, info.name) for info in DERIVED_COLUMNS}}
        return {name: values[name] for name in column_names()}

    @classmethod
    def from_columns(cls, row: Mapping[str, Any]) -> Config:
        """The config of a results row (its depth explicit)."""
        return cls(**{info.name: row[info.name] for info in axes()})

    @property
    def explicit(self) -> Config:
        """The same config with its depth spelled out, as a results row holds it."""
        return replace(self, depth=self.blocks)


# Columns a row carries beside the axes, derived from them.
DERIVED_COLUMNS: tuple[AxisInfo, ...] = (AxisInfo("tokens_kept", int, space=False, order=10),)

# Axes added after results tables were first written, and the value an older table's rows had.
LEGACY_AXIS_VALUES: dict[str, Any] = {"init": "random"}


def axes() -> tuple[AxisInfo, ...]:
    """Every config axis (every field of :class:`Config`), in column order."""
    found = [AxisInfo(f.name, *f.metadata["axis"]) for f in fields(Config)]
    return tuple(sorted(found, key=lambda info: info.order))


def space_axes() -> tuple[str, ...]:
    """The axes a space file may give (the space parser's keys)."""
    return tuple(info.name for info in axes() if info.space)


def architecture_axes() -> tuple[str, ...]:
    """The space axes that make an architecture: all but the keep rate, which a budget sets.
    (``init`` is among them: it changes no cost, but a pretrained and a random start are two
    configs to train.)"""
    return tuple(name for name in space_axes() if name != "keep_rate")


def columns() -> tuple[AxisInfo, ...]:
    """The config's results columns: the axes and the derived columns, in column order."""
    return tuple(sorted((*axes(), *DERIVED_COLUMNS), key=lambda info: info.order))


def column_names() -> tuple[str, ...]:
    """The config's results columns (and MLflow params), in order."""
    return tuple(info.name for info in columns())


def _divisors_hint(resolution: int) -> str:
    divisors = [p for p in (4, 8, 14, 16, 32) if resolution % p == 0]
    return ", ".join(map(str, divisors)) if divisors else "a divisor of the resolution"
