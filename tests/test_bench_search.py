"""bench/search.py's replay on the committed table: the real searchers, a stand-in trainable."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import search  # noqa: E402  (bench/search.py)


@pytest.fixture(scope="module")
def table() -> search.Table:
    return search.Table.read(search.TABLE)


def test_the_table_holds_every_config_that_fits_the_largest_tier(table: search.Table) -> None:
    from pdsweep.cost import Budget
    from pdsweep.space import load_space
    from pdsweep.sweep.sampler import BudgetSampler

    space = load_space(str(search.SPACE))
    wanted = {c.name for c in BudgetSampler(space, Budget(max(search.TIERS)), "fill", 10).grid()}
    assert set(table.runs) == wanted
    assert all(len(runs) >= 2 and all(len(r.val) == table.epochs for r in runs) for runs in table.runs.values())


@pytest.mark.parametrize("strategy", ["pdsweep", "by_hand"])
def test_a_replay_spends_what_it_trains_and_reports_a_true_regret(table: search.Table, tmp_path: Path, strategy: str) -> None:
    tier = search.TIERS[0]
    replay = search.replay(table, strategy, True, tier, seed=0, trials=8, concurrency=2, folder=tmp_path)
    assert replay.trials == 8 and len(replay.regret) == 8
    assert 0 < replay.total <= 8 * max(table.tflop(n, table.epochs) for n, g in table.gflops.items() if g <= tier)
    assert all(0 <= r <= 100 for r in replay.regret) and replay.compute == sorted(replay.compute)
    if strategy == "pdsweep":
        assert replay.distinct == 8  # no config twice in a tier
    reached = replay.compute_to(search.REGRET_POINTS)
    assert math.isinf(reached) or reached <= replay.total
