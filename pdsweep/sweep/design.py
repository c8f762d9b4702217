"""Where a tier's search starts, and what replaces a config it has trained already.

A sweep has few trials, so its first ones should cover the feasible set rather than land where
independent random draws happen to: :func:`space_filling` picks them by greedy maximin distance
(each next config the one farthest from those picked), a space-filling design over the configs
that fit, in the spirit of a Latin hypercube but on a set the budget has already cut. Every axis
is a coordinate in [0, 1]: a numeric axis by the rank of its value, the model by its width, the
keep rate on its range; an axis of names (sampling, keep mode) counts 1 between two different
names. Ties are broken in an order drawn with the sweep's seed.

:func:`startup_design` is what a tier's search starts with (``bench/search.py`` measured the
choices against tables of real results; ``bench/RESULTS.md``): the two ends of PatchDropout's
trade (the tier's baseline at keep rate 1, and the most tokens and model at the lowest keep rate),
then the spread, cheapest first.

:func:`nearest_unseen` is what a tier trains instead of a config it has trained already: the
untried config closest to it, so a searcher that wants the same region again gets the next point
in it, not a repeat (a repeat is what ``--repeats`` is for).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pdsweep.config import Config, architecture_axes
from pdsweep.presets import get_preset

_NUMERIC = (int, float)


def coordinates(configs: Sequence[Config]) -> list[tuple[float, ...]]:
    """Each config as a point in [0, 1]^d over the axes that vary among ``configs``."""
    names = [*architecture_axes(), "keep_rate"]
    columns = []
    for name in names:
        values = [getattr(c, name) for c in configs]
        distinct = sorted(set(values), key=lambda v: _order_key(name, v))
        if len(distinct) < 2:
            continue
        if name == "keep_rate":
            low, high = distinct[0], distinct[-1]
            columns.append([(v - low) / (high - low) for v in values])
        elif name == "model" or isinstance(distinct[0], _NUMERIC):
            rank = {v: i / (len(distinct) - 1) for i, v in enumerate(distinct)}
            columns.append([rank[v] for v in values])
        else:  # names with no order: one coordinate per name, 1/sqrt(2) apart so two differ by 1
            for choice in distinct:
                columns.append([math.sqrt(0.5) if v == choice else 0.0 for v in values])
    return [tuple(column[i] for column in columns) for i in range(len(configs))]


def _order_key(name: str, value: object) -> tuple:
    if name == "model":
        return (get_preset(str(value)).embed_dim, str(value))
    if value is None:
        return (-math.inf,)
    return (value,) if isinstance(value, _NUMERIC) else (0, str(value))


def _distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return math.dist(a, b)


def space_filling(candidates: Sequence[Config], count: int, seed: int, *, first: Sequence[Config] = ()) -> list[Config]:
    """``count`` of ``candidates`` spread over them by greedy maximin distance (all of them when
    ``count`` is at least their number). ``first``: the first picks (else one drawn with ``seed``)."""
    if not candidates or count <= 0:
        return []
    points = coordinates(candidates)
    rng = random.Random(seed)
    order = list(range(len(candidates)))
    rng.shuffle(order)  # ties go to a seeded order, not to the order of the list
    picked = list(dict.fromkeys(candidates.index(c) for c in first if c in candidates))[:count] or [order[0]]
    nearest = [min(_distance(points[i], points[p]) for p in picked) for i in range(len(candidates))]
    while len(picked) < min(count, len(candidates)):
        best = max(order, key=lambda i: nearest[i])
        if nearest[best] <= 0:  # what is left sits on a point already picked
            best = next(i for i in order if i not in picked)
        picked.append(best)
        nearest = [min(nearest[i], _distance(points[i], points[best])) for i in range(len(candidates))]
    return [candidates[i] for i in picked]


def startup_design(candidates: Sequence[Config], count: int, seed: int) -> list[Config]:
    """A tier's first ``count`` trials: the two ends of PatchDropout's trade first, then the spread.

    - the tier's baseline without PatchDropout: its costliest config at keep rate 1;
    - the study's corner (:func:`study_corner`): the budget spent on what a reduced keep rate
      buys, the most patch tokens and the widest, deepest model, at the lowest keep rate;
    - then the configs that cover the rest of the feasible set by greedy maximin distance,
      cheapest first, so their results arrive for the least compute.

    The two ends run first so that the first results a user sees answer the study's question
    (does the trade pay on this data?), and a reduced keep rate is in every tier's search from
    its start. ``bench/search.py`` compared this with cost-weighted spreads and a cheapest-first
    order (``bench/RESULTS.md``): on its selection table it ended every 8-trial sweep within
    0.5 points of the tier's best, where the cost-weighted start of earlier versions ended
    58-78% of them there.
    """
    from pdsweep.cost import train_gflops

    ends = [c for c in dict.fromkeys(trade_ends(candidates)) if c is not None][:count]
    spread = space_filling(candidates, count, seed, first=ends)[len(ends):]
    return ends + sorted(spread, key=train_gflops)


def trade_ends(candidates: Sequence[Config]) -> tuple[Config | None, Config | None]:
    """The baseline without PatchDropout (the costliest config at a fixed keep rate of 1) and
    :func:`study_corner`; either is None when no candidate is one, and they can be the same config
    (when every architecture fits at keep rate 1, the costliest is the corner too)."""
    from pdsweep.cost import train_gflops

    baseline = max((c for c in candidates if c.keep_rate >= 1.0 and c.keep_mode == "fixed"),
                   key=lambda c: (train_gflops(c), c.name), default=None)
    return baseline, study_corner(candidates)


def study_corner(candidates: Sequence[Config]) -> Config | None:
    """The candidate the PatchDropout study's trades point to: the most patch tokens before
    dropout (the largest image over the finest patch grid), then the widest and deepest model
    and the largest ensemble, at the lowest keep rate among those. In a space of ViTs and Swins
    it is a Swin's (patch 4 gives the most tokens)."""
    return max(candidates, key=lambda c: (c.num_patches, c.preset.embed_dim, c.blocks, c.ensemble_size,
                                          -c.keep_rate, c.name), default=None)


def nearest_unseen(config: Config, candidates: Sequence[Config], seen: set[str]) -> Config | None:
    """The candidate not in ``seen`` (config names) closest to ``config``; None if all were seen."""
    if all(c.name in seen for c in candidates):
        return None
    return next(c for c in nearest_first(config, candidates) if c.name not in seen)


def nearest_first(config: Config, candidates: Sequence[Config]) -> list[Config]:
    """``candidates`` from the closest to ``config`` to the farthest (ties by name)."""
    # Coordinates over every candidate, so the scale does not change as the untried ones run out.
    points = coordinates([config, *candidates])
    order = sorted(range(len(candidates)), key=lambda i: (_distance(points[0], points[i + 1]), candidates[i].name))
    return [candidates[i] for i in order]
