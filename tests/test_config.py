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
