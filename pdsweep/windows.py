"""What a Swin window allows: the resolutions window-structured PatchDropout runs at, and the keep
rates it expresses.

A Swin keeps the same n of the W rows and n of the W columns in every W x W window, so its keep
rate is (n / W)^2 (W = 7: 1, 36/49, 25/49, 16/49, 9/49, 4/49, 1/49), and every stage's grid must
tile into whole windows or fit in one. Facts about the model, with no torch and no cost: the
config, the cost model and the space parser all ask here.
"""

from __future__ import annotations

import math

from pdsweep.presets import SwinShape
from pdsweep.validate import is_rate


def stage_grids(shape: SwinShape, resolution: int) -> tuple[int, ...]:
    """The side of each stage's grid at ``resolution`` with every token (PatchMerging: ceil(g/2))."""
    grids = [resolution // shape.patch_size]
    for _ in shape.depths[1:]:
        grids.append((grids[-1] + 1) // 2)
    return tuple(grids)


def resolution_problem(shape: SwinShape, resolution: int) -> str | None:
    """Why window-structured dropout cannot run at ``resolution`` (None if it can).

    Every stage's grid must be a multiple of the window or fit in one window: then the reduced
    grids tile into whole windows and timm never pads (its pad tokens are not masked, so they
    would act as keys). For patch 4, window 7 and four stages: 28, 56, 112 px or a multiple of 224.
    """
    if resolution % shape.patch_size:
        return f"patch size {shape.patch_size} does not divide resolution {resolution}"
    first = resolution // shape.patch_size
    if first < shape.window or first % shape.window:
        return (f"at {resolution} px the first stage's grid is {first}, not a multiple of the window "
                f"({shape.window}); rows and columns are kept per window")
    bad = [g for g in stage_grids(shape, resolution) if g % shape.window and g > shape.window]
    if bad:
        return (f"at {resolution} px the stage grids are {', '.join(map(str, stage_grids(shape, resolution)))}; "
                f"{bad[0]} is neither a multiple of the window ({shape.window}) nor within one window")
    return None


def window_keep_rates(window: int = 7) -> tuple[float, ...]:
    """The keep rates a square window keep can express, (n / W)^2, highest first."""
    return tuple((n / window) ** 2 for n in range(window, 0, -1))


def names_rate(given: float, exact: float) -> bool:
    """Whether ``given`` names the keep rate ``exact``: equal to it, or it rounded to two decimals
    or more (0.51, 0.510, 0.5102 name 25/49; 0.5, and 0.5106, do not)."""
    return any(abs(given - round(exact, digits)) < 1e-12 for digits in range(2, 17)) or abs(given - exact) < 1e-9


def expressible_rate(rate: float, window: int = 7) -> int | None:
    """The n whose (n / W)^2 ``rate`` names (:func:`names_rate`), None if no n's does (or it is no rate)."""
    if not is_rate(rate):
        return None
    n = round(window * math.sqrt(rate))
    return n if 1 <= n <= window and names_rate(rate, (n / window) ** 2) else None


def window_keep_at_most(rate: float, window: int = 7) -> int:
    """The most rows (and columns) per window whose keep rate is at most ``rate`` (one at least):
    a window's answer to ViT's ``max(1, int(N * rate))``."""
    return expressible_rate(rate, window) or max(1, min(window, math.floor(window * math.sqrt(rate))))


def window_keep_at_least(rate: float, window: int = 7) -> int:
    """The fewest rows (and columns) per window whose keep rate is at least ``rate``."""
    return expressible_rate(rate, window) or max(1, min(window, math.ceil(window * math.sqrt(rate))))


def window_keep_nearest(rate: float, window: int = 7) -> int:
    """The rows (and columns) per window whose keep rate is nearest ``rate``: what a robustness
    curve asked for ``rate`` measures on a Swin (0.75, 0.5, 0.25 -> 36/49, 25/49, 9/49)."""
    return min(range(1, window + 1), key=lambda n: (abs((n / window) ** 2 - rate), n))


def rates_text(window: int = 7) -> str:
    """The expressible keep rates, as a message lists them (``1, 0.7347 (36/49), ...``)."""
    area = window * window
    return ", ".join("1" if n == window else f"{(n / window) ** 2:.4g} ({n * n}/{area})" for n in range(window, 0, -1))


def resolutions_text(shape: SwinShape) -> str:
    """The resolutions ``shape`` runs at, as a message lists them (``28, 56, 112 or a multiple of
    224``): every stage's grid whole windows from the one that merges down to a single window on."""
    period = shape.patch_size * shape.window * 2 ** (len(shape.depths) - 1)
    allowed = [r for r in range(shape.patch_size, period, shape.patch_size) if resolution_problem(shape, r) is None]
    return ", ".join(map(str, allowed)) + f" or a multiple of {period} ({period}, {2 * period}, {3 * period}, ...)"


def rates_within(low: float, high: float, window: int = 7) -> list[float]:
    """The expressible keep rates in ``[low, high]`` (an end may name one, :func:`names_rate`), lowest first."""
    ladder = [(n / window) ** 2 for n in range(1, window + 1)]
    return [r for r in ladder if (r >= low or names_rate(low, r)) and (r <= high or names_rate(high, r))]


def rate_problem(shape: SwinShape, rate: float) -> str | None:
    """Why a Swin cannot train at keep rate ``rate`` exactly (None if it can, or if ``rate`` is no
    rate at all: the config's own check says that)."""
    if not is_rate(rate) or expressible_rate(rate, shape.window) is not None:
        return None
    return (f"{shape.name} keeps the same n of the {shape.window} rows and columns in every window, so its keep "
            f"rates are {rates_text(shape.window)}; {rate:g} is none of them")
