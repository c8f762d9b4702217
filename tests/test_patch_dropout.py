from __future__ import annotations

import pytest
import torch

from pdsweep.config import Config, keep_rate_for
from pdsweep.models import build_member
from pdsweep.patch_dropout import PatchDropout


def _tokens(batch: int, patches: int, dim: int = 4) -> torch.Tensor:
    # Token i of image b holds the value i everywhere, so survivors can be identified.
    x = torch.arange(patches + 1, dtype=torch.float32).view(1, -1, 1)  # (1, 1 + N, 1)
    return x.expand(batch, -1, dim).clone()  # (B, 1 + N, D)


def test_keeps_the_class_token_and_a_random_subset_of_patches() -> None:
    torch.manual_seed(0)
    out = PatchDropout(num_keep=5).train()(_tokens(3, 16))
    assert out.shape == (3, 6, 4)
    assert torch.all(out[:, 0] == 0)  # class token first, untouched
    kept = out[:, 1:, 0]
    for row in kept:
        assert len(set(row.tolist())) == 5 and all(1 <= v <= 16 for v in row.tolist())
    assert not torch.equal(kept[0].sort().values, kept[1].sort().values)  # per-image subsets


def test_evaluation_uses_every_patch() -> None:
    x = _tokens(2, 16)
    assert torch.equal(PatchDropout(num_keep=3).eval()(x), x)


def test_subset_is_uniform_over_patches() -> None:
    torch.manual_seed(0)
    counts = torch.zeros(17)
    dropout = PatchDropout(num_keep=4).train()
    for _ in range(500):
        kept = dropout(_tokens(1, 16))[0, 1:, 0].long()
        counts[kept] += 1
    share = counts[1:] / counts[1:].sum()
    assert share.min() > 0.6 / 16 and share.max() < 1.4 / 16


def test_gradient_reaches_only_kept_tokens() -> None:
    x = torch.randn(2, 9, 4, requires_grad=True)
    PatchDropout(num_keep=3).train()(x).sum().backward()
    assert x.grad is not None
    touched = (x.grad.abs().sum(-1) > 0).sum(dim=1)
    assert touched.tolist() == [4, 4]  # 3 patches + the class token per image


@pytest.mark.parametrize(("resolution", "patch_size"), [(112, 16), (64, 8), (32, 4)])
def test_model_keeps_exactly_the_count_the_cost_charged(resolution: int, patch_size: int) -> None:
    # Every count on the grid, at the rate keep_rate_for derives, through the real model.
    num_patches = (resolution // patch_size) ** 2
    counts = sorted({1, 2, num_patches // 3, num_patches - 1, num_patches} | set(range(1, num_patches, 7)))
    for count in counts:
        config = Config("vit_micro", resolution, patch_size, keep_rate=keep_rate_for(num_patches, count), depth=1)
        model = build_member(config).train()
        seen: list[int] = []
        model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
        with torch.no_grad():
            model(torch.zeros(2, 3, resolution, resolution))
        assert seen == [config.tokens_kept] == [count + 1]
