"""bench/search.py's replay: the real searchers and schedulers, a stand-in trainable and controller."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import search  # noqa: E402  (bench/search.py)


@pytest.fixture(scope="module")
def committed() -> tuple[search.Bench, tuple[float, ...]]:
    return search.open_bench(search.DEFAULT_TABLE)


def test_the_table_holds_every_config_that_fits_the_largest_tier(committed: tuple[search.Bench, tuple[float, ...]]) -> None:
    from pdsweep.cost import Budget
    from pdsweep.sweep.sampler import BudgetSampler

    bench, tiers = committed
    wanted = {c.name for c in BudgetSampler(bench.space, Budget(max(tiers)), "fill", bench.num_classes).grid()}
    assert set(bench.table.runs) == wanted
    assert all(len(runs) >= 2 and all(len(r.val) == bench.table.epochs for r in runs) for runs in bench.table.runs.values())
    assert bench.space_path.name == "fashion_mnist.yaml" and tiers == (0.004, 0.01, 0.03)  # from the table's metadata


def check_replay(bench: search.Bench, replay: search.Replay, tier: float, trials: int) -> None:
    """A replay trained ``trials`` trials, spent no more than training each fully, and every regret is a true one."""
    assert replay.trials == trials and len(replay.regret) == trials
    assert 0 < replay.total <= trials * max(bench.table.tflop(n, bench.table.epochs) for n in bench.table.fitting(tier))
    assert all(0 <= r <= 100 for r in replay.regret) and replay.compute == sorted(replay.compute)
    reached = replay.compute_to(search.REGRET_POINTS)
    assert math.isinf(reached) or reached <= replay.total


@pytest.mark.parametrize("strategy", ["pdsweep", "by_hand"])
def test_a_replay_spends_what_it_trains_and_reports_a_true_regret(
        committed: tuple[search.Bench, tuple[float, ...]], tmp_path: Path, strategy: str) -> None:
    bench, tiers = committed
    replay = search.replay(bench, strategy, tiers[0], seed=0, trials=8, concurrency=2, folder=tmp_path)
    check_replay(bench, replay, tiers[0], 8)
    if strategy == "pdsweep":
        assert replay.distinct == 8  # no config twice in a tier


@pytest.mark.parametrize("peer", search.PEERS)
def test_a_peer_replays_its_trials_in_the_same_loop(
        committed: tuple[search.Bench, tuple[float, ...]], tmp_path: Path, peer: str) -> None:
    if peer in search.EXTRA:
        pytest.importorskip(search.EXTRA[peer])
    bench, tiers = committed
    replay = search.replay(bench, peer, tiers[0], seed=0, trials=4, concurrency=2, folder=tmp_path)
    check_replay(bench, replay, tiers[0], 4)


TINY_SPACE = """\
description: a tiny space for tests/test_bench_search.py
axes:
  model: [vit_micro]
  resolution: [28]
  patch_size: [7, 14]
  depth: [2]
  keep_rate: [0.5, 1.0]
training:
  epochs: 3
  batch_size: 32
  optimizer: adamw
  lr: 0.001
  weight_decay: 0.05
  warmup_epochs: 1
  precision: fp32
  seed: 0
"""


def write_tiny_table(folder: Path, *, metadata: dict | None = None) -> tuple[Path, Path, tuple[float, float]]:
    """A table of every config of a tiny space, 2 seeds x 3 epochs of made-up but plausible runs:
    finer patches and higher keep rates learn more, and cost more."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pdsweep.cost import Budget, train_gflops
    from pdsweep.space import load_space
    from pdsweep.sweep.sampler import BudgetSampler

    space_path = folder / "tiny.yaml"
    space_path.write_text(TINY_SPACE)
    configs = BudgetSampler(load_space(space_path), Budget(1.0), "fill", 10).grid()
    rows = []
    for config in configs:
        gflops = train_gflops(config)
        final = 0.55 + 0.1 * (config.patch_size == 7) + 0.08 * config.keep_rate
        for seed in (0, 1):
            val = [final - 0.12 / (epoch + 1) + 0.004 * seed for epoch in range(3)]
            rows.append({"config": config.name, "model": config.model, "resolution": config.resolution,
                         "patch_size": config.patch_size, "depth": config.depth, "keep_rate": config.keep_rate,
                         "ensemble_size": config.ensemble_size, "seed": seed, "val_accuracy": val,
                         "epoch_seconds": [1.0 + 1e4 * gflops] * 3, "train_gflops": gflops, "train_images": 500,
                         "test_accuracy": val[-1]})
    costs = sorted({row["train_gflops"] for row in rows})
    table = pa.Table.from_pylist(rows).replace_schema_metadata({"pdsweep.tabular": json.dumps(metadata or {})})
    table_path = folder / "tiny.parquet"
    pq.write_table(table, table_path)
    return table_path, space_path, (costs[1], costs[-1])


def test_a_new_table_replays_from_the_command_line(tmp_path: Path) -> None:
    table, space, tiers = write_tiny_table(tmp_path)
    tier_flag = ",".join(f"{t!r}" for t in tiers)
    command = [sys.executable, str(BENCH / "search.py"), "--table", str(table), "--space", str(space), "--tiers", tier_flag,
               "--seeds", "2", "--trials", "3", "--strategies", "pdsweep,random", "--json", "--no-record"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert set(summary["tiers"]) == {f"{t:g}" for t in tiers}
    for by_strategy in summary["tiers"].values():
        assert list(by_strategy) == ["pdsweep", "random"]
        for s in by_strategy.values():
            assert set(s) == {"median_compute_to_regret_0.5", "reached", "share_reaching", "at_trials"}
            assert 0 <= s["share_reaching"] <= 1 and s["median_compute_to_regret_0.5"] > 0
            at = s["at_trials"]
            assert set(at) == {"share_reaching", "median_final_regret", "median_compute", "median_trials",
                               "median_distinct_configs"}
            assert 0 <= at["share_reaching"] <= 1 and 0 <= at["median_final_regret"] <= 100
            assert at["median_compute"] > 0 and 1 <= at["median_trials"] <= 3
    settings = summary["settings"]
    assert settings["tiers"] == list(tiers) and settings["seeds"] == 2 and settings["trials"] == 3
    assert Path(settings["table"]).name == "tiny.parquet" and Path(settings["space"]).name == "tiny.yaml"


def test_space_and_tiers_default_to_the_table_metadata(tmp_path: Path) -> None:
    table, _, tiers = write_tiny_table(tmp_path, metadata={"space": "tiny.yaml", "tiers": [0.0], "seeds": 2})
    with pytest.raises(search.BenchError, match=r"tier 0 GFLOPs: 0 config\(s\) of table .*tiny.parquet fit, a search needs 2"):
        search.open_bench(table)
    bench, chosen = search.open_bench(table, tiers=tiers)
    assert bench.space_path == tmp_path / "tiny.yaml" and chosen == tiers


def test_a_table_without_tiers_or_space_says_which_flag_to_pass(tmp_path: Path) -> None:
    table, space, _ = write_tiny_table(tmp_path)
    with pytest.raises(search.BenchError, match="names no space file in its metadata; pass --space"):
        search.open_bench(table)
    with pytest.raises(search.BenchError, match="lists no tiers in its metadata; pass --tiers"):
        search.open_bench(table, space)


def test_a_space_that_allows_configs_the_table_lacks_is_refused(tmp_path: Path) -> None:
    table, space, tiers = write_tiny_table(tmp_path)
    space.write_text(TINY_SPACE.replace("depth: [2]", "depth: [2, 3]"))
    with pytest.raises(search.BenchError, match=r"allows 3 config\(s\) under .* that table .*tiny.parquet lacks \(e.g. vit_micro-28px-p14-d3"):
        search.open_bench(table, space, tiers)


def test_a_config_missing_from_the_table_is_named(committed: tuple[search.Bench, tuple[float, ...]]) -> None:
    with pytest.raises(search.BenchError, match=r"config vit_micro-28px-p4-d9-k1-x1 is not in table .*fashion_mnist.parquet"):
        committed[0].table.run("vit_micro-28px-p4-d9-k1-x1", replicate=0, replay=0)


def test_an_unknown_strategy_lists_the_valid_ones() -> None:
    with pytest.raises(SystemExit):
        search.parse(["--strategies", "pdsweep,hyperbnd"])
    with pytest.raises(argparse.ArgumentTypeError, match="unknown strategy hyperbnd; choose from pdsweep, random, "):
        search.strategy_list("pdsweep,hyperbnd")


def test_a_peer_whose_package_is_missing_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(search.EXTRA, "bohb", "no_such_package_for_bohb")
    search.check_installed(["pdsweep", "random"])  # pdsweep's strategies need no extra
    with pytest.raises(search.BenchError, match=r"strategy bohb needs no_such_package_for_bohb: pip install -e '.\[bench\]'"):
        search.check_installed(["pdsweep", "bohb"])
