"""Swin with window-structured PatchDropout: the closed-form FLOPs against fvcore's count of the
real timm model (pdsweep/cost/swin.py), and the dropout itself (pdsweep/training/swin_dropout.py)."""

from __future__ import annotations

import copy
import warnings

import pytest
import timm
import torch
from torch import nn

from pdsweep.cost.swin import SWIN_PRESETS, swin_flops
from pdsweep.presets import SwinShape
from pdsweep.windows import resolution_problem, window_keep_rates
from pdsweep.training.swin_dropout import WindowPatchDropout, relative_index
from pdsweep.training.verify import _sdpa_flops, _to_meta

TINY = SwinShape("swin_test", "swin_tiny_patch4_window7_224", embed_dim=32, depths=(2, 2), heads=(1, 2))


def _model(shape: SwinShape, resolution: int, *, device: str | None = None, classes: int = 10) -> nn.Module:
    with torch.device(device) if device else torch.device("cpu"):
        return timm.create_model(shape.timm_name, pretrained=False, img_size=resolution, embed_dim=shape.embed_dim,
                                 depths=shape.depths, num_heads=shape.heads, window_size=shape.window,
                                 num_classes=classes, drop_path_rate=0.0)


def _fvcore(shape: SwinShape, resolution: int, keep: tuple[int, int] | None, classes: int, fused: bool) -> int:
    """fvcore's count of one training forward of the real model (built on meta, as verify.py does)."""
    from fvcore.nn import FlopCountAnalysis

    model = _model(shape, resolution, device="meta", classes=classes)
    model.patch_embed.to_empty(device="cpu")
    for param in model.patch_embed.parameters():
        nn.init.zeros_(param)
    model.patch_embed.register_forward_hook(_to_meta)
    if keep is not None:
        model.patch_drop = WindowPatchDropout(model, keep)
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused
    model.train()
    analysis = FlopCountAnalysis(model, torch.zeros(1, 3, resolution, resolution))
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flops)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(analysis.total())


# The three presets, two resolutions, keep rates 1, 36/49, 25/49, 16/49, 9/49, 1/49 and a rectangle.
FLOPS_CASES = [
    ("swin_tiny", 224, None, False), ("swin_tiny", 224, (3, 3), False), ("swin_tiny", 224, (5, 5), True),
    ("swin_tiny", 448, (4, 4), False), ("swin_tiny", 224, (1, 1), False), ("swin_small", 224, None, True),
    ("swin_small", 224, (4, 4), False), ("swin_base", 224, (6, 6), False), ("swin_base", 448, None, False),
]


@pytest.mark.parametrize(("preset", "resolution", "keep", "fused"), FLOPS_CASES, ids=str)
def test_flops_equal_fvcore_on_the_real_model(preset: str, resolution: int, keep: tuple[int, int] | None,
                                              fused: bool) -> None:
    shape = SWIN_PRESETS[preset]
    assert swin_flops(shape, resolution, keep, num_classes=1000) == _fvcore(shape, resolution, keep, 1000, fused)


@pytest.mark.parametrize("keep", [None, (3, 3), (5, 2), (7, 1)])
def test_flops_equal_fvcore_on_a_tiny_model(keep: tuple[int, int] | None) -> None:
    assert swin_flops(TINY, 112, keep, num_classes=10) == _fvcore(TINY, 112, keep, 10, fused=False)


def test_keep_rates_a_window_expresses_and_the_resolutions_it_allows() -> None:
    assert window_keep_rates(7) == pytest.approx([1, 36 / 49, 25 / 49, 16 / 49, 9 / 49, 4 / 49, 1 / 49])
    allowed = [r for r in range(4, 900, 4) if resolution_problem(SWIN_PRESETS["swin_tiny"], r) is None]
    assert allowed == [28, 56, 112, 224, 448, 672, 896]
    assert "11 is neither a multiple of the window" in resolution_problem(SWIN_PRESETS["swin_tiny"], 168)
    assert "grid is 6, not a multiple of the window" in resolution_problem(SWIN_PRESETS["swin_tiny"], 24)
    with pytest.raises(Exception, match="use 224 px or a multiple"):
        swin_flops(SWIN_PRESETS["swin_tiny"], 168, (3, 3))


def _stage_shapes(model: nn.Module, images: torch.Tensor) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for layer in model.layers]
    model(images)
    for hook in hooks:
        hook.remove()
    return shapes


@pytest.mark.parametrize("n", range(1, 8))
def test_every_stage_runs_on_the_reduced_grid_and_keeps_what_the_cost_counts(n: int) -> None:
    torch.manual_seed(0)
    model = _model(TINY, 56).train()
    dropout = model.patch_drop = WindowPatchDropout(model, (n, n))
    images = torch.randn(2, 3, 56, 56)
    gathered: list[torch.Tensor] = []
    model.patch_embed.register_forward_hook(lambda m, i, o: gathered.append(o))  # runs after the dropout's hook
    shapes = _stage_shapes(model, images)
    assert shapes == [(2, 2 * n, 2 * n, 32), (2, n, n, 64)]  # 14 -> 2n (two windows a side), then merged
    assert gathered[0].shape[1] * gathered[0].shape[2] == dropout.tokens_kept == 4 * n * n
    if n < 7:  # the same n of the W rows in every window, each window's inside it (n = W: no gather at all)
        rows = dropout._rows.view(2, n)
        assert torch.equal(rows - torch.tensor([[0], [7]]), rows[:1].expand(2, n))
        assert bool(((rows // 7) == torch.tensor([[0], [1]])).all())
    # The closed form charges those tokens: its count falls with the kept tokens, equals full at n = W.
    assert (swin_flops(TINY, 56, (n, n), num_classes=10) == swin_flops(TINY, 56, None, num_classes=10)) == (n == 7)
    model(images).sum().backward()  # backward runs on the reduced grid, every parameter reached
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_keeping_every_row_and_column_is_the_untouched_model() -> None:
    torch.manual_seed(0)
    plain = _model(TINY, 56).train()
    model = copy.deepcopy(plain)
    model.patch_drop = WindowPatchDropout(model, (7, 7))
    model.patch_drop.fixed = (torch.arange(7), torch.arange(7))  # the gather, the windows, masks and indices set
    images = torch.randn(2, 3, 56, 56)
    gathered: list[torch.Tensor] = []
    model.layers[0].register_forward_hook(lambda m, i, o: gathered.append(o))
    assert torch.equal(model(images), plain(images))  # every row and column gathered: timm's own computation
    assert model.patch_drop.active and gathered[-1].shape == (2, 14, 14, 32)


def test_gathered_relative_position_bias_equals_a_hand_computed_reference() -> None:
    """W = 4, rows 0 and 3, columns 1 and 2 kept: token (r, c) against (r', c') reads the table at
    (r - r' + 3) * 7 + (c - c' + 3), the index timm's full window gives those four tokens."""
    from timm.models.swin_transformer import get_relative_position_index

    rows, cols = torch.tensor([0, 3]), torch.tensor([1, 2])
    index = relative_index(rows, cols, (4, 4))
    assert index.tolist() == [[24, 23, 3, 2], [25, 24, 4, 3], [45, 44, 24, 23], [46, 45, 25, 24]]
    kept = torch.tensor([r * 4 + c for r in rows.tolist() for c in cols.tolist()])
    assert torch.equal(index, get_relative_position_index(4, 4)[kept][:, kept])


def test_shifted_window_mask_at_the_reduced_grid_equals_one_built_for_that_grid() -> None:
    from timm.models.swin_transformer import SwinTransformerBlock

    torch.manual_seed(0)
    model = _model(TINY, 56).train()
    model.patch_drop = WindowPatchDropout(model, (3, 3))
    model(torch.randn(1, 3, 56, 56))
    shifted = model.layers[0].blocks[1]  # the first stage's second block: shifted windows, grid 6 x 6
    assert shifted.input_resolution == (6, 6) and shifted.window_size == (3, 3) and shifted.shift_size == (1, 1)
    direct = SwinTransformerBlock(dim=32, input_resolution=(6, 6), num_heads=1, window_size=3, shift_size=1)
    assert torch.equal(shifted.attn_mask, direct.attn_mask)
    assert model.layers[0].blocks[0].attn_mask is None  # the plain layout needs none


def test_evaluation_uses_every_token_after_training_with_fewer() -> None:
    torch.manual_seed(0)
    model = _model(TINY, 56)
    model.patch_drop = WindowPatchDropout(model, (4, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images, labels = torch.randn(4, 3, 56, 56), torch.randint(0, 10, (4,))
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    plain = _model(TINY, 56)
    plain.load_state_dict(model.state_dict())  # the dropout adds no state: the same checkpoint keys
    detached = _model(TINY, 56).train()  # a dropout not attached to its model follows the model's mode too
    WindowPatchDropout(detached, (3, 3))
    detached(images)
    detached.eval()
    assert detached.layers[0](detached.patch_embed(images)).shape == (4, 14, 14, 32)
    model.eval(), plain.eval()
    seen: list[tuple[int, ...]] = []
    model.layers[0].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    with torch.no_grad():
        assert torch.equal(model(images), plain(images))
    assert seen == [(4, 14, 14, 32)]


@pytest.mark.slow
def test_training_loss_falls_with_a_third_of_the_tokens() -> None:
    from pdsweep.training.synthetic import render

    torch.manual_seed(0)
    pixels, classes = render(32, 56, seed=0)
    images = torch.as_tensor(pixels).float().permute(0, 3, 1, 2) / 255
    images = (images - images.mean()) / images.std()
    labels = torch.as_tensor(classes).long()
    model = _model(TINY, 56, classes=int(labels.max()) + 1).train()
    model.patch_drop = WindowPatchDropout(model, (4, 4))  # 16 of 49 tokens per window
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(32):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_every_window_of_the_first_stage_reads_the_bias_at_its_tokens_original_offsets() -> None:
    """Plain and shifted blocks: for every window and every pair of tokens that may attend (the
    mask lets them), the installed index points at the table entry of the two tokens' offset in
    the original grid. Original coordinates come from the gather's own indices and timm's roll."""
    torch.manual_seed(0)
    model = _model(TINY, 56).train()
    dropout = model.patch_drop = WindowPatchDropout(model, (3, 3))
    dropout.fixed = (torch.tensor([0, 2, 5]), torch.tensor([1, 3, 6]))
    model(torch.randn(1, 3, 56, 56))
    rows, cols, side, full, window = dropout._rows, dropout._cols, 6, 14, 7  # reduced 6 x 6 of the full 14 x 14
    for block in model.layers[0].blocks:
        shift = block.shift_size[0]
        installed = block.attn.relative_position_index
        for top in range(0, side, 3):
            for left in range(0, side, 3):
                # Window (top, left) of the rolled grid holds reduced rows top + shift ... (timm's roll by -shift).
                r = [int(rows[k % side]) + (k // side) * full for k in range(top + shift, top + shift + 3)]
                c = [int(cols[k % side]) + (k // side) * full for k in range(left + shift, left + shift + 3)]
                tokens = [(y, x) for y in r for x in c]
                allowed = (torch.ones(9, 9, dtype=torch.bool) if block.attn_mask is None
                           else block.attn_mask[(top // 3) * 2 + left // 3] == 0)
                for i, (y, x) in enumerate(tokens):
                    for j, (y2, x2) in enumerate(tokens):
                        if allowed[i, j]:
                            expected = (y - y2 + window - 1) * (2 * window - 1) + (x - x2 + window - 1)
                            assert int(installed[i, j]) == expected, (shift, top, left, i, j)


def test_one_draw_per_step_shared_by_every_image_and_window_and_fresh_the_next_step() -> None:
    """The choice documented in docs/swin.md: the kept rows and columns are drawn once per
    training step (per batch), the same for every image and inside every window, and drawn again
    at the next step."""
    torch.manual_seed(0)
    model = _model(TINY, 56).train()
    dropout = WindowPatchDropout(model, (3, 5))
    grid = torch.arange(14, dtype=torch.float)
    # Each patch embedding carries its own (image, row, column), so the gather shows what it kept.
    x = torch.stack(torch.broadcast_tensors(torch.arange(4.0)[:, None, None], grid[None, :, None], grid[None, None, :]),
                    dim=-1)
    draws = set()
    for _ in range(12):
        out = dropout._hook(model.patch_embed, (), x)
        assert out.shape == (4, 2 * 3, 2 * 5, 3)
        assert torch.equal(out[..., 0], torch.arange(4.0)[:, None, None].expand(4, 6, 10))  # images stay apart
        rows, cols = out[0, :, 0, 1].long(), out[0, 0, :, 2].long()
        assert all(torch.equal(out[b, :, :, 1:], out[0, :, :, 1:]) for b in range(4))  # one draw for the batch
        assert torch.equal(rows[3:] - 7, rows[:3]) and torch.equal(cols[5:] - 7, cols[:5])  # the same in both windows
        assert bool((rows[:3] < 7).all() and (cols[:5] < 7).all())
        draws.add((tuple(rows[:3].tolist()), tuple(cols[:5].tolist())))
    assert len(draws) > 1  # 12 steps of C(7,3) x C(7,5) = 735 choices: one repeated every step would be a bug
