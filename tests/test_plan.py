from __future__ import annotations

from dataclasses import replace

import pytest

from pdsweep.config import Config, patches_kept
from pdsweep.cost import Budget, StepSetup, estimate, memory, train_gflops
from pdsweep.errors import PdsweepError
from pdsweep.space import plan
from pdsweep.space import load_space, parse_space


@pytest.fixture(scope="module")
def paper():
    return load_space("paper")


@pytest.mark.parametrize("budget", [Budget(1.3), Budget(4.6), Budget(17.6), Budget(17.6, memory_gb=8.0)])
def test_every_planned_config_fits_and_fills_its_budget(paper, budget: Budget) -> None:
    result = plan(paper, budget)
    t = paper.training
    setup = StepSetup(t.batch_size, t.precision, t.optimizer)
    assert 0 < len(result.configs) < result.architectures == 432
    for planned in result.configs:
        # Re-derive the cost from a fresh config, not from what the planner returned.
        c = planned.config
        fresh = Config(c.model, c.resolution, c.patch_size, keep_rate=c.keep_rate, depth=c.depth, ensemble_size=c.ensemble_size)
        assert train_gflops(fresh) <= budget.gflops
        # Its step as the plan arranged it fits the cap; one arranged otherwise did not fit as it is.
        arranged = replace(setup, micro_batch_size=planned.cost.setup.micro_batch_size,
                           member_turns=planned.cost.setup.member_turns)
        assert budget.memory_gb is None or memory(fresh, arranged).gb <= budget.memory_gb
        if arranged.accumulates or (arranged.member_turns and fresh.ensemble_size > 1):
            assert budget.memory_gb is not None and memory(fresh, setup).gb > budget.memory_gb
        assert 0.05 <= fresh.keep_rate <= 1.0
        # fill: one more patch would break the budget, unless every patch is already kept.
        if fresh.patches_kept < fresh.num_patches:
            assert not budget.admits(estimate(fresh.with_keep_count(fresh.patches_kept + 1), setup, budget.memory_gb))


def test_infeasible_architectures_are_left_out_not_clipped(paper) -> None:
    listed = {(c.config.model, c.config.resolution, c.config.patch_size, c.config.blocks, c.config.ensemble_size)
              for c in plan(paper, Budget(4.6)).configs}
    for arch in paper.architectures():
        lowest = Config(arch.model, arch.resolution, arch.patch_size, keep_rate=0.05, depth=arch.depth,
                        ensemble_size=arch.ensemble_size)
        key = (arch.model, arch.resolution, arch.patch_size, arch.blocks, arch.ensemble_size)
        assert (key in listed) == (train_gflops(lowest) <= 4.6)


def test_configs_are_sorted_cheapest_first(paper) -> None:
    costs = [c.cost.train_gflops for c in plan(paper, Budget(17.6)).configs]
    assert costs == sorted(costs)


def test_larger_budget_admits_a_superset(paper) -> None:
    def names(b: float) -> set[str]:
        return {c.config.name.rsplit("-k", 1)[0] for c in plan(paper, Budget(b)).configs}

    assert names(1.3) < names(4.6) < names(17.6)


def test_memory_cap_removes_configs(paper) -> None:
    assert len(plan(paper, Budget(17.6, memory_gb=4.0)).configs) < len(plan(paper, Budget(17.6)).configs)


@pytest.mark.parametrize(("memory_gb", "at_least"), [(8.0, 300), (16.0, 330)])
def test_arrangements_keep_configs_a_small_gpu_would_lose(paper, memory_gb: float, at_least: int) -> None:
    """Members in turns and micro-batches keep what fits member by member or a micro-batch at a
    time (the card's space at 17.6 GFLOPs: 276 and 312 configs fitted 8 and 16 GB as they were)."""
    as_it_is = load_space("paper", [f"training.micro_batch_size={paper.training.batch_size}", "training.member_turns=false"])
    capped = plan(paper, Budget(17.6, memory_gb=memory_gb))
    assert len(capped.configs) >= at_least
    assert len(capped.configs) > len(plan(as_it_is, Budget(17.6, memory_gb=memory_gb)).configs)
    assert {c.cost.setup.member_turns for c in capped.configs} == {False, True}
    assert any(c.cost.setup.accumulates for c in capped.configs) == (memory_gb == 8.0)  # 16 GB: turns suffice


def test_listed_keep_rates_are_used_as_listed() -> None:
    space = parse_space(
        {"axes": {"model": "deit_base", "resolution": 224, "patch_size": 16, "keep_rate": [0.25, 0.5, 0.75, 1.0]}},
        name="listed",
    )
    (only,) = plan(space, Budget(10.0)).configs
    assert only.config.keep_rate == 0.5  # 0.75 would cost more than 10 GFLOPs
    assert train_gflops(Config("deit_base", 224, 16, keep_rate=0.75)) > 10.0
    assert only.keep_rate_low == 0.25


def test_derived_keep_rate_never_drops_below_the_axis() -> None:
    space = parse_space(
        {"axes": {"model": "deit_tiny", "resolution": 112, "patch_size": 16, "keep_rate": {"low": 0.05, "high": 1.0}}},
        name="edge",
    )
    # 49 patches: 0.05 keeps 2, whose smallest rate is 2/49 < 0.05; the plan must say 0.05.
    lowest = Config("deit_tiny", 112, 16, keep_rate=0.05)
    (only,) = plan(space, Budget(train_gflops(lowest))).configs
    assert only.config.keep_rate == 0.05
    assert only.config.patches_kept == patches_kept(49, 0.05) == 2


def test_search_policy_lists_the_same_configs_with_the_range(paper) -> None:
    fill = plan(paper, Budget(4.6), policy="fill")
    search = plan(paper, Budget(4.6), policy="search")
    assert [c.config for c in fill.configs] == [c.config for c in search.configs]
    assert all(c.keep_rate_low == 0.05 <= c.config.keep_rate for c in search.configs)


def test_nothing_fits_names_the_cheapest_config_and_its_cost(paper) -> None:
    cheapest = Config("deit_tiny", 64, 16, keep_rate=0.05)
    with pytest.raises(PdsweepError, match=rf"no config of space 'paper' fits a budget of 0.001 GFLOPs: the cheapest is "
                       rf"{cheapest.name} at {train_gflops(cheapest):.4g} GFLOPs; raise --budget-gflops to at least"):
        plan(paper, Budget(0.001))


def test_memory_too_small_says_which_cap_to_raise_and_only_that(paper) -> None:
    with pytest.raises(PdsweepError, match=r"least memory is .* GB; raise --budget-memory-gb to at least 0.0\d+, or") as raised:
        plan(paper, Budget(17.6, memory_gb=0.001))
    assert "--budget-gflops" not in str(raised.value)


def test_unknown_policy(paper) -> None:
    with pytest.raises(PdsweepError, match=r"unknown keep policy 'max'; choose one of: fill, search"):
        plan(paper, Budget(1.0), policy="max")  # type: ignore[arg-type]
