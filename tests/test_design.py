"""Where a tier's search starts (a space-filling design) and what replaces a config tried already."""

from __future__ import annotations

import itertools
import math
import random

from pdsweep.config import Config
from pdsweep.sweep.design import coordinates, nearest_unseen, space_filling


def _grid() -> list[Config]:
    return [Config("vit_micro", r, p, keep_rate=k, depth=d, num_classes=4)
            for r, p, d, k in itertools.product((16, 32, 48, 64), (8, 16), (1, 2, 4), (0.5, 1.0)) if r % p == 0]


def _min_distance(configs: list[Config]) -> float:
    points = coordinates(configs)
    return min(math.dist(a, b) for a, b in itertools.combinations(points, 2))


def test_space_filling_spreads_wider_than_random_draws() -> None:
    candidates = _grid()
    picked = space_filling(candidates, 6, seed=0)
    assert len({c.name for c in picked}) == 6 and all(c in candidates for c in picked)
    # The design's closest pair is farther apart than in any of 200 random subsets of the same size.
    rng = random.Random(1)
    random_best = max(_min_distance(rng.sample(candidates, 6)) for _ in range(200))
    assert _min_distance(picked) >= random_best


def test_space_filling_depends_on_the_seed_and_covers_all_when_asked() -> None:
    candidates = _grid()
    assert space_filling(candidates, 4, seed=0) == space_filling(candidates, 4, seed=0)
    assert len({tuple(c.name for c in space_filling(candidates, 4, seed=s)) for s in range(5)}) > 1
    everything = space_filling(candidates, 1000, seed=3)
    assert sorted(c.name for c in everything) == sorted(c.name for c in candidates)
    assert space_filling([], 3, seed=0) == [] and space_filling(candidates, 0, seed=0) == []


def test_nearest_unseen_is_the_closest_untried_config() -> None:
    candidates = _grid()
    tried = Config("vit_micro", 32, 8, keep_rate=1.0, depth=2, num_classes=4)
    seen = {tried.name}
    substitute = nearest_unseen(tried, candidates, seen)
    assert substitute is not None and substitute.name not in seen
    points = dict(zip((c.name for c in [tried, *candidates]), coordinates([tried, *candidates])))
    gap = math.dist(points[tried.name], points[substitute.name])
    assert all(math.dist(points[tried.name], points[c.name]) >= gap for c in candidates if c.name not in seen)
    assert nearest_unseen(tried, candidates, {c.name for c in candidates}) is None


def test_coordinates_order_models_by_width_and_separate_names() -> None:
    small = Config("vit_micro", 32, 8, keep_rate=1.0, num_classes=4)
    large = Config("deit_small", 32, 8, keep_rate=1.0, num_classes=4)
    middle = Config("deit_tiny", 32, 8, keep_rate=1.0, num_classes=4)
    (a,), (b,), (c,) = coordinates([large, small, middle])
    assert a == 1.0 and b == 0.0 and c == 0.5
    blocky = Config("vit_micro", 32, 8, keep_rate=0.5, sampling="block", num_classes=4)
    plain = Config("vit_micro", 32, 8, keep_rate=0.5, sampling="random", num_classes=4)
    p, q = coordinates([blocky, plain])
    assert math.isclose(math.dist(p, q), 1.0)


def test_the_startup_design_starts_at_both_ends_of_the_trade_then_spreads_cheapest_first() -> None:
    from pdsweep.cost import train_gflops
    from pdsweep.sweep.design import startup_design

    candidates = _grid()
    design = startup_design(candidates, 6, seed=0)
    assert len({c.name for c in design}) == 6 and _min_distance(design) > 0
    # First the baseline without PatchDropout (the costliest config at keep 1) ...
    full = [c for c in candidates if c.keep_rate == 1.0]
    assert design[0] == max(full, key=train_gflops)
    # ... then the study's corner: the most patch tokens, at the lowest keep rate among them.
    most = max(c.num_patches for c in candidates)
    assert design[1].num_patches == most
    assert design[1].keep_rate == min(c.keep_rate for c in candidates if c.num_patches == most) < 1.0
    rest = [train_gflops(c) for c in design[2:]]
    assert rest == sorted(rest)  # the spread, cheapest first
