"""Swin as a config: its rules (patch 4, depth in the third stage, keep rates a window expresses),
its cost beside fvcore's count of the real model, its place in spaces and plans, and the CLI."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch

from pdsweep import cost
from pdsweep.config import Config
from pdsweep.cost import Budget, KeepRates, StepSetup, largest_keep_rate
from pdsweep.errors import PdsweepError
from pdsweep.presets import PRESETS
from pdsweep.space import load_space, plan
from pdsweep.training.models import build_model, dropping_at_test
from pdsweep.training.weights import inspect, load_into, read_state, save_weights
from pdsweep.space.weights import WeightSource
from tests.conftest import CliResult, assert_one_line_error

WINDOW_RATES = [(n / 7) ** 2 for n in range(1, 8)]


def test_a_swin_config_takes_its_own_patch_and_window_sampling() -> None:
    config = Config("swin_tiny", 224, 16, sampling="grid")
    assert (config.patch_size, config.sampling, config.family) == (4, "random", "swin")
    assert config == Config("swin_tiny", 224, 4)  # the ignored axes make no second config
    assert config.name == "swin_tiny-224px-d12-k1-x1"


@pytest.mark.parametrize("rate", [0.9, 0.6, 0.5, 0.3, 0.05, 0.001])
def test_a_keep_rate_moves_down_onto_one_a_window_expresses(rate: float) -> None:
    config = Config("swin_tiny", 224, 4, keep_rate=rate)
    n = config.window_keeps[-1]
    assert config.keep_rate == pytest.approx((n / 7) ** 2)
    assert config.keep_rate <= rate or n == 1  # like ViT's int(N * rate): down, one at least
    assert n == 7 or ((n + 1) / 7) ** 2 > rate
    assert config.patches_kept == (224 // 4 // 7 * n) ** 2 == config.tokens_kept  # no class token


def test_depth_changes_the_third_stage_and_has_a_floor() -> None:
    assert Config("swin_tiny", 224, 4).stage_depths == (2, 2, 6, 2)
    assert Config("swin_tiny", 224, 4, depth=20).stage_depths == (2, 2, 14, 2)
    assert Config("swin_tiny", 224, 4, depth=20).blocks == 20
    with pytest.raises(PdsweepError, match=r"swin_tiny needs depth >= 7 .*third"):
        Config("swin_tiny", 224, 4, depth=6)


@pytest.mark.parametrize("resolution", [32, 64, 96, 168, 336])
def test_a_resolution_the_windows_cannot_tile_is_refused_with_the_rule(resolution: int) -> None:
    with pytest.raises(PdsweepError, match=r"cannot train at .*use one of 28, 56, 112 or a multiple of 224 \(224, 448"):
        Config("swin_micro", resolution, 4)


def test_uniform_keep_draws_n_within_the_range_the_window_allows() -> None:
    config = Config("swin_micro", 56, 4, keep_rate=0.8, keep_mode="uniform", keep_range_low=0.2)
    assert list(config.window_keeps) == [4, 5, 6]  # 16/49 is the first >= 0.2; 36/49 the last <= 0.8
    member = build_model(config).members[0].train()
    seen = set()
    member.patch_embed.register_forward_hook(lambda m, i, out: seen.add(out.shape[1]))
    with torch.no_grad():
        for _ in range(40):
            member(torch.randn(2, 3, 56, 56))
    assert seen == {8, 10, 12}  # 2 windows a side: 2n rows
    costs = [cost.train_flops(replace(config, keep_mode="fixed", keep_range_low=None, keep_rate=(n / 7) ** 2))
             for n in (4, 5, 6)]
    assert cost.train_flops(config) == pytest.approx(sum(costs) / 3)


def test_dropping_at_test_keeps_n_rows_per_window_and_then_every_token() -> None:
    torch.manual_seed(0)
    model = build_model(Config("swin_micro", 56, 4)).eval()
    member = model.members[0]
    shapes: list[int] = []
    member.patch_embed.register_forward_hook(lambda m, i, out: None)
    member.layers[0].register_forward_hook(lambda m, i, out: shapes.append(out.shape[1]))
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        full = model(images)
        with dropping_at_test(model, 0.35):  # 16/49: 4 rows per window
            dropped = model(images)
        again = model(images)
    assert shapes == [14, 8, 14]
    assert not torch.allclose(full, dropped)
    assert torch.equal(full, again)


@pytest.mark.parametrize(("model", "resolution"), [("swin_micro", 28), ("swin_micro", 56), ("swin_tiny", 112),
                                                  ("swin_tiny", 224), ("swin_small", 224), ("swin_base", 448)])
def test_param_count_equals_timms(model: str, resolution: int) -> None:
    """Below 224 px timm shrinks the late stages' windows, and their bias tables with them."""
    config = Config(model, resolution, 4, depth=PRESETS[model].depth + 2, num_classes=7)
    built = build_model(config, device="meta").members[0]
    assert cost.param_count(config) == sum(p.numel() for p in built.parameters())


# Three presets, two resolutions, four keep rates (1, 36/49, 25/49, 16/49, 9/49), a changed depth.
VERIFY_CASES = [
    ("swin_tiny", 224, "1", None), ("swin_tiny", 224, "0.5102", None), ("swin_tiny", 448, "0.3265", None),
    ("swin_tiny", 224, "0.1837", "10"), ("swin_small", 224, "0.7347", None), ("swin_small", 448, "1", None),
    ("swin_base", 224, "0.3265", None), ("swin_base", 448, "0.5102", None), ("swin_micro", 56, "0.1837", None),
]


@pytest.mark.parametrize(("model", "resolution", "keep", "depth"), VERIFY_CASES)
def test_flops_verify_equals_fvcore_on_the_real_model(cli: Callable[..., CliResult], model: str, resolution: int,
                                                      keep: str, depth: str | None) -> None:
    result = cli("flops", "--model", model, "--resolution", resolution, "--keep-rate", keep, "--verify", "--json",
                 *(("--depth", depth) if depth else ()))
    assert result.code == 0, result.err
    out = result.json()
    assert out["fvcore_train_gflops"] == pytest.approx(out["train_gflops"], rel=1e-4)
    assert out["fvcore_inference_gflops"] == pytest.approx(out["inference_gflops"], rel=1e-4)
    assert out["fvcore_train_gflops"] < out["fvcore_inference_gflops"] or keep == "1"


def test_flops_refuses_a_keep_rate_no_window_expresses(cli: Callable[..., CliResult]) -> None:
    result = cli("flops", "--model", "swin_tiny", "--keep-rate", "0.5", "--resolution", "224")
    assert_one_line_error(result, "--keep-rate", "0.7347 (36/49), 0.5102 (25/49)", "0.5 is none of them")


@pytest.mark.parametrize(("args", "fragment"), [
    (("--model", "swin_tiny", "--resolution", "224", "--patch-size", "16"), "has patch size 4"),
    (("--model", "swin_tiny", "--resolution", "200"), "cannot train at 200 px"),
    (("--model", "swin_tiny", "--resolution", "30"), "cannot train at 30 px: patch size 4 does not divide resolution 30; "
                                                     "use one of 28, 56, 112 or a multiple of 224"),
    (("--model", "swin_tiny", "--resolution", "224", "--keep-rate", "0.5106"), "0.5106 is none of them"),
    (("--model", "swin_tiny", "--resolution", "224", "--keep-rate", "0.0209"), "0.0209 is none of them"),
    (("--model", "swin_tiny", "--resolution", "224", "--keep-rate", "25/0"), "a fraction such as 25/49"),
    (("--model", "swin_tiny", "--resolution", "224", "--depth", "3"), "needs depth >= 7"),
    (("--model", "swin_tiny", "--curve"), "is a Swin"),
])
def test_flops_refuses_what_a_swin_cannot_be(cli: Callable[..., CliResult], args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(cli("flops", *args), fragment)


def test_fill_picks_the_largest_expressible_rate_that_fits() -> None:
    arch = Config("swin_tiny", 224, 4)
    rates = KeepRates(0.1, 1.0)
    for budget_gflops in (1.0, 2.0, 3.5, 5.0):
        rate = largest_keep_rate(arch, Budget(budget_gflops), StepSetup(), rates)
        assert rate in WINDOW_RATES
        assert cost.train_gflops(replace(arch, keep_rate=rate)) <= budget_gflops
        higher = [r for r in WINDOW_RATES if r > rate]
        assert not higher or cost.train_gflops(replace(arch, keep_rate=higher[0])) > budget_gflops


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


MIXED = """

axes:
  model: [vit_micro, swin_micro]
  resolution: [56]
  patch_size: [7, 8]
  keep_rate: {low: 0.3, high: 1.0}
training: {epochs: 1, batch_size: 8}
"""


def test_a_mixed_space_plans_each_family_by_its_rules_and_says_so(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    space = load_space(str(_space(tmp_path, MIXED)))
    result = plan(space, Budget(0.02))
    swins = [p for p in result.configs if p.config.family == "swin"]
    vits = [p for p in result.configs if p.config.family == "vit"]
    assert len(swins) == 1 and {p.config.patch_size for p in vits} == {7, 8}  # patch sizes: ViT only
    assert swins[0].config.keep_rate in WINDOW_RATES and swins[0].keep_rate_low == pytest.approx(16 / 49)
    out = cli("plan", "--space", space.source, "--budget-gflops", "0.02", "--json")
    assert out.code == 0, out.err
    notes = " ".join(out.json()["notes"])
    assert "patch_size does not apply to swin_micro" in notes and "1, 0.7347, 0.5102, 0.3265" in notes
    text = cli("plan", "--space", space.source, "--budget-gflops", "0.02").out
    assert "note: patch_size does not apply to swin_micro" in text


@pytest.mark.parametrize(("change", "fragment"), [
    ("resolution: [64]", "axes.resolution: swin_micro cannot train at 64 px"),
    ("keep_rate: {low: 0.4, high: 0.5}", "axes.keep_rate: swin_micro keeps (n/7)^2"),
])
def test_a_space_a_swin_cannot_train_is_refused(cli: Callable[..., CliResult], tmp_path: Path, change: str,
                                                fragment: str) -> None:
    key = change.split(":")[0]
    text = "\n".join(f"  {change}" if line.strip().startswith(f"{key}:") else line for line in MIXED.splitlines())
    result = cli("plan", "--space", _space(tmp_path, text), "--budget-gflops", "1")
    assert_one_line_error(result, fragment)


def test_a_listed_swin_names_its_expressible_rates(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    text = "configs:\n  - {model: swin_micro, resolution: 56, keep_rate: 0.5}\n"
    assert_one_line_error(cli("plan", "--space", _space(tmp_path, text)), "configs[0].keep_rate", "0.5102 (25/49)")
    ok = "configs:\n  - {model: swin_micro, resolution: 56, keep_rate: 0.5102}\n  - {model: swin_micro, resolution: 56}\n"
    result = cli("plan", "--space", _space(tmp_path, ok), "--json")
    assert result.code == 0, result.err
    assert [c["keep_rate"] for c in result.json()["configs"]] == pytest.approx([25 / 49, 1.0])


def test_swin_weights_round_trip_and_refuse_a_vit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = build_model(Config("swin_micro", 224, 4)).members[0]
    path = save_weights([trained], tmp_path / "swin.safetensors", model="swin_micro", num_heads=1)[0]
    found = inspect(WeightSource("file", str(path)))
    assert (found.family, found.embed_dim, found.depth, found.num_heads) == ("swin", 32, 5, 1)
    found.check_fits("swin_micro", PRESETS["swin_micro"])
    with pytest.raises(PdsweepError, match="are a Swin Transformer, but vit_micro is a ViT"):
        found.check_fits("vit_micro", PRESETS["vit_micro"])
    deeper = build_model(Config("swin_micro", 224, 4, depth=6, keep_rate=25 / 49, num_classes=3)).members[0]
    state, _ = read_state(path, found.source)
    assert load_into(deeper, state) == 5  # the sixth block (third stage) keeps its initialisation
    own = deeper.layers[2].blocks[0].attn.relative_position_bias_table
    assert torch.equal(own, trained.layers[2].blocks[0].attn.relative_position_bias_table)
    with torch.no_grad():
        assert math.isfinite(float(deeper.train()(torch.randn(2, 3, 224, 224)).sum()))


def test_timm_builds_what_the_preset_says() -> None:
    member = build_model(Config("swin_tiny", 224, 4, depth=10), device="meta").members[0]
    assert [len(layer.blocks) for layer in member.layers] == [2, 2, 4, 2]
    assert member.embed_dim == 96 and all(b.drop_path1.__class__.__name__ == "Identity"
                                          for layer in member.layers for b in layer.blocks)
    assert isinstance(member, timm.models.swin_transformer.SwinTransformer)


@pytest.mark.parametrize("n", range(1, 8))
def test_the_built_model_keeps_the_tokens_the_config_and_cost_count(n: int) -> None:
    config = Config("swin_micro", 56, 4, keep_rate=(n / 7) ** 2)
    member = build_model(config).members[0].train()
    kept: list[int] = []
    member.patch_embed.register_forward_hook(lambda m, i, out: kept.append(out.shape[1] * out.shape[2]))
    with torch.no_grad():
        member(torch.randn(2, 3, 56, 56))
    assert kept == [config.patches_kept] == [config.tokens_kept] == [(2 * n) ** 2]
    assert (cost.train_flops(config) < cost.inference_flops(config)) == (n < 7)


@pytest.mark.parametrize(("entry", "fragment"), [
    ("{model: swin_micro, resolution: 56, patch_size: 16}", "configs[0].patch_size: swin_micro is a Swin, whose patch_size is 4"),
    ("{model: swin_micro, resolution: 56, sampling: grid}", "configs[0].sampling: swin_micro is a Swin, whose sampling is random"),
    ("{model: swin_micro, resolution: 56, keep_mode: uniform, keep_rate: 0.5102, keep_range_low: 0.7347}",
     "keep_range_low <= keep_rate"),
])
def test_a_listed_swin_refuses_axes_it_does_not_take(cli: Callable[..., CliResult], tmp_path: Path, entry: str,
                                                     fragment: str) -> None:
    assert_one_line_error(cli("plan", "--space", _space(tmp_path, f"configs:\n  - {entry}\n")), fragment)


@pytest.mark.parametrize(("args", "fragment"), [
    (("--keep-rate", "-0.5"), "`0 < keep_rate <= 1` must hold"),
    (("--keep-rate", "nan"), "`0 < keep_rate <= 1` must hold"),
    (("--keep-mode", "uniform", "--keep-range", "0.5,0.3265"), "--keep-range: swin_micro keeps the same n"),
    (("--keep-mode", "uniform", "--keep-range", "0.3265,0.1837"), "keep_range_low <= keep_rate"),
    (("--sampling", "structured"), "--sampling: swin_micro keeps the same random rows and columns"),
])
def test_train_refuses_what_a_swin_cannot_train(cli: Callable[..., CliResult], args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(cli("train", "--model", "swin_micro", "--resolution", "28", *args), fragment)


def test_a_uniform_range_that_holds_no_window_rate_is_refused() -> None:
    with pytest.raises(PdsweepError, match=r"no keep rate it expresses .* lies in \[0.55, 0.6\]"):
        Config("swin_tiny", 224, 4, keep_rate=0.6, keep_mode="uniform", keep_range_low=0.55)


def test_a_mixed_space_names_a_depth_a_swin_cannot_have(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    text = MIXED.replace("  keep_rate:", "  depth: [2, 4]\n  keep_rate:")
    assert_one_line_error(cli("plan", "--space", _space(tmp_path, text), "--budget-gflops", "1"),
                          "axes.depth: swin_micro needs depth >= 4", "gives 2")


def test_tpe_params_of_a_swin_are_choices_the_space_offers() -> None:
    """Optuna enqueues a config's params: a Swin's own patch size and sampling, absent from the
    space's lists, must become values the space offers that give the same config."""
    import optuna

    from pdsweep.sweep.sampler import BudgetSampler

    space = load_space("quickstart", ["axes.model=[vit_micro, swin_micro]", "axes.resolution=[56]",
                                      "axes.patch_size=[7, 8]", "axes.depth=[4]", "axes.sampling=[grid, random]"])
    sampler = BudgetSampler(space, Budget(0.05), policy="search")
    swin = next(c for c in sampler.grid() if c.family == "swin")
    study = optuna.create_study()
    study.enqueue_trial(sampler.params(swin))
    assert sampler.suggest(study.ask()) == swin


@pytest.mark.parametrize(("given", "n"), [("25/49", 5), ("0.51", 5), ("0.510", 5), ("0.5102", 5), ("36/49", 6),
                                          ("0.735", 6), ("0.02", 1), ("0.0816", 2), ("0.08163", 2), ("1", 7)])
def test_a_swin_rate_is_named_to_two_decimals_or_more_or_as_a_fraction(cli: Callable[..., CliResult], given: str,
                                                                        n: int) -> None:
    result = cli("flops", "--model", "swin_tiny", "--resolution", "224", "--keep-rate", given, "--json")
    assert result.code == 0, result.err
    assert result.json()["config"]["keep_rate"] == pytest.approx((n / 7) ** 2)


def test_a_space_of_swins_only_needs_no_patch_size(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    text = "axes: {model: [swin_micro], resolution: [28, 56], keep_rate: {low: 0.1, high: 1.0}}\n"
    space = load_space(str(_space(tmp_path, text)))
    assert list(space.axes["patch_size"].values()) == [4] and not any("patch_size" in n for n in space.notes)
    result = cli("plan", "--space", space.source, "--budget-gflops", "0.01", "--json")
    assert result.code == 0, result.err
    assert {c["resolution"] for c in result.json()["configs"]} == {28, 56}
    # With a ViT in it, the space still needs one (the ViT's).
    mixed = text.replace("[swin_micro]", "[swin_micro, vit_micro]")
    assert_one_line_error(cli("plan", "--space", _space(tmp_path, mixed), "--budget-gflops", "1"), "axes.patch_size: is missing")


def test_a_listed_swin_at_a_resolution_it_cannot_take_gets_the_whole_rule(cli: Callable[..., CliResult],
                                                                          tmp_path: Path) -> None:
    text = "configs:\n  - {model: swin_micro, resolution: 64}\n"
    result = cli("plan", "--space", _space(tmp_path, text))
    assert_one_line_error(result, "configs[0]", "cannot train at 64 px", "or a multiple of 224 (224, 448, 672, ...).")


def test_the_plan_says_which_window_rates_a_listed_keep_rate_axis_gives_a_swin(tmp_path: Path) -> None:
    text = MIXED.replace("keep_rate: {low: 0.3, high: 1.0}", "keep_rate: [0.5, 0.25]")
    notes = " ".join(load_space(str(_space(tmp_path, text))).notes)
    assert "within the space's keep rates [0.25, 0.5] it takes 0.3265" in notes


@pytest.mark.parametrize(("asked", "measured"), [((1.0, 0.75, 0.5, 0.25), (36 / 49, 25 / 49, 9 / 49)),
                                                 ((1.0, 0.5, 0.45), (25 / 49,)),
                                                 ((0.5102, 0.1), (25 / 49, 4 / 49))])
def test_a_swins_robustness_curve_measures_the_nearest_window_rates_and_the_plan_says_so(
        tmp_path: Path, asked: tuple[float, ...], measured: tuple[float, ...]) -> None:
    from pdsweep.training.loop import robustness_curve

    text = f"configs:\n  - {{model: swin_micro, resolution: 56}}\ntraining: {{test_keep_rates: {list(asked)}}}\n"
    space = load_space(str(_space(tmp_path, text)))
    model = build_model(space.configs[0].config)
    seen: list[int | None] = []
    curve = robustness_curve(model, lambda: seen.append(model.members[0].window_drop.test_keep) or 0.5, 0,
                             space.training.test_keep_rates)
    assert list(curve) == pytest.approx(list(measured))  # keyed by what was measured, one point per window rate
    assert seen == [round(7 * math.sqrt(r)) for r in measured]
    notes = " ".join(space.notes)
    moved = [r for r in asked if r < 1 and not any(abs(r - round(m, 4)) < 1e-9 for m in measured)]
    assert ("robustness curve measures the window rates nearest" in notes) == bool(moved)
    assert ("rates that meet give one point" in notes) == (len(measured) < len([r for r in asked if r < 1]))
