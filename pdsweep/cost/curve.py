"""The compute curve: train compute relative to keep rate 1, against the patch count N.

With T = kept patches + 1 class token and N patches, the cost model (:mod:`pdsweep.cost.flops`)
is a quadratic in the tokens plus a term that does not shrink with the keep rate:

    F(T) = 2 L D T^2  +  b T  +  3 p^2 D N + D C     (b = L D (4D + 2M + 10) + 5D)

so the exact relative compute F(T_k) / F(N + 1) tends to ``keep_rate ** 2`` as N grows (the
attention term takes over and T_k / T -> keep_rate), and its excess over that limit falls as
1 / N. Eq. 1 of Liu et al. (``2 L T^2 d + 4 L T d^2``) has the same limit and a smaller linear
term, and no patch embedding, so it reaches the limit sooner and understates the cost at small
N, where budgets are decided. Per grid side g (N = g^2, resolution g p) and keep rate, a
:class:`ComputeCurve` holds both ratios, with the standard resolutions marked.

No torch here, no matplotlib: :mod:`pdsweep.results.curve_plot` draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pdsweep.config import Config
from pdsweep.cost.flops import GIGA, eq1_flops, train_flops
from pdsweep.errors import PdsweepError
from pdsweep.presets import get_preset
from pdsweep.validate import check_positive_int, is_positive_int, is_rate

STANDARD_RESOLUTIONS: tuple[int, ...] = (224, 384, 448, 512, 896)
DEFAULT_KEEP_RATES: tuple[float, ...] = (0.5, 0.25)
# Grid sides 2 .. 1024, four per octave: the limit is only near for DeiT-B at N ~ 10^5..10^6
# (within 5% of keep_rate^2 at keep 0.25 from g ~ 520), far past any image pdsweep trains.
_OCTAVES = (1, 10)  # log2 of the smallest and largest side
_STEPS_PER_OCTAVE = 4


@dataclass(frozen=True)
class CurvePoint:
    """One keep rate at one patch count: both ratios to the same config at keep rate 1."""

    keep_rate: float
    tokens_kept: int  # kept patches + class token
    exact: float  # train_flops(keep_rate) / train_flops(1): the cost model
    eq1: float  # eq1_flops(keep_rate) / eq1_flops(1): the paper's Eq. 1 with the same tokens

    def to_dict(self) -> dict[str, Any]:
        return {"keep_rate": self.keep_rate, "tokens_kept": self.tokens_kept, "exact": self.exact, "eq1": self.eq1}


@dataclass(frozen=True)
class CurveRow:
    """One grid side g: N = g^2 patches at resolution g p, one point per keep rate."""

    grid: int
    resolution: int
    full_gflops: float  # train GFLOPs at keep rate 1 (the ratios' denominator), whole ensemble
    points: tuple[CurvePoint, ...]

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def standard(self) -> bool:
        """Whether the resolution is one of :data:`STANDARD_RESOLUTIONS`."""
        return self.resolution in STANDARD_RESOLUTIONS

    def to_dict(self) -> dict[str, Any]:
        return {"grid": self.grid, "num_patches": self.num_patches, "resolution": self.resolution,
                "standard": self.standard, "full_gflops": self.full_gflops,
                "points": [point.to_dict() for point in self.points]}


@dataclass(frozen=True)
class ComputeCurve:
    """Relative train compute against N for one architecture at several keep rates."""

    model: str
    patch_size: int
    blocks: int
    keep_rates: tuple[float, ...]
    rows: tuple[CurveRow, ...]  # by grid side, smallest first

    @property
    def limits(self) -> tuple[float, ...]:
        """``keep_rate ** 2`` per keep rate: where both ratios go as N grows."""
        return tuple(rate * rate for rate in self.keep_rates)

    @property
    def name(self) -> str:
        """e.g. ``deit_base-p16-d12``, as :attr:`pdsweep.config.Config.name` begins."""
        return f"{self.model}-p{self.patch_size}-d{self.blocks}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "patch_size": self.patch_size, "blocks": self.blocks,
                "keep_rates": list(self.keep_rates), "limits": list(self.limits),
                "rows": [row.to_dict() for row in self.rows]}


def standard_grids(patch_size: int) -> tuple[int, ...]:
    """Grid sides of the standard resolutions that ``patch_size`` divides."""
    return tuple(r // patch_size for r in STANDARD_RESOLUTIONS if r % patch_size == 0)


def default_grids(patch_size: int) -> tuple[int, ...]:
    """Sides 2 .. 1024 spaced evenly on a log scale, and the standard resolutions' sides."""
    low, high = _OCTAVES
    steps = range(low * _STEPS_PER_OCTAVE, high * _STEPS_PER_OCTAVE + 1)
    geometric = {round(2 ** (step / _STEPS_PER_OCTAVE)) for step in steps}
    return tuple(sorted(geometric | set(standard_grids(patch_size))))


def compute_curve(
    model: str,
    patch_size: int,
    keep_rates: Sequence[float] = DEFAULT_KEEP_RATES,
    grids: Sequence[int] | None = None,
    *,
    depth: int | None = None,
    ensemble_size: int = 1,
    num_classes: int = 10,
) -> ComputeCurve:
    """The curve of ``model`` at ``patch_size`` over grid sides ``grids`` (default
    :func:`default_grids`), one point per keep rate per side."""
    check_positive_int("patch_size", patch_size)
    if get_preset(model).family != "vit":
        raise PdsweepError(f"the compute curve is drawn for a ViT's token count, and {model} is a Swin (its windows fix "
                           f"which resolutions and keep rates exist); give a ViT, or use flops --model {model} "
                           "--resolution R --keep-rate K for one point.")
    rates = tuple(dict.fromkeys(keep_rates))
    if not rates:
        raise PdsweepError("the compute curve needs at least one keep rate; give some, e.g. 0.5,0.25.")
    for rate in rates:
        if not is_rate(rate):
            raise PdsweepError(
                f"`0 < keep_rate <= 1` must hold, but got keep_rate={rate!r}; give rates such as 0.5,0.25."
            )
    for side in grids or ():
        if not is_positive_int(side):
            raise PdsweepError(f"a grid side is a positive integer (patches per image side), but got {side!r}.")
    sides = default_grids(patch_size) if grids is None else tuple(sorted(set(grids)))
    base = Config(model, patch_size, patch_size, depth=depth, ensemble_size=ensemble_size, num_classes=num_classes)
    return ComputeCurve(model, patch_size, base.blocks, rates,
                        tuple(_row(replace(base, resolution=side * patch_size), rates) for side in sides))


def _row(full: Config, keep_rates: tuple[float, ...]) -> CurveRow:
    train_full, eq1_full = train_flops(full), eq1_flops(full)
    points = []
    for rate in keep_rates:
        kept = replace(full, keep_rate=rate)
        points.append(CurvePoint(rate, kept.tokens_kept, train_flops(kept) / train_full, eq1_flops(kept) / eq1_full))
    return CurveRow(full.grid_size, full.resolution, train_full / GIGA, tuple(points))
