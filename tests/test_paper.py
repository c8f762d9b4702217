"""A shipped recipe run CPU-sized through --set, and its paper layout (pdsweep/results/paper.py)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from pdsweep.cost import estimate
from pdsweep.results import rows as results
from pdsweep.space import load_space
from pdsweep.sweep import SweepSettings, run_sweep

RECIPE = Path(__file__).resolve().parents[1] / "search_spaces" / "paper" / "keep_rate.yaml"
# DeiT-B at 224 px becomes a one-block vit_micro at 32 px (16 patches, so the ten keep rates keep
# ten different patch counts), one epoch, and a two-point robustness curve.
CPU_SIZED = ("configs.model=vit_micro", "configs.resolution=32", "configs.patch_size=8", "configs.depth=1",
             "training.epochs=1", "training.batch_size=16", "training.precision=fp32", "training.augment=false",
             "training.warmup_epochs=0", "training.test_keep_rates=[1, 0.5]")


@pytest.fixture(scope="module")
def recipe_sweep(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("paper") / "runs"
    settings = SweepSettings(name="keep", space=str(RECIPE), overrides=CPU_SIZED, budgets=(), search="grid",
                             scheduler="none", dataset="synthetic:40", runs_dir=str(runs), concurrency=2,
                             estimate=False, cache_dir=str(runs.parent / "cache"))
    outcome = run_sweep(settings, out=lambda _: None, err=lambda _: None)
    assert len(outcome.rows) == 10 and {r.status for r in outcome.rows} == {"completed"}
    return runs


def test_a_recipe_runs_every_listed_config_once_under_its_dearest_cost(recipe_sweep: Path) -> None:
    rows = results.read_rows(recipe_sweep / "keep" / results.RESULTS_FILE)
    space = load_space(RECIPE, CPU_SIZED)
    assert sorted(r.config.name for r in rows) == sorted(e.config.name for e in space.configs)
    costs = {r.config.name: r.train_gflops for r in rows}
    assert {r.budget_gflops for r in rows} == {max(costs.values())}  # no budget given: the dearest config's
    for row in rows:
        assert row.train_gflops == pytest.approx(estimate(row.config, space.training.step).train_gflops)
        assert [p.keep_rate for p in row.robustness] == [1.0, 0.5]
        assert (row.attention, row.attention_backend) == ("fused", "flash (CPU)")  # the kernel that ran, recorded


def test_paper_layout_gives_each_config_its_difference_against_the_baseline(recipe_sweep: Path, cli) -> None:
    result = cli("report", "keep", "--runs-dir", recipe_sweep, "--layout", "paper", "--json")
    assert result.code == 0, result.err
    table = result.json()
    rows = {r.config.name: r for r in results.read_rows(recipe_sweep / "keep" / results.RESULTS_FILE)}
    assert table["recipe"] == "keep_rate" and [r["label"] for r in table["rows"]][:2] == ["keep 1.0", "keep 0.9"]
    baseline = next(r for r in table["rows"] if r["baseline"])
    assert baseline["label"] == "keep 1.0" and baseline["delta"] is None
    for row in table["rows"]:
        trial = rows[row["config"]]
        assert row["metric"] == pytest.approx(trial.best_val_accuracy)
        assert row["train_gflops"] == pytest.approx(trial.train_gflops)
        assert row["memory_gb"] == pytest.approx(trial.predicted_memory_gb)
        assert row["robustness"] == {f"{p.keep_rate:g}": pytest.approx(p.accuracy) for p in trial.robustness}
        if not row["baseline"]:
            expected = trial.best_val_accuracy - rows[baseline["config"]].best_val_accuracy
            assert row["delta"] == pytest.approx(expected)
            assert row["delta_interval"] is None  # one seed each: no interval
    text = cli("report", "keep", "--runs-dir", recipe_sweep, "--layout", "paper")
    assert text.code == 0 and "keep 1.0 (baseline)" in text.out and "| keep 0.1 |" in text.out
    assert "test-time keep rate" in text.out
    report_dir = recipe_sweep / "keep" / "report"
    assert (report_dir / "paper.md").is_file() and (report_dir / "robustness.png").stat().st_size > 0
    # The per-tier report still reads the same sweep.
    assert cli("report", "keep", "--runs-dir", recipe_sweep, "--json").json()["tiers"][0]["trials"] == 10
    mean = statistics.fmean(r["metric"] for r in table["rows"])
    assert 0 < mean <= 1


def test_paper_layout_refuses_a_sweep_of_axes(ray_session, tmp_path: Path, cli) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text("axes: {model: vit_micro, resolution: 16, patch_size: 8, depth: 1, keep_rate: 1.0}\n"
                     "training: {epochs: 1, batch_size: 16, precision: fp32, augment: false}\n")
    settings = SweepSettings(name="axes", space=str(space), budgets=(1.0,), search="grid", scheduler="none",
                             dataset="synthetic:40", runs_dir=str(tmp_path / "runs"), estimate=False,
                             cache_dir=str(tmp_path / "cache"))
    run_sweep(settings, out=lambda _: None, err=lambda _: None)
    result = cli("report", "axes", "--runs-dir", tmp_path / "runs", "--layout", "paper")
    assert_one_line_error(result, "searched the axes of space 'tiny'; --layout paper is for a recipe")


def test_paper_rows_with_seeds_get_welchs_interval_against_the_baseline(recipe_sweep: Path) -> None:
    """Two more seeds per config (rows copied with other seeds and accuracies): each difference
    gets Welch's 95% interval, computed here from the seeds' accuracies by scipy."""
    import dataclasses

    from scipy import stats

    from pdsweep.results.paper import paper_table

    rows = results.read_rows(recipe_sweep / "keep" / results.RESULTS_FILE)
    seeded = [dataclasses.replace(row, trial_id=f"{row.trial_id}-{seed}", seed=seed,
                                  best_val_accuracy=row.best_val_accuracy * (1 - 0.04 * seed * (i % 3 + 1)))
              for i, row in enumerate(rows) for seed in (1, 2)]
    space = load_space(RECIPE, CPU_SIZED)
    table = paper_table("keep", "keep_rate", "", space.configs, [*rows, *seeded])
    by_config: dict[str, list[float]] = {}
    for row in [*rows, *seeded]:
        by_config.setdefault(row.config.name, []).append(row.best_val_accuracy)
    base = by_config[table.rows[0].entry.config.name]
    for row in table.rows[1:]:
        mine = by_config[row.entry.config.name]
        assert row.score.seeds == 3 and row.delta == pytest.approx(statistics.fmean(mine) - statistics.fmean(base))
        welch = stats.ttest_ind(mine, base, equal_var=False).confidence_interval(0.95)
        assert row.delta_interval == pytest.approx((welch.low, welch.high))


def test_a_refused_back_fill_writes_no_report(recipe_sweep: Path, tmp_path: Path, cli) -> None:
    """--to-mlflow against a tracking server that does not answer: one line, exit 2, and neither
    report is written (every sweep is checked before anything is)."""
    import json
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(recipe_sweep / "keep", runs / "keep")
    state = json.loads((runs / "keep" / "sweep.json").read_text())
    state["settings"]["mlflow_uri"] = state["mlflow"]["uri"] = "http://127.0.0.1:9"
    (runs / "keep" / "sweep.json").write_text(json.dumps(state))
    for layout in ("tiers", "paper"):
        result = cli("report", "keep", "--runs-dir", runs, "--to-mlflow", "--layout", layout, "--out", tmp_path / "out")
        assert_one_line_error(result, "sweep 'keep': cannot reach the MLflow tracking store http://127.0.0.1:9")
    assert not (tmp_path / "out").exists()


def _child_tags(runs: Path) -> dict[str, dict[str, str]]:
    """Each child run's tags in the sweep's SQLite store, by run name (the config's name)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("keep_rate")
    found = client.search_runs([experiment.experiment_id], "tags.`mlflow.parentRunId` != ''")
    return {run.info.run_name: run.data.tags for run in found}


def test_mlflow_names_each_trial_by_its_label_and_group_live_and_back_filled(recipe_sweep: Path, tmp_path: Path,
                                                                            cli) -> None:
    """The MLflow UI shows a recipe's trials as the paper table does: its label and group as tags,
    on the runs logged during the sweep and on the runs `report --to-mlflow` back-fills."""
    import shutil

    from mlflow.tracking import MlflowClient

    space = load_space(RECIPE, CPU_SIZED)
    expected = {e.config.name: (e.label, e.group) for e in space.configs}
    live = _child_tags(recipe_sweep)
    assert {name: (t.get("pdsweep.label"), t.get("pdsweep.group")) for name, t in live.items()} == expected
    # Back-filled: a copy of the sweep whose child runs were deleted from its store.
    runs = tmp_path / "runs"
    shutil.copytree(recipe_sweep, runs)
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("keep_rate")
    for run in client.search_runs([experiment.experiment_id], "tags.`mlflow.parentRunId` != ''"):
        client.delete_run(run.info.run_id)
    assert _child_tags(runs) == {}
    result = cli("report", "keep", "--runs-dir", runs, "--to-mlflow", "--out", tmp_path / "out")
    assert result.code == 0, result.err
    assert "back-filled 10 trial(s)" in result.err
    filled = _child_tags(runs)
    assert {name: (t.get("pdsweep.label"), t.get("pdsweep.group")) for name, t in filled.items()} == expected
