"""One point of the search space: which ViT, at which resolution and patch size, which keep rate.

The kept-token count is part of the point, not an afterthought. ``patches_kept`` is the one
formula (timm's): ``max(1, int(N * keep_rate))``. A rate derived as ``n / N`` does not survive it
in floating point (``int(49 * (1 / 49)) == 0``), so :func:`keep_rate_for` returns the smallest
float that does; the cost model charges ``patches_kept`` and the model keeps exactly that many.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

from pdsweep.errors import PdsweepError
from pdsweep.presets import Preset, get_preset

Sampling = Literal["random"]
KeepMode = Literal["fixed"]
Precision = Literal["fp32", "bf16-mixed"]
OptimizerName = Literal["sgd", "adamw"]

SAMPLINGS: tuple[str, ...] = get_args(Sampling)
KEEP_MODES: tuple[str, ...] = get_args(KeepMode)
PRECISIONS: tuple[str, ...] = get_args(Precision)
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)


def patches_kept(num_patches: int, keep_rate: float) -> int:
    """Patch tokens kept in training (class token not included), as timm counts them."""
    return max(1, int(num_patches * keep_rate))


def keep_rate_for(num_patches: int, count: int) -> float:
    """The smallest keep rate ``r`` with ``patches_kept(num_patches, r) == count``.

    ``count / num_patches`` can land one ulp below the integer (``49 * (1 / 49) == 0.999...``);
    stepping up by ulps fixes that without changing any other count.
    """
    if not 1 <= count <= num_patches:
        raise PdsweepError(f"`1 <= count <= num_patches` must hold, but got {count=}, {num_patches=}.")
    rate = count / num_patches
    while int(num_patches * rate) < count:
        rate = math.nextafter(rate, math.inf)
    return rate


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PdsweepError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}.")


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PdsweepError(f"`{name}` must be a positive integer, but got {name}={value!r}.")


@dataclass(frozen=True)
class Config:
    """One trial's architecture and keep rate. Derived values are properties.

    ``depth=None`` means the preset's block count. ``num_classes`` is the dataset's, needed for
    the head's cost and the model.
    """

    model: str
    resolution: int
    patch_size: int
    keep_rate: float = 1.0
    depth: int | None = None
    ensemble_size: int = 1
    sampling: Sampling = "random"
    keep_mode: KeepMode = "fixed"
    num_classes: int = 10

    def __post_init__(self) -> None:
        get_preset(self.model)
        for name in ("resolution", "patch_size", "ensemble_size", "num_classes"):
            _check_positive_int(name, getattr(self, name))
        if self.depth is not None:
            _check_positive_int("depth", self.depth)
        if self.resolution % self.patch_size:
            raise PdsweepError(
                f"patch size {self.patch_size} does not divide resolution {self.resolution}; "
                f"use a patch size that divides it (e.g. {_divisors_hint(self.resolution)})."
            )
        rate = self.keep_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise PdsweepError(f"`0 < keep_rate <= 1` must hold, but got keep_rate={rate!r}.")
        check_choice("sampling", self.sampling, SAMPLINGS)
        check_choice("keep mode", self.keep_mode, KEEP_MODES)

    @property
    def preset(self) -> Preset:
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
    def patches_kept(self) -> int:
        return patches_kept(self.num_patches, self.keep_rate)

    @property
    def tokens_kept(self) -> int:
        """Tokens through the blocks in training: kept patches plus the class token."""
        return self.patches_kept + 1

    @property
    def name(self) -> str:
        """A readable run name, e.g. ``deit_base-448px-p16-d12-k0.25-x1``."""
        return (
            f"{self.model}-{self.resolution}px-p{self.patch_size}-d{self.blocks}"
            f"-k{self.keep_rate:.3g}-x{self.ensemble_size}"
        )

    def with_keep_count(self, count: int) -> Config:
        """The same architecture keeping exactly ``count`` patches."""
        return replace(self, keep_rate=keep_rate_for(self.num_patches, count))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _divisors_hint(resolution: int) -> str:
    divisors = [p for p in (4, 8, 14, 16, 32) if resolution % p == 0]
    return ", ".join(map(str, divisors)) if divisors else "a divisor of the resolution"
