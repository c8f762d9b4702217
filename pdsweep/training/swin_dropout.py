"""Window-structured PatchDropout on timm's Swin Transformer (v1), without copying its code.

Swin attends within W x W windows and merges 2 x 2 patches between stages, so it cannot take an
arbitrary subset of tokens. As in the PatchDropout study, each training step keeps the same n_r
of the W rows and n_c of the W columns inside every window: the (B, G, G, C) patch embedding is
gathered to (B, G/W n_r, G/W n_c, C), and every block runs with an n_r x n_c window (clamped to
its grid, as timm does), shift n//2 on its shifted blocks, timm's own attention mask built for
the reduced grid, and a ``relative_position_index`` built from the original coordinates of the
kept tokens, so the relative position bias table (pretrained values included) is read at the
kept offsets. Patch merging and the later stages run on the reduced grid. Evaluation restores
timm's full windows and uses every token.

The original coordinate of reduced-grid row i, per axis and stage:
``P_0(i) = (i // n) W + kept[i % n]`` and ``P_s(k) = P_{s-1}(2k) // 2`` (PatchMerging joins rows
2k and 2k + 1; the first names the pair). ``P_s(k + n) = P_s(k) + W`` at every stage, so each
reduced window lies inside its original window and all windows of a stage share one index (one
for the plain layout, one for the shifted one). One draw serves the whole batch.

The eight attributes set per step are timm 1.0's (checked on 1.0.31): the block's
``window_size``, ``shift_size``, ``window_area``, ``input_resolution``, ``attn_mask`` and its
attention's ``window_size``, ``window_area``, ``relative_position_index``. No parameter changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def stage_positions(kept: torch.Tensor, window: int, grids: list[int]) -> list[torch.Tensor]:
    """Per stage, the original-grid coordinate of each reduced-grid row (or column).

    kept: (n,) sorted positions kept within a window; grids: each stage's reduced grid side.
    """
    n = kept.numel()
    i = torch.arange(grids[0])
    positions = [(i // n) * window + kept[i % n]]
    for side in grids[1:]:
        positions.append(positions[-1][0::2][:side] // 2)
    return positions


def window_positions(positions: torch.Tensor, full_side: int, size: int, shift: int) -> torch.Tensor:
    """Original coordinates of the first (rolled) window's rows ``shift .. shift + size - 1``; past
    the reduced grid's end the roll wraps around, one full grid further on (as timm's own roll)."""
    side = positions.numel()
    k = torch.arange(shift, shift + size)
    return positions[k % side] + (k // side) * full_side


def relative_index(rows: torch.Tensor, cols: torch.Tensor, table_window: tuple[int, int]) -> torch.Tensor:
    """timm's ``relative_position_index`` for a window whose tokens sit at ``rows`` x ``cols``
    (original coordinates, raster order): (n_r n_c, n_r n_c) indices into the bias table."""
    th, tw = table_window
    r = rows.repeat_interleave(cols.numel())
    c = cols.repeat(rows.numel())
    dh, dw = r[:, None] - r[None, :], c[:, None] - c[None, :]
    if int(dh.abs().max()) > th - 1 or int(dw.abs().max()) > tw - 1:
        raise ValueError(f"a kept offset lies outside the {th} x {tw} bias table")
    return (dh + th - 1) * (2 * tw - 1) + (dw + tw - 1)


def _mask(block: nn.Module) -> torch.Tensor | None:
    """timm's shifted-window mask for the block's current grid, window and shift (it reads only
    the shape, device and dtype of the padded input it is given)."""
    (h, w), (a, b) = block.input_resolution, block.window_size
    weight = block.norm1.weight
    return block.get_attn_mask(torch.empty(1, -(-h // a) * a, -(-w // b) * b, 1, device=weight.device, dtype=weight.dtype))


class WindowPatchDropout(nn.Module):
    """Installed on a timm ``SwinTransformer`` as a forward hook on its ``patch_embed``.

    ``keep``: (n_r, n_c) rows and columns kept per window in training, drawn afresh each step;
    (W, W) keeps every token (no gather). ``counts``: keep mode uniform, n drawn uniformly from it
    each step (n rows and n columns). ``fixed``: (rows, cols) kept every step instead of a draw
    (gathered even when they are all of them). ``test_keep``: n rows and columns drawn in
    evaluation as well (the robustness curve).
    """

    def __init__(self, model: nn.Module, keep: tuple[int, int], *, counts: range | None = None) -> None:
        super().__init__()
        window = model.layers[0].blocks[0].attn.window_size
        grid = tuple(model.patch_embed.grid_size)
        if window[0] != window[1] or grid[0] % window[0] or grid[1] % window[1]:
            raise ValueError(f"the first stage's grid {grid} must be a multiple of the window {window}")
        self.window, self.grid = window[0], grid
        self.keep = keep
        self.counts = counts
        self.fixed: tuple[torch.Tensor, torch.Tensor] | None = None
        self.test_keep: int | None = None  # n kept in evaluation too (the robustness curve); None: all
        self._blocks: list[tuple[int, Any, dict[str, Any]]] = []  # (stage, block, timm's own settings)
        for stage, layer in enumerate(model.layers):
            for block in layer.blocks:
                if any(g % self.window and g > self.window for g in block.input_resolution):
                    raise ValueError(f"stage {stage}'s grid {block.input_resolution} neither tiles into windows of "
                                     f"{self.window} nor fits in one")
                self._blocks.append((stage, block, {
                    "window_size": block.window_size, "shift_size": block.shift_size,
                    "window_area": block.window_area, "input_resolution": block.input_resolution,
                    "table_window": block.attn.window_size, "shifted": any(block.target_shift_size),
                }))
        self._masks: dict[tuple[Any, ...], torch.Tensor | None] = {}
        self.active = False
        self._rows = self._cols = torch.empty(0, dtype=torch.long)
        self._holding = self._drawn = False  # micro-batches of one step: its first forward draws, the rest reuse it
        model.patch_embed.register_forward_hook(self._hook)

    def begin_step(self, batch_size: int) -> None:
        """The forwards until :meth:`end_step` are micro-batches of one step: one draw serves them."""
        self._holding, self._drawn = True, False

    def end_step(self) -> None:
        self._holding = self._drawn = False

    @property
    def tokens_kept(self) -> int:
        """Tokens of the first stage in training."""
        n_r, n_c = self.keep
        return self.grid[0] // self.window * n_r * (self.grid[1] // self.window) * n_c

    def set_keep(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        """Keep these rows and columns (sorted positions within a window) in every window."""
        window, stages = self.window, self._blocks[-1][0] + 1
        reduced = [(self.grid[0] // window * rows.numel(), self.grid[1] // window * cols.numel())]
        full = [self.grid]
        for _ in range(1, stages):
            reduced.append(((reduced[-1][0] + 1) // 2, (reduced[-1][1] + 1) // 2))
            full.append(((full[-1][0] + 1) // 2, (full[-1][1] + 1) // 2))
        row_positions = stage_positions(rows, window, [h for h, _ in reduced])
        col_positions = stage_positions(cols, window, [w for _, w in reduced])
        indices: dict[tuple[int, tuple[int, int]], torch.Tensor] = {}
        for stage, block, timm_own in self._blocks:
            (h, w), (full_h, full_w) = reduced[stage], full[stage]
            size = (min(rows.numel(), h), min(cols.numel(), w))
            shift = (size[0] // 2 if timm_own["shifted"] and h > size[0] else 0,
                     size[1] // 2 if timm_own["shifted"] and w > size[1] else 0)
            device = block.norm1.weight.device
            if (stage, shift) not in indices:
                indices[(stage, shift)] = relative_index(
                    window_positions(row_positions[stage], full_h, size[0], shift[0]),
                    window_positions(col_positions[stage], full_w, size[1], shift[1]), timm_own["table_window"],
                ).to(device)
            block.window_size, block.shift_size, block.window_area = size, shift, size[0] * size[1]
            block.input_resolution = (h, w)
            block.attn.window_size, block.attn.window_area = size, size[0] * size[1]
            block.attn.relative_position_index = indices[(stage, shift)]
            key = (h, w, size, shift, device, block.norm1.weight.dtype)
            if key not in self._masks:
                self._masks[key] = _mask(block)
            block.attn_mask = self._masks[key]
        device = self._blocks[0][1].norm1.weight.device
        self._rows = (torch.arange(self.grid[0] // window)[:, None] * window + rows).flatten().to(device)
        self._cols = (torch.arange(self.grid[1] // window)[:, None] * window + cols).flatten().to(device)
        self.active = True

    def resample(self, keep: tuple[int, int] | None = None) -> None:
        """Draw this step's kept rows and columns (the same in every window)."""
        n_r, n_c = keep or self.keep
        self.set_keep(torch.randperm(self.window)[:n_r].sort().values, torch.randperm(self.window)[:n_c].sort().values)

    def restore(self) -> None:
        """timm's own windows, shifts, masks and indices, rebuilt on each block's device."""
        from timm.models.swin_transformer import get_relative_position_index

        for _, block, timm_own in self._blocks:
            block.window_size, block.shift_size = timm_own["window_size"], timm_own["shift_size"]
            block.window_area, block.input_resolution = timm_own["window_area"], timm_own["input_resolution"]
            table = timm_own["table_window"]
            block.attn.window_size, block.attn.window_area = table, table[0] * table[1]
            block.attn.relative_position_index = get_relative_position_index(*table).to(block.norm1.weight.device)
            block.attn_mask = None if block.dynamic_mask else _mask(block)
        self.active = False

    def train(self, mode: bool = True) -> WindowPatchDropout:
        if not mode and self.active:  # model.eval() reaches here: evaluation uses every token
            self.restore()
        return super().train(mode)

    def _hook(self, module: nn.Module, inputs: Any, x: torch.Tensor) -> torch.Tensor:
        """x: (B, G, G, C) patch embedding (NHWC) -> (B, G/W n_r, G/W n_c, C) in training (the
        model's mode, which ``patch_embed`` follows whether or not this module is attached)."""
        if module.training and self._drawn:  # a later micro-batch of the step: the step's rows and columns
            return x.index_select(1, self._rows).index_select(2, self._cols) if self.active else x
        self._drawn = module.training and self._holding
        keep = self._step_keep(module.training)
        if keep is None:
            if self.active:
                self.restore()
            return x
        if self.fixed is None:
            self.resample(keep)
        else:
            self.set_keep(*self.fixed)
        return x.index_select(1, self._rows).index_select(2, self._cols)  # saves only the indices

    def _step_keep(self, training: bool) -> tuple[int, int] | None:
        """This forward's (n_r, n_c), or None to use every token."""
        full = (self.window, self.window)
        if not training:
            return None if self.test_keep is None or self.test_keep >= self.window else (self.test_keep,) * 2
        if self.fixed is not None:
            return tuple(self.keep)  # type: ignore[return-value]
        if self.counts is not None and len(self.counts) > 1:
            n = int(torch.randint(self.counts[0], self.counts[-1] + 1, ()).item())
            return None if n == self.window else (n, n)
        return None if tuple(self.keep) == full else tuple(self.keep)  # type: ignore[return-value]
