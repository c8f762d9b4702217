"""The compute curve (pdsweep/cost/curve.py, its plot and ``pdsweep flops --curve``): checked
against the cost model it is drawn from, and against its keep_rate^2 limit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from pdsweep.config import Config
from pdsweep.cost import (
    STANDARD_RESOLUTIONS,
    ComputeCurve,
    CurvePoint,
    CurveRow,
    compute_curve,
    eq1_flops,
    train_flops,
)
from pdsweep.cost.curve import default_grids, standard_grids
from pdsweep.errors import PdsweepError


@pytest.fixture(scope="module")
def deit_base() -> ComputeCurve:
    return compute_curve("deit_base", 16, (0.5, 0.25))


def _point(curve: ComputeCurve, grid: int, keep_rate: float) -> tuple[CurveRow, CurvePoint]:
    row = next(row for row in curve.rows if row.grid == grid)
    return row, row.points[curve.keep_rates.index(keep_rate)]


@pytest.mark.parametrize(
    ("model", "patch_size", "depth", "grid", "keep_rate"),
    [("deit_base", 16, None, 14, 0.5), ("deit_base", 16, None, 7, 0.25), ("deit_small", 8, 6, 28, 0.3),
     ("vit_micro", 4, None, 3, 0.25), ("deit_large", 14, None, 32, 0.75)],
)
def test_columns_are_the_cost_models_ratios(model: str, patch_size: int, depth: int | None, grid: int,
                                            keep_rate: float) -> None:
    curve = compute_curve(model, patch_size, (keep_rate, 1.0), grids=(grid,), depth=depth, num_classes=100)
    full = Config(model, grid * patch_size, patch_size, depth=depth, num_classes=100)
    kept = Config(model, grid * patch_size, patch_size, keep_rate=keep_rate, depth=depth, num_classes=100)
    row, point = _point(curve, grid, keep_rate)
    assert (row.num_patches, row.resolution) == (grid * grid, grid * patch_size)
    assert point.tokens_kept == max(1, int(grid * grid * keep_rate)) + 1
    assert point.exact == train_flops(kept) / train_flops(full)
    assert point.eq1 == eq1_flops(kept) / eq1_flops(full)
    assert row.full_gflops == pytest.approx(train_flops(full) / 1e9)
    assert _point(curve, grid, 1.0)[1].exact == _point(curve, grid, 1.0)[1].eq1 == 1.0


@pytest.mark.parametrize("keep_rate", [0.5, 0.25])
def test_exact_ratio_approaches_keep_rate_squared(deit_base: ComputeCurve, keep_rate: float) -> None:
    limit = keep_rate**2
    assert deit_base.limits[deit_base.keep_rates.index(keep_rate)] == limit
    exact = [_point(deit_base, row.grid, keep_rate)[1].exact for row in deit_base.rows]
    eq1 = [_point(deit_base, row.grid, keep_rate)[1].eq1 for row in deit_base.rows]
    patches = [row.num_patches for row in deit_base.rows]
    assert all(value >= limit for value in exact + eq1)  # int(N k) + 1 tokens: never fewer than k N
    # From 224 px on (below, int(N k) + 1 zigzags with the parity of N), it only falls, and Eq. 1,
    # which leaves out the patch embedding and the MLP, says less than the cost model.
    tail = [i for i, n in enumerate(patches) if n >= 196]
    assert all(exact[i] > exact[j] for i, j in zip(tail, tail[1:]))
    assert all(eq1[i] < exact[i] for i in tail)
    # Clearly above the limit at the standard 224 px (the saving there is about keep_rate, not its
    # square), within 5% of it at the largest N.
    at_224 = exact[patches.index(196)]
    assert at_224 > 1.9 * limit and at_224 == pytest.approx(keep_rate, rel=0.02)
    assert exact[-1] == pytest.approx(limit, rel=0.05) and eq1[-1] == pytest.approx(limit, rel=0.05)
    assert patches[-1] == 1024**2


def test_excess_over_the_limit_falls_as_one_over_n(deit_base: ComputeCurve) -> None:
    """F(T) = 2 L D T^2 + b T + c N + ...: the excess over keep^2 times N tends to a constant."""
    index = deit_base.keep_rates.index(0.5)
    scaled = [(row.points[index].exact - 0.25) * row.num_patches for row in deit_base.rows[-4:]]
    assert max(scaled) / min(scaled) < 1.05


def test_standard_resolutions_are_marked(deit_base: ComputeCurve) -> None:
    marked = [row.resolution for row in deit_base.rows if row.standard]
    assert marked == list(STANDARD_RESOLUTIONS) == [224, 384, 448, 512, 896]
    assert standard_grids(14) == (16, 32, 64)  # 384 and 512 are no multiples of 14
    curve = compute_curve("deit_small", 14, (0.5,))
    assert [row.resolution for row in curve.rows if row.standard] == [224, 448, 896]
    around_224 = compute_curve("deit_small", 16, (0.5,), grids=(13, 14, 15))
    assert [row.standard for row in around_224.rows] == [False, True, False]


def test_default_grids_span_two_to_1024_log_spaced() -> None:
    grids = default_grids(16)
    assert grids[0] == 2 and grids[-1] == 1024 and list(grids) == sorted(set(grids))
    assert set(standard_grids(16)) <= set(grids)
    ratios = [b / a for a, b in zip(grids, grids[1:]) if b > 16]
    assert max(ratios) < 1.25  # four steps an octave


def test_to_dict_is_plain_json(deit_base: ComputeCurve) -> None:
    data = deit_base.to_dict()
    assert data["model"] == "deit_base" and data["blocks"] == 12 and data["keep_rates"] == [0.5, 0.25]
    assert data["limits"] == [0.25, 0.0625] and deit_base.name == "deit_base-p16-d12"
    row = data["rows"][0]
    assert set(row) == {"grid", "num_patches", "resolution", "standard", "full_gflops", "points"}
    assert set(row["points"][0]) == {"keep_rate", "tokens_kept", "exact", "eq1"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keep_rates": (0.5, 1.5)}, r"`0 < keep_rate <= 1` must hold, but got keep_rate=1.5"),
        ({"keep_rates": (0.0,)}, r"but got keep_rate=0.0"),
        ({"keep_rates": (math.nan,)}, r"but got keep_rate=nan"),
        ({"keep_rates": ()}, r"needs at least one keep rate"),
        ({"grids": (4, 0)}, r"a grid side is a positive integer .* but got 0"),
        ({"grids": (4, "8")}, r"a grid side is a positive integer .* but got '8'"),
        ({"patch_size": 0}, r"`patch_size` must be a positive integer"),
        ({"model": "deit_huge"}, r"unknown model 'deit_huge'"),
        ({"depth": 0}, r"`depth` must be a positive integer"),
    ],
)
def test_bad_input_is_refused(kwargs: dict, match: str) -> None:
    arguments = {"model": "deit_base", "patch_size": 16, "keep_rates": (0.5,), **kwargs}
    with pytest.raises(PdsweepError, match=match):
        compute_curve(**arguments)


CURVE = ["flops", "--curve", "--model", "deit_base", "--keep-rates", "0.5,0.25"]


def test_cli_json_matches_the_library_and_writes_the_png(cli, tmp_path: Path) -> None:
    from PIL import Image

    result = cli(*CURVE, "--out", tmp_path / "plots", "--json")
    assert result.code == 0, result.err
    data = result.json()
    plot = Path(data.pop("plot"))
    assert data == compute_curve("deit_base", 16, (0.5, 0.25)).to_dict()
    assert plot == tmp_path / "plots" / "compute-curve-deit_base-p16-d12.png"
    assert plot.stat().st_size > 10_000
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size[0] > 600


def test_cli_table(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the PNG goes to the current folder by default
    result = cli("flops", "--curve", "--model", "deit_tiny", "--patch-size", "8", "--depth", "2")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("deit_tiny-p8-d2: train compute relative to keep rate 1")
    assert "keep 0.5 (limit 0.25)" in lines[2] and "keep 0.25 (limit 0.0625)" in lines[2]  # the default rates
    row = next(line for line in lines if line.split()[:2] == ["784", "224*"])
    point = compute_curve("deit_tiny", 8, (0.5, 0.25), grids=(28,), depth=2).rows[0].points[0]
    assert row.split()[2:5] == [f"{point.exact:.4f}", f"{point.eq1:.4f}", f"{point.exact / 0.25:.3f}x"]
    assert lines[-1] == "plot: compute-curve-deit_tiny-p8-d2.png"
    assert (tmp_path / "compute-curve-deit_tiny-p8-d2.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ([*CURVE[:-1], "0.5,1.5"], ["`0 < keep_rate <= 1` must hold, but got keep_rate=1.5"]),
        ([*CURVE[:-1], "0.5,x"], ["argument --keep-rates: expected keep rates separated by commas", "'0.5,x'"]),
        ([*CURVE, "--keep-rate", "0.5"], ["--curve spans every resolution", "drop --keep-rate", "--keep-rates"]),
        ([*CURVE, "--verify", "--resolution", "224"], ["drop --resolution, --verify"]),
        ([*CURVE, "--batch-size", "8"], ["counts no memory: drop --batch-size"]),
        ([*CURVE, "--keep-rate", "0", "--batch-size", "0"], ["drop --keep-rate, --batch-size"]),
        ([*CURVE, "--patch-size", "0"], ["`patch_size` must be a positive integer"]),
        (["flops", "--model", "deit_base", "--resolution", "224", "--patch-size", "16", "--keep-rates", "0.5"],
         ["--keep-rates: only with --curve; add --curve"]),
        (["flops", "--model", "deit_base", "--resolution", "224"],
         ["flops needs --patch-size for one config", "--curve"]),
        (["flops", "--model", "deit_base"], ["flops needs --resolution and --patch-size"]),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(cli, tmp_path: Path, args: list[str],
                                              fragments: list[str]) -> None:
    result = cli(*args, "--out", tmp_path) if "--curve" in args else cli(*args)
    assert_one_line_error(result, *fragments)
    assert not list(tmp_path.iterdir())  # a refused curve writes no PNG


def test_the_curve_is_part_of_the_public_cost_api() -> None:
    import pdsweep.cost

    names = {"DEFAULT_KEEP_RATES", "STANDARD_RESOLUTIONS", "ComputeCurve", "CurvePoint", "CurveRow", "compute_curve"}
    assert names <= set(pdsweep.cost.__all__)
