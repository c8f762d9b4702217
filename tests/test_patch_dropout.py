from __future__ import annotations

import pytest
import torch

from pdsweep.config import SAMPLINGS, Config, strategy_count, structured_shape
from pdsweep.cost import train_flops
from pdsweep.training.models import build_member
from pdsweep.training.patch_dropout import PatchDropout, keep_indices


def _tokens(batch: int, patches: int, dim: int = 4) -> torch.Tensor:
    # Token i of every image holds the value i, so survivors can be identified.
    x = torch.arange(patches + 1, dtype=torch.float32).view(1, -1, 1)  # (1, 1 + N, 1)
    return x.expand(batch, -1, dim).clone()  # (B, 1 + N, D)


def _kept(out: torch.Tensor) -> list[list[int]]:
    """Patch indices (0-based) each image kept, class token excluded."""
    return [[int(v) - 1 for v in row] for row in out[:, 1:, 0]]


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize(("grid", "count"), [(8, 1), (8, 13), (8, 32), (8, 63), (14, 98), (7, 10), (2, 3)])
def test_every_strategy_keeps_its_count_distinct_patches_and_the_class_token(sampling: str, grid: int, count: int) -> None:
    torch.manual_seed(0)
    out = PatchDropout(grid, range(count, count + 1), sampling).train()(_tokens(5, grid * grid))
    expected = strategy_count(grid, count, sampling)
    assert out.shape == (5, 1 + expected, 4)
    assert torch.all(out[:, 0] == 0)  # class token first, untouched
    for kept in _kept(out):
        assert len(set(kept)) == len(kept) == expected  # no repeats
        assert all(0 <= k < grid * grid for k in kept)


def test_random_subsets_are_per_image_and_uniform() -> None:
    torch.manual_seed(0)
    dropout = PatchDropout(4, range(4, 5), "random").train()
    counts = torch.zeros(16)
    differing = 0
    for _ in range(400):
        kept = torch.tensor(_kept(dropout(_tokens(2, 16))))
        differing += sorted(kept[0].tolist()) != sorted(kept[1].tolist())
        counts += torch.bincount(kept.flatten(), minlength=16)
    assert differing > 350  # two images share a subset with probability 1 / C(16, 4)
    share = counts / counts.sum()
    assert share.min() > 0.6 / 16 and share.max() < 1.4 / 16


def test_structured_keeps_crossings_of_whole_rows_and_columns() -> None:
    torch.manual_seed(0)
    grid, count = 8, 20
    rows, cols = structured_shape(grid, count)
    for kept in keep_indices(6, grid, count, "structured", torch.device("cpu")).tolist():
        kept_rows = {k // grid for k in kept}
        kept_cols = {k % grid for k in kept}
        assert (len(kept_rows), len(kept_cols)) == (rows, cols)
        assert set(kept) == {r * grid + c for r in kept_rows for c in kept_cols}


def test_block_is_one_contiguous_square() -> None:
    torch.manual_seed(0)
    grid, count = 10, 16
    for kept in keep_indices(20, grid, count, "block", torch.device("cpu")).tolist():
        r = [k // grid for k in kept]
        c = [k % grid for k in kept]
        assert max(r) - min(r) == 3 and max(c) - min(c) == 3  # a 4 x 4 block
        assert len(kept) == 16


def test_grid_points_sit_on_a_regular_lattice() -> None:
    torch.manual_seed(0)
    grid, count = 12, 16  # a 4 x 4 lattice with stride 3
    offsets = set()
    for kept in keep_indices(30, grid, count, "grid", torch.device("cpu")).tolist():
        rows = sorted({k // grid for k in kept})
        cols = sorted({k % grid for k in kept})
        assert rows == list(range(rows[0], rows[0] + 12, 3)) and cols == list(range(cols[0], cols[0] + 12, 3))
        offsets.add((rows[0], cols[0]))
    assert len(offsets) > 1  # the offset is random


def test_evaluation_uses_every_patch_unless_asked() -> None:
    x = _tokens(2, 16)
    dropout = PatchDropout(4, range(3, 4)).eval()
    assert torch.equal(dropout(x), x)
    dropout.test_keep_rate = 0.5
    assert dropout(x).shape == (2, 1 + 8, 4)


def test_uniform_mode_draws_counts_across_the_range() -> None:
    torch.manual_seed(0)
    dropout = PatchDropout(8, range(16, 65)).train()
    sizes = {dropout(_tokens(1, 64)).shape[1] - 1 for _ in range(200)}
    assert min(sizes) >= 16 and max(sizes) <= 64 and len(sizes) > 20


def test_gradient_reaches_only_kept_tokens() -> None:
    x = torch.randn(2, 10, 4, requires_grad=True)
    PatchDropout(3, range(3, 4)).train()(x).sum().backward()
    assert x.grad is not None
    touched = (x.grad.abs().sum(-1) > 0).sum(dim=1)
    assert touched.tolist() == [4, 4]  # 3 patches + the class token per image


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize(("resolution", "patch_size"), [(112, 16), (64, 8), (32, 4)])
def test_model_keeps_exactly_the_count_the_cost_charged(sampling: str, resolution: int, patch_size: int) -> None:
    # Every few counts of the grid, at the rate keep_rate_for derives, through the real model,
    # and the FLOPs charged for that config are the FLOPs of that many tokens.
    num_patches = (resolution // patch_size) ** 2
    base = Config("vit_micro", resolution, patch_size, depth=1, sampling=sampling)
    counts = sorted({1, 2, num_patches // 3, num_patches - 1, num_patches} | set(range(1, num_patches, 11)))
    for count in counts:
        config = base.with_keep_count(count)
        model = build_member(config).train()
        seen: list[int] = []
        model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
        with torch.no_grad():
            model(torch.zeros(2, 3, resolution, resolution))
        assert seen == [config.tokens_kept] == [strategy_count(resolution // patch_size, count, sampling) + 1]
        # Charged: the FLOPs of exactly the tokens seen (random sampling keeps what it is asked).
        same_tokens = Config("vit_micro", resolution, patch_size, depth=1).with_keep_count(seen[0] - 1)
        assert train_flops(config) == train_flops(same_tokens)


def test_uniform_mode_cost_is_the_mean_over_drawn_counts() -> None:
    config = Config("vit_micro", 32, 4, keep_rate=1.0, keep_mode="uniform", keep_range_low=0.5, depth=1)
    fixed = [train_flops(Config("vit_micro", 32, 4, depth=1).with_keep_count(c)) for c in range(32, 65)]
    assert train_flops(config) == pytest.approx(sum(fixed) / len(fixed))
