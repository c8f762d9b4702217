from __future__ import annotations

import math

import pytest

from pdsweep.config import Config, keep_rate_for, patches_kept
from pdsweep.errors import PdsweepError

# Patch grids of the paper space and the quickstart: (resolution / patch)^2.
COMMON_GRIDS = sorted({(r // p) ** 2 for r in (32, 48, 64, 112, 128, 224, 448, 896) for p in (4, 8, 16) if r % p == 0})


def test_patches_kept_matches_timm_formula() -> None:
    assert patches_kept(196, 0.5) == 98
    assert patches_kept(196, 0.001) == 1  # never zero patches
    assert patches_kept(49, 1.0) == 49


def test_naive_rate_loses_a_patch_on_common_grids() -> None:
    # Why keep_rate_for exists: n / N does not survive max(1, int(N * r)) for many pairs.
    broken = [(N, n) for N in COMMON_GRIDS for n in range(1, N + 1) if patches_kept(N, n / N) != n]
    assert (49, 16) in broken  # int(49 * (16 / 49)) == 15
    assert len(broken) > 100


@pytest.mark.parametrize("num_patches", COMMON_GRIDS)
def test_keep_rate_for_round_trips_every_count(num_patches: int) -> None:
    for count in range(1, num_patches + 1):
        rate = keep_rate_for(num_patches, count)
        assert patches_kept(num_patches, rate) == count
        assert 0 < rate <= 1
        if count > 1:  # the smallest such rate: one ulp less keeps one patch fewer
            assert patches_kept(num_patches, math.nextafter(rate, 0.0)) == count - 1


def test_config_derived_values() -> None:
    config = Config("deit_base", 224, 16, keep_rate=0.5, depth=24, ensemble_size=2)
    assert (config.grid_size, config.num_patches, config.patches_kept, config.tokens_kept) == (14, 196, 98, 99)
    assert config.blocks == 24
    assert Config("deit_large", 224, 16).blocks == 24  # the preset's depth
    assert config.name == "deit_base-224px-p16-d24-k0.5-x2"


def test_with_keep_count_keeps_exactly_that_count() -> None:
    config = Config("deit_tiny", 112, 16)  # 49 patches
    assert config.with_keep_count(1).patches_kept == 1
    assert config.with_keep_count(10).patches_kept == 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(model="deit_huge"), r"unknown model 'deit_huge'; choose one of: .*deit_base"),
        (dict(patch_size=15), r"patch size 15 does not divide resolution 224"),
        (dict(keep_rate=0.0), r"`0 < keep_rate <= 1` must hold, but got keep_rate=0.0"),
        (dict(keep_rate=1.5), r"`0 < keep_rate <= 1` must hold"),
        (dict(resolution=0), r"`resolution` must be a positive integer"),
        (dict(depth=0), r"`depth` must be a positive integer"),
        (dict(ensemble_size=2.5), r"`ensemble_size` must be a positive integer"),
        (dict(sampling="spiral"), r"unknown sampling 'spiral'"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    values = dict(model="deit_base", resolution=224, patch_size=16, keep_rate=0.5) | kwargs
    with pytest.raises(PdsweepError, match=match):
        Config(**values)


def test_keep_rate_for_rejects_impossible_counts() -> None:
    with pytest.raises(PdsweepError, match=r"`1 <= count <= num_patches` must hold"):
        keep_rate_for(49, 50)


def test_every_list_of_axes_is_derived_from_the_declaration_on_config() -> None:
    from dataclasses import fields

    from pdsweep.config import DERIVED_COLUMNS, architecture_axes, axes, column_names, columns, space_axes
    from pdsweep.results import tracking
    from pdsweep.results.rows import SCHEMA, ResultRow
    from pdsweep.space.files import AXIS_RULES

    declared = {f.name for f in fields(Config)}
    assert {info.name for info in axes()} == declared
    assert set(column_names()) == declared | {info.name for info in DERIVED_COLUMNS}
    orders = [info.order for info in columns()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)  # one place for each column
    # The results schema holds the config's columns as one block, where ResultRow has its config.
    names = SCHEMA.names
    start = [f.name for f in fields(ResultRow)].index("config")
    assert names[start:start + len(column_names())] == list(column_names())
    kinds = {"str": "string", "int": "int64", "float": "double"}
    for info in (*axes(), *DERIVED_COLUMNS):
        assert str(SCHEMA.field(info.name).type) == kinds[info.kind.__name__]
        assert SCHEMA.field(info.name).nullable == info.nullable
    assert tracking.CONFIG_PARAMS[: len(column_names()) + 1] == (*column_names(), "seed")
    assert set(AXIS_RULES) == set(space_axes()) and "keep_rate" in space_axes()
    assert list(architecture_axes()) == [name for name in space_axes() if name != "keep_rate"]


def test_a_space_file_takes_exactly_the_declared_axes(tmp_path) -> None:
    from pdsweep.config import space_axes
    from pdsweep.space import load_space

    path = tmp_path / "s.yaml"
    path.write_text("axes:\n  model: vit_micro\n  resolution: 32\n  patch_size: 8\n  keep_rate: 1.0\n  colour: red\n")
    with pytest.raises(PdsweepError, match=r"axes.colour: unknown key; valid keys: (.*)\.") as raised:
        load_space(path)
    assert raised.value.args[0].rsplit("valid keys: ", 1)[1].rstrip(".").split(", ") == list(space_axes())


def test_plan_json_lists_the_space_axes_of_each_config(cli) -> None:
    from pdsweep.config import architecture_axes

    result = cli("plan", "--space", "quickstart", "--budget-gflops", "0.02", "--json")
    [first, *_] = result.json()["configs"]
    assert list(first)[: len(architecture_axes()) + 1] == [*architecture_axes(), "keep_rate"]


def test_a_row_and_its_columns_round_trip() -> None:
    config = Config("vit_micro", 64, 8, keep_rate=0.5, keep_mode="uniform", keep_range_low=0.25, num_classes=3)
    assert Config.from_columns(config.columns()) == config.explicit
    assert config.columns()["depth"] == config.blocks and config.columns()["tokens_kept"] == config.tokens_kept
    assert Config.from_dict(config.to_dict()) == config
