from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from pdsweep.results import report, report_output
from pdsweep.results import rows as results
from pdsweep.results.rows import ResultRow
from pdsweep.errors import PdsweepError


def row(trial_id: str, tier: float, resolution: int, keep: float, val: float, train: float, *, seed: int = 0,
        status: str = "completed", inference: float | None = None, test: float | None = None,
        phase: str = "search", init: str = "random") -> ResultRow:
    base = {name: None for name in results.SCHEMA.names}
    base.update(
        sweep="hand", trial_id=trial_id, phase=phase, budget_gflops=tier, seed=seed, status=status,
        model="deit_tiny", resolution=resolution, patch_size=16, depth=12, ensemble_size=1, keep_rate=keep,
        sampling="random", keep_mode="fixed", init=init, tokens_kept=10, num_classes=10, train_gflops=train,
        inference_gflops=inference if inference is not None else train * 2, predicted_memory_gb=1.0,
        best_val_accuracy=val, test_accuracy=test if status == "completed" else None,
        epochs_run=10 if status == "completed" else 3, epochs_planned=10, wall_seconds=1.0,
    )
    return ResultRow.from_dict(base)


ROWS = [
    # tier 1.0: config A (two seeds: 0.70, 0.74), B 0.65, C stopped early at 0.80 (partial)
    row("a0", 1.0, 64, 1.0, 0.70, 0.9, test=0.69),
    row("a1", 1.0, 64, 1.0, 0.74, 0.9, seed=1, test=0.71),
    row("b", 1.0, 112, 0.5, 0.65, 0.5, test=0.60),
    row("c", 1.0, 128, 0.3, 0.80, 0.95, status="stopped"),
    # tier 4.0: D 0.85 at 3.0, E 0.82 at 1.5, F 0.60 at 0.4
    row("d", 4.0, 224, 0.5, 0.85, 3.0, test=0.84),
    row("e", 4.0, 224, 0.25, 0.82, 1.5, test=0.80),
    row("f", 4.0, 64, 0.5, 0.60, 0.4, test=0.58),
    row("x", 4.0, 112, 1.0, 0.99, 2.0, status="error"),  # errors never count
]


def test_best_runner_up_and_margin_per_tier() -> None:
    built = report.build("hand", ROWS)
    low, high = built.tiers
    assert (low.budget_gflops, low.trials) == (1.0, 4)
    # C's 0.80 is one early-stopped seed: it ranks on it only because no seed of C ran to the end.
    assert low.best.config.resolution == 128 and low.best.metric == pytest.approx(0.80) and low.best.test_accuracy is None
    assert low.runner_up.config.resolution == 64 and low.runner_up.metric == pytest.approx(0.72)
    assert low.runner_up.spread == pytest.approx(0.0282842712) and low.runner_up.seeds == 2
    assert low.runner_up.test_accuracy == pytest.approx(0.70)
    assert low.margin == pytest.approx(0.08)
    assert (high.best.config.keep_rate, high.runner_up.config.keep_rate) == (0.5, 0.25) and high.best.config.resolution == 224
    assert high.margin == pytest.approx(0.03)


def test_pareto_frontier_is_exact() -> None:
    built = report.build("hand", ROWS)
    # vs train GFLOPs: f (0.4, .60) b (0.5, .65) a0 (0.9 .70) -> a1 (0.9, .74) wins the tie, c (0.95, .80), e (1.5, .82), d (3.0, .85)
    assert [r.trial_id for r in built.pareto_train] == ["f", "b", "a1", "c", "e", "d"]
    assert [r.trial_id for r in built.pareto_inference] == ["f", "b", "a1", "c", "e", "d"]  # 2x train here
    payload = built.to_json()
    assert [p["trial_id"] for p in payload["pareto"]] == ["f", "b", "a1", "c", "e", "d"]
    assert payload["tiers"][1]["best"]["metric"] == 0.85 and payload["tiers"][1]["runner_up"]["metric"] == 0.82


def test_pareto_drops_dominated_points() -> None:
    rows = [row("p", 1, 64, 1, 0.5, 1.0), row("q", 1, 64, 0.5, 0.4, 2.0), row("r", 1, 64, 0.3, 0.6, 3.0)]
    assert [r.trial_id for r in report.pareto(rows, "train_gflops")] == ["p", "r"]


def test_plot_and_markdown(tmp_path: Path) -> None:
    md, png = report_output.write(report.build("hand", ROWS), tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
        assert image.size[0] > 600 and image.size[1] > 400
    text = md.read_text()
    assert "| 4 | 4 | `deit_tiny-224px-p16-d12-k0.5-x1` | random | 85.0% |" in text
    assert "72.0% ± 2.8%" in text and "![accuracy vs train GFLOPs](report.png)" in text


def test_compare_two_sweeps() -> None:
    one = report.build("one", ROWS)
    two = report.build("two", [replace(r, best_val_accuracy=r.best_val_accuracy - 0.1) for r in ROWS])
    text = report_output.compare([one, two])
    assert "| 4 | `deit_tiny-224px-p16-d12-k0.5-x1` | 85.0% | `deit_tiny-224px-p16-d12-k0.5-x1` | 75.0% |" in text


def test_no_finished_trial() -> None:
    with pytest.raises(PdsweepError, match=r"sweep 'e' has no finished trial yet; wait for one, or `pdsweep resume e`"):
        report.build("e", [row("x", 1, 64, 1, 0.5, 1, status="error")])


def _sweep_folder(runs: Path, name: str, rows: list | None) -> None:
    (runs / name).mkdir(parents=True)
    (runs / name / "sweep.json").write_text("{}")
    if rows is not None:
        results.write(rows, runs / name / results.RESULTS_FILE)


def test_cli_report(cli, tmp_path: Path) -> None:
    from conftest import assert_one_line_error

    runs = tmp_path / "runs"
    _sweep_folder(runs, "hand", ROWS)
    result = cli("report", "hand", "--runs-dir", runs, "--json")
    assert result.code == 0 and result.json()["tiers"][0]["budget_gflops"] == 1.0
    assert (runs / "hand" / "report" / "report.png").is_file()
    assert "Best config per budget tier" in cli("report", "hand", "--runs-dir", runs).out
    _sweep_folder(runs, "other", [replace(r, sweep="other") for r in ROWS])
    assert "Sweeps compared" in cli("report", "hand", "other", "--runs-dir", runs, "--out", tmp_path / "out").out
    assert (tmp_path / "out" / "other" / "report.md").is_file()
    assert_one_line_error(cli("report", "ghost", "--runs-dir", runs), "no sweep named 'ghost'", "known sweeps: hand, other")
    _sweep_folder(runs, "empty", None)
    assert_one_line_error(cli("report", "empty", "--runs-dir", runs), "sweep 'empty' has no finished trial yet")
    _sweep_folder(runs, "corrupt", None)
    (runs / "corrupt" / results.RESULTS_FILE).write_bytes(b"PAR1 not really")
    assert_one_line_error(cli("report", "corrupt", "--runs-dir", runs), "is not a readable Parquet file")
    assert_one_line_error(cli("report", "hand", "--runs-dir", runs, "--to-mlflow"), "was run without MLflow tracking")


# ---- uncertainty: bootstrap intervals and the separation verdict -------------------------


def _seeds(trial: str, resolution: int, vals: list[float]) -> list[ResultRow]:
    return [row(f"{trial}{i}", 1.0, resolution, 1.0, v, 0.5, seed=i, test=v) for i, v in enumerate(vals)]


def test_overlapping_seeds_are_tied_and_apart_ones_separated(tmp_path: Path) -> None:
    # Winner's mean 0.72 vs the runner-up's 0.71, with seeds interleaved: noise decides.
    tied = report.build("t", _seeds("a", 64, [0.70, 0.74, 0.72]) + _seeds("b", 112, [0.73, 0.69, 0.71]))
    [tier] = tied.tiers
    assert tier.best.config.resolution == 64 and tier.margin == pytest.approx(0.01)
    assert tier.verdict == "tied" and tier.difference[0] < 0 < tier.difference[1]
    # Every seed of the winner above every seed of the runner-up: no resample reverses them.
    apart = report.build("s", _seeds("a", 64, [0.80, 0.82, 0.81]) + _seeds("b", 112, [0.70, 0.72, 0.71]))
    [tier] = apart.tiers
    assert tier.verdict == "separated"
    low, high = tier.difference
    # Welch's interval, as scipy's own t-test computes it.
    from scipy import stats

    expected = stats.ttest_ind([0.80, 0.82, 0.81], [0.70, 0.72, 0.71], equal_var=False).confidence_interval(0.95)
    assert 0 < low < tier.margin < high and (low, high) == pytest.approx((expected.low, expected.high))
    # Each top config's interval of its mean lies within its seeds' range and holds the mean.
    for score in tier.top:
        eps = 1e-12  # fmean of a resample sums in floating point
        assert min(score.values) - eps <= score.interval[0] <= score.metric <= score.interval[1] <= max(score.values) + eps
    payload = apart.to_json()["tiers"][0]
    assert payload["verdict"] == "separated" and [s["seeds"] for s in payload["top"]] == [3, 3]
    assert payload["difference_interval"] == [low, high] and len(payload["top"][0]["interval"]) == 2
    text = report_output.markdown(apart)
    assert "| 1 | 1 | `deit_tiny-64px-p16-d12-k1-x1` | 81.0% | [80.0%, 82.0%] | 3 |" in text and "| separated |" in text
    assert "separated from `deit_tiny-112px-p16-d12-k1-x1`: difference +10.0%" in text
    assert "tied within noise with" in report_output.markdown(tied)


def test_bootstrap_is_deterministic_and_needs_two_seeds() -> None:
    values = [0.61, 0.64, 0.70, 0.58]
    assert report.bootstrap(values) == report.bootstrap(values)  # a fixed resampling seed
    assert report.bootstrap([0.7]) is None and report.bootstrap([0.7, 0.8], [0.6]) is None
    low, high = report.bootstrap(values)
    assert min(values) - 1e-12 <= low < high <= max(values) + 1e-12


def test_one_seed_has_no_interval_and_no_verdict() -> None:
    built = report.build("one", [row("a", 1.0, 64, 1.0, 0.80, 0.5), row("b", 1.0, 112, 1.0, 0.70, 0.5)])
    [tier] = built.tiers
    assert tier.verdict == "single seed" and tier.difference is None and tier.best.interval is None
    assert "no interval (one seed)" in report_output.markdown(built)
    alone = report.build("alone", [row("a", 1.0, 64, 1.0, 0.80, 0.5)])
    assert alone.tiers[0].verdict == "no runner-up" and len(alone.tiers[0].top) == 1


def test_top_k_ranks_that_many_configs() -> None:
    rows = [row(f"r{i}", 1.0, 64 + 16 * i, 1.0, 0.5 + i / 100, 0.5) for i in range(5)]
    assert [s.metric for s in report.build("k", rows, top_k=4).tiers[0].top] == pytest.approx([0.54, 0.53, 0.52, 0.51])
    assert len(report.build("k", rows).tiers[0].top) == report.TOP_K == 3


def test_the_summary_says_the_verdict(tmp_path: Path) -> None:
    from pdsweep.results.summary import summary_lines

    built = report.build("s", _seeds("a", 64, [0.80, 0.82, 0.81]) + _seeds("b", 112, [0.70, 0.72, 0.71]))
    lines = summary_lines("s", 6, "x", built)
    assert "over 3 seeds (95% interval" in lines[1] and lines[1].endswith("separated")


def test_two_equal_configs_are_rarely_called_separated() -> None:
    """The verdict's false alarms: two configs of one true accuracy, 3 seeds each, seed noise of
    one point. At 95% about 5% should come out separated (a bootstrap of the difference: ~23%)."""
    import random

    rng = random.Random(0)
    calls = [report.welch([rng.gauss(0.8, 0.01) for _ in range(3)], [rng.gauss(0.8, 0.01) for _ in range(3)])
             for _ in range(400)]
    separated = sum(1 for low, high in calls if low > 0 or high < 0) / len(calls)
    assert separated <= 0.08


def test_a_config_with_one_lucky_seed_does_not_outrank_repeated_ones() -> None:
    # The search ran a, b and c once each; the repeats gave a and b two more seeds, and their means fell.
    search = [row("a0", 1.0, 64, 1.0, 0.80, 0.5), row("b0", 1.0, 112, 1.0, 0.79, 0.5), row("c0", 1.0, 160, 1.0, 0.775, 0.5)]
    repeats = [row(f"{name}{i}", 1.0, resolution, 1.0, value, 0.5, seed=i, phase="repeat")
               for name, resolution, values in (("a", 64, (0.76, 0.75)), ("b", 112, (0.74, 0.75)))
               for i, value in enumerate(values, 1)]
    before = report.build("r", search).tiers[0]
    assert before.best.config.resolution == 64  # one seed each: the highest
    [tier] = report.build("r", search + repeats).tiers
    assert tier.best.config.resolution == 64 and tier.runner_up.config.resolution == 112
    assert [s.config.resolution for s in tier.top] == [64, 112, 160] and tier.top[2].seeds == 1
    assert tier.verdict == "tied"


def test_pretrained_and_random_compare_at_equal_cost() -> None:
    pairs = [row("p0", 4.0, 224, 0.5, 0.80, 3.0, init="pretrained"), row("p1", 4.0, 224, 0.5, 0.84, 3.0, seed=1, init="pretrained"),
             row("r0", 4.0, 224, 0.5, 0.60, 3.0), row("r1", 4.0, 224, 0.5, 0.62, 3.0, seed=1),
             row("x0", 4.0, 112, 1.0, 0.70, 2.0, init="pretrained")]  # no random twin: not a pair
    built = report.build("init", pairs)
    assert built.tiers[0].best.config.init == "pretrained"
    (pair,) = built.inits
    assert pair.margin == pytest.approx(0.82 - 0.61)
    low, high = pair.difference
    assert 0 < low < pair.margin < high
    text = report_output.markdown(built)
    assert "## pretrained vs random at equal cost" in text
    assert "| 4 | `deit_tiny-224px-p16-d12-k0.5-x1` | 3 | 82.0% ± 2.8% | 61.0% ± 1.4% | +21.0% |" in text
    assert "| `deit_tiny-224px-p16-d12-k0.5-x1-pretrained` | pretrained |" in text
    assert built.to_json()["init_comparison"][0]["config"] == "deit_tiny-224px-p16-d12-k0.5-x1"
