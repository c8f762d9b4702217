from __future__ import annotations

import optuna
import pytest

from pdsweep.config import patches_kept
from pdsweep.cost import Budget, StepSetup, estimate, train_gflops
from pdsweep.space import plan
from pdsweep.sweep.sampler import BudgetSampler, ask_feasible, make_optuna_sampler
from pdsweep.space import load_space, parse_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def paper():
    return load_space("paper")


@pytest.mark.parametrize("kind", ["tpe", "random"])
@pytest.mark.parametrize("policy", ["fill", "search"])
@pytest.mark.parametrize("budget", [Budget(1.3), Budget(17.6, memory_gb=6.0)])
def test_every_suggested_config_fits_its_budget(paper, kind: str, policy: str, budget: Budget) -> None:
    sampler = BudgetSampler(paper, budget, policy)  # type: ignore[arg-type]
    study = optuna.create_study(direction="maximize", sampler=make_optuna_sampler(kind, seed=0))  # type: ignore[arg-type]
    t = paper.training
    for _ in range(400):
        trial, config = ask_feasible(study, sampler)
        cost = estimate(config, StepSetup(t.batch_size, t.precision, t.optimizer), budget.memory_gb)  # as arranged
        assert budget.admits(cost), config.name
        assert 0.05 <= config.keep_rate <= 1.0
        study.tell(trial, 0.5)
    told_infeasible = [tr for tr in study.trials if tr.state == optuna.trial.TrialState.PRUNED]
    assert told_infeasible and all(tr.constraints["budget"] > 0 for tr in told_infeasible)


def test_fill_spends_the_budget_and_search_stays_below_it(paper) -> None:
    budget = Budget(4.6)
    fill = BudgetSampler(paper, budget, "fill")
    search = BudgetSampler(paper, budget, "search")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(100):
        trial = study.ask()
        config = fill.suggest(trial)
        if config is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        if config.patches_kept < config.num_patches:  # one more patch would not fit
            assert train_gflops(config.with_keep_count(config.patches_kept + 1)) > budget.gflops
        study.tell(trial, 0.0)
        # The same architecture under `search`: anywhere between the lowest rate and fill's.
        fixed = optuna.trial.FixedTrial({**trial.params, "keep_fraction": 0.3})
        searched = search.suggest(fixed)
        assert searched is not None and 0.05 <= searched.keep_rate <= config.keep_rate


def test_tpe_learns_where_the_budget_ends(paper) -> None:
    def asks(kind: str) -> int:
        sampler = BudgetSampler(paper, Budget(1.3))
        study = optuna.create_study(direction="maximize", sampler=make_optuna_sampler(kind, seed=0))  # type: ignore[arg-type]
        for _ in range(200):
            trial, _ = ask_feasible(study, sampler)
            study.tell(trial, 0.5)
        return len(study.trials)

    assert asks("tpe") < 0.8 * asks("random")  # 164 of 432 architectures fit: random needs ~2.6 asks each


def test_grid_is_exactly_the_feasible_set(paper) -> None:
    budget = Budget(4.6)
    grid = BudgetSampler(paper, budget).grid()
    planned = [p.config for p in plan(paper, budget).configs]
    assert grid == planned
    assert len({c.name for c in grid}) == len(grid)


def test_grid_with_listed_keep_rates_offers_each_affordable_one() -> None:
    space = parse_space({"axes": {"model": "deit_base", "resolution": [112, 224], "patch_size": 16,
                                  "keep_rate": [0.25, 0.5, 1.0]}}, name="listed")
    grid = BudgetSampler(space, Budget(10.0)).grid()
    assert all(train_gflops(c) <= 10.0 for c in grid)
    assert sorted((c.resolution, c.keep_rate) for c in grid) == [(112, 0.25), (112, 0.5), (112, 1.0), (224, 0.25), (224, 0.5)]


def test_search_fraction_maps_onto_the_affordable_range(paper) -> None:
    sampler = BudgetSampler(paper, Budget(17.6), "search")
    params = {"model": "deit_base", "resolution": 224, "patch_size": 16, "depth": 12, "ensemble_size": 1,
              "sampling": "random", "keep_mode": "fixed"}
    low = sampler.suggest(optuna.trial.FixedTrial({**params, "keep_fraction": 0.0}))
    high = sampler.suggest(optuna.trial.FixedTrial({**params, "keep_fraction": 1.0}))
    fill = BudgetSampler(paper, Budget(17.6), "fill").suggest(optuna.trial.FixedTrial(params))
    assert low is not None and high is not None and fill is not None
    assert low.keep_rate == 0.05 and high.keep_rate == fill.keep_rate
    assert patches_kept(196, low.keep_rate) < patches_kept(196, high.keep_rate)


def test_a_uniform_range_of_one_rate_is_the_fixed_config_and_trains_once(tmp_path) -> None:
    """keep mode uniform between a rate and itself draws that rate every step: it is the fixed
    config (one name, one trial), whichever family; a window's snapping can collapse a range too."""
    from pdsweep.config import Config
    from pdsweep.space.listed import trains_as

    assert Config("vit_micro", 32, 8, keep_rate=0.5, keep_mode="uniform", keep_range_low=0.5) == Config("vit_micro", 32, 8, keep_rate=0.5)
    swin = Config("swin_tiny", 224, 4, keep_rate=0.35, keep_mode="uniform", keep_range_low=0.3)  # both ends: 16/49
    assert swin == Config("swin_tiny", 224, 4, keep_rate=16 / 49) and swin.keep_range_low is None
    path = tmp_path / "space.yaml"
    path.write_text("axes: {model: [deit_tiny, swin_tiny], resolution: 224, patch_size: 16, sampling: [random, structured],\n"
                    "       keep_mode: [fixed, uniform], keep_rate: [0.25, 0.5, 1.0]}\n")
    sampler = BudgetSampler(load_space(str(path)), Budget(2), policy="search")
    configs = sampler.candidates
    assert len({trains_as(c) for c in configs}) == len({c.name for c in configs}) == len(configs) > 1
    assert {c.keep_mode for c in configs} == {"fixed", "uniform"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for config in configs:  # each enqueued by its params comes back as itself
        study.enqueue_trial(sampler.params(config))
        assert sampler.suggest(study.ask()) == config
