"""A space's ``configs:`` list (pdsweep/space/listed.py), the paper recipes that use it, and
``--set`` into listed configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import assert_one_line_error
from pdsweep.config import Config
from pdsweep.cost import Budget, estimate
from pdsweep.errors import PdsweepError
from pdsweep.space import group_baselines, listed_budget, load_space, parse_space, plan
from pdsweep.space.files import bundled_space_names
from pdsweep.sweep.sampler import BudgetSampler

RECIPES = sorted((Path(__file__).resolve().parents[1] / "search_spaces" / "paper").glob("*.yaml"))
THREE = {
    "configs": [
        {"group": "a", "label": "small image", "model": "vit_micro", "resolution": 32, "patch_size": 4, "keep_rate": 0.5},
        {"group": "a", "label": "full", "model": "vit_micro", "resolution": 32, "patch_size": 8},
        {"group": "b", "model": "vit_micro", "resolution": 48, "patch_size": 8, "keep_rate": 0.25, "depth": 3,
         "sampling": "grid"},
    ],
    "training": {"epochs": 1},
}


def test_listed_configs_are_the_spaces_only_points_as_listed() -> None:
    space = parse_space(THREE, name="three")
    configs = space.listed(num_classes=4)
    assert [c.name for c in configs] == [
        "vit_micro-32px-p4-d4-k0.5-x1", "vit_micro-32px-p8-d4-k1-x1", "vit_micro-48px-p8-d3-k0.25-x1-grid"]
    assert {c.num_classes for c in configs} == {4}
    assert space.architectures(4) == configs  # no product of the axes: 32/4, 48/4 ... never appear
    assert space.axes["resolution"].values() == (32, 48)
    tier = plan(space, listed_budget(space, 4), num_classes=4)
    assert [p.config for p in tier.configs] == configs and tier.listed
    assert [p.label for p in tier.configs] == ["small image", "full", ""]
    # With no budget given, the tier's budget is the dearest listed config's cost, so every one fits.
    assert listed_budget(space, 4).gflops == max(estimate(c, space.step_for(c)).train_gflops for c in configs)
    assert BudgetSampler(space, listed_budget(space, 4), num_classes=4).grid() == configs


def test_a_listed_config_over_the_budget_is_named_not_dropped() -> None:
    space = parse_space(THREE, name="three")
    costs = sorted(estimate(c).train_gflops for c in space.listed())
    with pytest.raises(PdsweepError, match=r"configs\[\d\] \(.*\) of space 'three' does not fit a budget of .* GFLOPs"):
        plan(space, Budget((costs[-1] + costs[-2]) / 2))
    plan(space, Budget(costs[-1]))  # every one fits: no error


def test_group_baseline_is_its_full_token_config_else_its_first() -> None:
    space = parse_space(THREE, name="three")
    baselines = group_baselines(space.configs)
    assert baselines["a"].label == "full"  # listed second, but the one keeping every token
    assert baselines["b"] is space.configs[2]


def test_listed_config_without_init_starts_pretrained_where_weights_are_listed(tmp_path: Path) -> None:
    weights = tmp_path / "micro.safetensors"
    weights.write_bytes(b"")
    document = {**THREE, "weights": {"vit_micro": str(weights)}}
    document["configs"] = [*THREE["configs"][:2], {**THREE["configs"][2], "init": "random"}]
    space = parse_space(document, name="w")
    assert [e.config.init for e in space.configs] == ["pretrained", "pretrained", "random"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"configs": []}, r"configs: must be a non-empty list of configs"),
        ({"configs": {"model": "vit_micro"}}, r"configs: must be a non-empty list"),
        ({"configs": ["vit_micro"]}, r"configs\[0\]: must be a mapping of axis values"),
        ({"configs": [{"model": "vit_micro", "resolution": 32}]}, r"configs\[0\].patch_size: is missing"),
        ({"configs": [{**THREE["configs"][0], "resoluton": 32}]}, r"configs\[0\].resoluton: unknown key; did you mean 'resolution'"),
        ({"configs": [{**THREE["configs"][0], "keep_rate": [0.5, 1]}]}, r"configs\[0\].keep_rate: a listed config takes one value"),
        ({"configs": [{**THREE["configs"][0], "keep_rate": 1.5}]}, r"configs\[0\].keep_rate: must be a number in \(0, 1\]"),
        ({"configs": [{**THREE["configs"][0], "model": "vit_huge"}]}, r"configs\[0\].model: must be one of vit_micro"),
        ({"configs": [{**THREE["configs"][0], "patch_size": 5}]}, r"configs\[0\]: patch size 5 does not divide resolution 32"),
        ({"configs": [{**THREE["configs"][0], "label": ["x"]}]}, r"configs\[0\].label: must be text"),
        ({"configs": [{**THREE["configs"][0], "keep_mode": "uniform"}]}, r"configs\[0\]: keep mode uniform needs"),
        ({"configs": [THREE["configs"][0], {**THREE["configs"][0], "label": "again"}]},
         r"configs\[1\]: lists vit_micro-32px-p4-d4-k0.5-x1 again \(configs\[0\]: both keep 32 of 64 patches\)"),
        ({"configs": [THREE["configs"][0], {**THREE["configs"][0], "keep_rate": 0.51}]},
         r"configs\[1\]: lists a config \(vit_micro-32px-p4-d4-k0.51-x1\), which trains as vit_micro-32px-p4-d4-k0.5-x1"),
        ({"configs": [THREE["configs"][0], {**THREE["configs"][0], "depth": 4}]},  # vit_micro's own depth
         r"configs\[1\]: lists vit_micro-32px-p4-d4-k0.5-x1 again"),
        ({"configs": [{"model": "deit_tiny", "resolution": 448, "patch_size": 8, "keep_rate": 0.251},
                      {"model": "deit_tiny", "resolution": 448, "patch_size": 8, "keep_rate": 0.2514}]},
         r"configs\[1\]: is named deit_tiny-448px-p8-d12-k0.251-x1 as configs\[0\] is, but keeps 788 .* not 787"),
        ({"axes": {"model": "vit_micro"}}, r"configs: a space gives axes \(to search\) or configs"),
        ({"configs": [{**THREE["configs"][0], "init": "pretrained"}]}, r"configs: pretrained needs weights for every model"),
    ],
)
def test_malformed_configs_name_the_entry_and_what_is_allowed(change: dict, message: str) -> None:
    with pytest.raises(PdsweepError, match=r"^space.yaml: " + message):
        parse_space({**THREE, **change}, name="bad", source="space.yaml")


def test_uniform_keep_mode_takes_its_range_low() -> None:
    entry = {"model": "vit_micro", "resolution": 32, "patch_size": 4, "keep_mode": "uniform", "keep_range_low": 0.5}
    space = parse_space({"configs": [entry]}, name="u")
    config = space.configs[0].config
    assert (config.keep_range_low, config.keep_rate) == (0.5, 1.0)
    assert plan(space, listed_budget(space)).configs[0].keep_rate_low == 0.5


def test_set_goes_into_every_listed_config_but_not_into_a_list_of_values() -> None:
    recipe = Path(__file__).resolve().parents[1] / "search_spaces" / "paper" / "keep_rate.yaml"
    space = load_space(recipe, ["configs.model=vit_micro", "configs.resolution=32", "configs.patch_size=4"])
    assert {(c.model, c.resolution, c.patch_size) for c in space.listed()} == {("vit_micro", 32, 4)}
    assert len(space.configs) == 10 and space.configs[0].label == "keep 1.0"
    with pytest.raises(PdsweepError, match=r"\(with --set configs.resolution=big\): configs\[0\].resolution: must be a positive integer"):
        load_space(recipe, ["configs.resolution=big"])
    with pytest.raises(PdsweepError, match=r"configs\[0\].colour: unknown key"):
        load_space(recipe, ["configs.colour=red"])
    with pytest.raises(PdsweepError, match=r"--set training.test_keep_rates.0: training.test_keep_rates is a list, "
                                           r"and a key path cannot go into a list"):
        load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "paper" / "robustness.yaml",
                   ["training.test_keep_rates.0=0.5"])


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_and_plans_its_configs_with_costs(recipe: Path, cli) -> None:
    space = load_space(recipe)
    assert space.configs and space.description
    assert recipe.read_text().startswith("# What it tests:") and "claim" in recipe.read_text()
    result = cli("plan", "--space", recipe, "--json")
    assert result.code == 0, result.err
    planned = result.json()
    assert planned["budget_gflops"] is None and len(planned["configs"]) == len(space.configs)
    for row, entry in zip(planned["configs"], space.configs):
        config = entry.for_classes(10)
        assert (row["label"], row["group"]) == (entry.label, entry.group)
        assert row["train_gflops"] == pytest.approx(estimate(config, space.step_for(config)).train_gflops)
    text = cli("plan", "--space", recipe)
    assert text.code == 0 and all(entry.config.name in text.out for entry in space.configs)


def test_recipes_are_bundled_by_name() -> None:
    assert "paper/keep_rate" in bundled_space_names()
    assert load_space("paper/keep_rate").name == "keep_rate"


def test_equal_cost_recipes_are_equal_cost() -> None:
    """The study's comparisons hold their configs at about equal train GFLOPs (within 15%)."""
    for name in ("depth", "ensemble", "resolution_patch", "model_size"):
        space = load_space(f"paper/{name}")
        for group in {e.group for e in space.configs}:
            costs = [estimate(e.for_classes(1000)).train_gflops for e in space.configs if e.group == group]
            assert max(costs) / min(costs) < 1.15, (name, group, costs)


def test_plan_and_run_without_a_budget_refuse_a_space_of_axes(cli, tmp_path: Path) -> None:
    assert_one_line_error(cli("plan", "--space", "quickstart"), "needs a budget; give --budget-gflops")
    result = cli("run", "--space", "quickstart", "--runs-dir", tmp_path / "runs", "--dry-run")
    assert_one_line_error(result, "needs a budget; give --budget-gflops")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--search", "tpe"], "use --search grid (not tpe)"),
        (["--search", "grid", "--keep-policy", "search"], "drop --keep-policy search"),
        (["--search", "grid", "--budget-gflops", "20,30"], "give one --budget-gflops or none"),
        (["--search", "grid", "--scheduler", "asha"], "ASHA would stop some of them early"),
    ],
)
def test_run_refuses_what_would_not_compare_listed_configs_as_listed(cli, tmp_path: Path, flags: list[str],
                                                                    message: str) -> None:
    result = cli("run", "--space", "paper/keep_rate", *flags, "--runs-dir", tmp_path / "runs", "--dry-run")
    assert_one_line_error(result, "lists its configs, to compare them as listed", message)
    assert not (tmp_path / "runs").exists()
