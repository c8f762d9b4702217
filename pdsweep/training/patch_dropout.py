"""PatchDropout (Liu et al., WACV 2023): train on a subset of patch tokens.

Tokens are dropped after the position embeddings are added and before the first block, in
training only; prefix (class) tokens are always kept; every image of a batch keeps the same
number, so the batch stays one dense tensor. Which patches survive is the sampling strategy:

- ``random``: a uniform random subset per image (the paper's default, timm's behaviour);
- ``structured``: random rows and random columns of the patch grid, keeping their crossings;
- ``block``: one contiguous square block at a random place (its last row cut to the count);
- ``grid``: a regular lattice with a random offset (a random subset of it, to the count).

The module takes counts, not a rate: the cost model charged :func:`strategy_count` of them, and
the model keeps exactly that (timm's module recomputes its count from ``1 - prob``, which can
round to one token fewer). Keep mode ``uniform`` draws the requested count each iteration.

A step trained as micro-batches (:func:`pdsweep.training.models.one_draw`) draws once for its
whole batch, at its first micro-batch, and each micro-batch takes its own images' rows: the
same count and the same kept patches as the batch at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pdsweep.config import (
    SAMPLINGS,
    lattice_shape,
    patches_kept,
    strategy_count,
    structured_shape,
)


class PatchDropout(nn.Module):
    """Keep a strategy's subset of a ``grid`` x ``grid`` patch grid in training; all in eval.

    ``counts`` are the counts asked of the strategy: one (keep mode fixed) or a range drawn
    uniformly each iteration (keep mode uniform). ``test_keep_rate`` (None by default) makes
    evaluation drop patches too, for the robustness curve.

    Gathering by advanced indexing rather than ``torch.gather`` matters for memory: ``gather``
    saves its whole (B, N, D) input for backward, indexing saves only the (B, n) indices.
    """

    def __init__(self, grid: int, counts: range, sampling: str = "random", num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}.")
        if not counts or counts[0] < 1 or counts[-1] > grid * grid:
            raise ValueError(f"`1 <= counts <= grid ** 2` must hold, but got {counts=}, {grid=}.")
        self.grid = grid
        self.counts = counts
        self.sampling = sampling
        self.num_prefix_tokens = num_prefix_tokens
        self.test_keep_rate: float | None = None
        self._step: _StepDraw | None = None  # a step's draw, shared by its micro-batches

    def begin_step(self, batch_size: int) -> None:
        """The forwards until :meth:`end_step` are micro-batches of one step of ``batch_size`` images."""
        self._step = _StepDraw(batch_size)

    def end_step(self) -> None:
        self._step = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, P + N, D) prefix tokens then patch tokens -> (B, P + n, D)."""
        num_patches = x.shape[1] - self.num_prefix_tokens
        step = self._step if self.training else None
        if step is not None and step.count is not None:
            count = step.count
        elif self.training and len(self.counts) == 1:
            count = self.counts[0]
        elif self.training:
            count = int(torch.randint(self.counts[0], self.counts[-1] + 1, ()).item())
        elif self.test_keep_rate is not None:
            count = patches_kept(num_patches, self.test_keep_rate)
        else:
            return x
        if num_patches != self.grid * self.grid:
            raise ValueError(f"expected {self.grid ** 2} patch tokens, got {num_patches}.")
        if step is not None:
            step.count = count
        if strategy_count(self.grid, count, self.sampling) >= num_patches:
            return x
        if step is None:
            keep = keep_indices(x.shape[0], self.grid, count, self.sampling, x.device)  # (B, n)
        else:
            if step.keep is None:
                step.keep = keep_indices(step.batch_size, self.grid, count, self.sampling, x.device)
            keep, step.offset = step.keep[step.offset : step.offset + x.shape[0]], step.offset + x.shape[0]
        prefix, patches = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # (B, 1)
        return torch.cat([prefix, patches[rows, keep]], dim=1)

    def extra_repr(self) -> str:
        counts = self.counts[0] if len(self.counts) == 1 else f"{self.counts[0]}..{self.counts[-1]}"
        return f"grid={self.grid}, counts={counts}, sampling={self.sampling}"


@dataclass
class _StepDraw:
    """One step's draw while its micro-batches run: the count, the (B, n) kept indices, and how
    many of the batch's images the micro-batches so far took."""

    batch_size: int
    count: int | None = None
    keep: torch.Tensor | None = None
    offset: int = 0


def keep_indices(batch: int, grid: int, count: int, sampling: str, device: torch.device) -> torch.Tensor:
    """(B, strategy_count(grid, count)) indices into the raster-ordered patch grid, per image."""
    num_patches = grid * grid
    if sampling == "random":
        return torch.rand(batch, num_patches, device=device).topk(count, dim=1).indices
    if sampling == "structured":
        rows, cols = structured_shape(grid, count)
        row = torch.rand(batch, grid, device=device).topk(rows, dim=1).indices  # (B, rows)
        col = torch.rand(batch, grid, device=device).topk(cols, dim=1).indices  # (B, cols)
        return (row.unsqueeze(2) * grid + col.unsqueeze(1)).flatten(1)  # (B, rows * cols)
    if sampling == "block":
        side = math.isqrt(count - 1) + 1  # ceil(sqrt(count)) <= grid
        top, left = torch.randint(0, grid - side + 1, (2, batch, 1), device=device)  # (B, 1) each
        i = torch.arange(side, device=device)
        offsets = (i.unsqueeze(1) * grid + i.unsqueeze(0)).flatten()[:count]  # (count,) raster
        return top * grid + left + offsets
    if sampling == "grid":
        rows, cols = lattice_shape(grid, count)
        row_stride, col_stride = grid // rows, grid // cols
        row0 = torch.randint(0, grid - (rows - 1) * row_stride, (batch, 1), device=device)  # (B, 1)
        col0 = torch.randint(0, grid - (cols - 1) * col_stride, (batch, 1), device=device)
        row = row0 + torch.arange(rows, device=device) * row_stride  # (B, rows)
        col = col0 + torch.arange(cols, device=device) * col_stride  # (B, cols)
        lattice = (row.unsqueeze(2) * grid + col.unsqueeze(1)).flatten(1)  # (B, rows * cols)
        pick = torch.rand(lattice.shape, device=device).topk(count, dim=1).indices
        return lattice.gather(1, pick)
    raise ValueError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}.")
