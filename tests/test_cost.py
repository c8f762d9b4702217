"""The closed-form cost model on its own (fvcore and measured memory: tests/test_verify.py)."""

from __future__ import annotations

import pytest

from pdsweep.config import Config
from pdsweep.cost import (
    Budget,
    StepSetup,
    MemoryEstimate,
    eq1_flops,
    estimate,
    inference_flops,
    max_keep_count,
    memory,
    train_flops,
)
from pdsweep.errors import PdsweepError


def test_ensemble_costs_sum_over_members() -> None:
    one = Config("deit_small", 224, 16, keep_rate=0.3)
    four = Config("deit_small", 224, 16, keep_rate=0.3, ensemble_size=4)
    assert train_flops(four) == 4 * train_flops(one)
    assert inference_flops(four) == 4 * inference_flops(one)


def test_train_flops_equal_inference_flops_at_keep_rate_one() -> None:
    config = Config("deit_tiny", 112, 8, keep_rate=1.0)
    assert train_flops(config) == inference_flops(config)


def test_dropping_tokens_saves_more_than_linearly_at_long_sequences() -> None:
    # Attention is quadratic in tokens: at 3137 tokens, keeping half costs well under half.
    full = Config("deit_base", 448, 8, keep_rate=1.0)
    half = Config("deit_base", 448, 8, keep_rate=0.5)
    assert train_flops(half) < 0.45 * train_flops(full)


def test_eq1_misses_the_mlp_and_the_terms_outside_the_blocks() -> None:
    config = Config("deit_base", 224, 16, keep_rate=0.5)
    assert eq1_flops(config) < train_flops(config)
    # With the MLP added (8 T D^2 per block) the gap is only norms, patch embedding and head.
    D, L, T = 768, 12, config.tokens_kept
    assert 0 < train_flops(config) - (eq1_flops(config) + 8 * L * T * D * D) < 0.05 * train_flops(config)


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_memory_grows_with_batch_and_keep_rate(precision: str) -> None:
    small = memory(Config("deit_small", 224, 16, keep_rate=0.25), StepSetup(32, precision))
    wider = memory(Config("deit_small", 224, 16, keep_rate=0.75), StepSetup(32, precision))
    bigger = memory(Config("deit_small", 224, 16, keep_rate=0.25), StepSetup(64, precision))
    assert small.activations < wider.activations
    assert small.activations < bigger.activations
    assert small.params == wider.params == bigger.params


def test_bf16_halves_most_activations_but_keeps_fp32_residual_stream() -> None:
    config = Config("deit_base", 224, 16, keep_rate=0.5)
    fp32 = memory(config, StepSetup(64, "fp32")).activations
    bf16 = memory(config, StepSetup(64, "bf16-mixed")).activations
    assert 0.5 * fp32 < bf16 < 0.65 * fp32


def test_adamw_keeps_two_states_sgd_one() -> None:
    config = Config("deit_tiny", 224, 16)
    sgd = memory(config, StepSetup(8, optimizer="sgd"))
    adamw = memory(config, StepSetup(8, optimizer="adamw"))
    assert sgd.optimizer_state == sgd.params
    assert adamw.optimizer_state == 2 * adamw.params


def test_memory_peak_is_the_largest_phase() -> None:
    m = MemoryEstimate(params=10, grads=10, optimizer_state=10, activations=100, backward_transient=5,
                       embedding_transient=7, step_transient=10, ensemble_size=2)
    assert m.peak_phases == {"backward": 10 + 10 + 5 + 100 + 5, "embedding": 37, "step": 40}
    assert m.total == 130


@pytest.mark.parametrize(
    ("config", "budget"),
    [
        (Config("deit_base", 224, 16), Budget(8.0)),
        (Config("deit_large", 448, 8, depth=12, ensemble_size=2), Budget(40.0)),
        (Config("deit_tiny", 896, 16), Budget(0.5)),
        (Config("deit_small", 224, 8), Budget(100.0, memory_gb=3.0)),
        (Config("deit_small", 224, 8), Budget(100.0, memory_gb=0.5)),  # fits only in micro-batches
        (Config("deit_base", 224, 8, ensemble_size=4), Budget(200.0, memory_gb=3.0)),  # members in turns
    ],
)
@pytest.mark.parametrize("setup", [StepSetup(64), StepSetup(64, micro_batch_size=64, member_turns=False)],
                         ids=["arranged as memory needs", "as it is"])
def test_max_keep_count_is_the_largest_count_that_fits(config: Config, budget: Budget, setup: StepSetup) -> None:
    best = max_keep_count(config, budget, setup, low=1, high=config.num_patches)
    if best is None:  # only where the step as it is cannot fit at all
        assert setup.arranged and not budget.admits(estimate(config.with_keep_count(1), setup, budget.memory_gb))
        return

    def fits(count: int) -> bool:
        return budget.admits(estimate(config.with_keep_count(count), setup, budget.memory_gb))

    assert fits(best)
    assert best == config.num_patches or not fits(best + 1)


def test_max_keep_count_is_none_when_even_the_lowest_count_is_too_dear() -> None:
    config = Config("deit_large", 896, 8)
    assert max_keep_count(config, Budget(1.0), StepSetup(64), low=10, high=100) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(gflops=0), r"`budget gflops > 0` \(and finite\) must hold"),
        (dict(gflops=-1.0), r"`budget gflops > 0`"),
        (dict(gflops=float("inf")), r"`budget gflops > 0` \(and finite\) must hold, but got inf"),
        (dict(gflops=float("nan")), r"`budget gflops > 0`"),
        (dict(gflops=1.0, memory_gb=0), r"`budget memory_gb > 0` \(and finite\) must hold"),
        (dict(gflops=1.0, memory_gb=True), r"`budget memory_gb > 0`"),
    ],
)
def test_budget_rejects_non_positive_or_infinite_caps(kwargs: dict, match: str) -> None:
    with pytest.raises(PdsweepError, match=match):
        Budget(**kwargs)


def test_step_setup_rejects_bad_values() -> None:
    with pytest.raises(PdsweepError, match=r"`batch_size >= 1` must hold"):
        StepSetup(batch_size=0)
    with pytest.raises(PdsweepError, match=r"unknown precision 'fp8'"):
        StepSetup(8, "fp8")  # type: ignore[arg-type]
    with pytest.raises(PdsweepError, match=r"unknown optimizer 'lion'"):
        StepSetup(8, optimizer="lion")  # type: ignore[arg-type]


def test_one_set_of_step_defaults_the_ones_a_space_trains_with() -> None:
    from pdsweep.space import TrainingSettings

    # A cost priced without a setup is the cost of the step a default space trains.
    assert TrainingSettings().step == StepSetup()
    config = Config("deit_tiny", 224, 16)
    assert memory(config) == memory(config, TrainingSettings().step)
    assert memory(config).optimizer_state == 2 * memory(config).params  # AdamW, as TrainingSettings trains
