"""PatchDropout (Liu et al., WACV 2023): train on a random subset of patch tokens.

Tokens are dropped after the position embeddings are added and before the first block, in
training only; prefix (class) tokens are always kept. The module takes the kept *count*, not a
rate: the cost model charged that count, and the model must keep exactly it (timm's own module
recomputes the count from ``1 - prob``, which can round to one token fewer).
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDropout(nn.Module):
    """Keep ``num_keep`` random patch tokens of every image in training; all in evaluation.

    Every image keeps the same count, so the batch stays one dense tensor. Gathering by advanced
    indexing rather than ``torch.gather`` matters for memory: ``gather`` saves its whole
    (B, N, D) input for backward, indexing saves only the (B, n) indices.
    """

    def __init__(self, num_keep: int, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if num_keep < 1:
            raise ValueError(f"`num_keep >= 1` must hold, but got {num_keep=}.")
        self.num_keep = num_keep
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, P + N, D) prefix tokens then patch tokens -> (B, P + n, D)."""
        B, L, _ = x.shape
        num_patches = L - self.num_prefix_tokens
        if not self.training or self.num_keep >= num_patches:
            return x
        prefix, patches = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        keep = torch.rand(B, num_patches, device=x.device).topk(self.num_keep, dim=1).indices  # (B, n)
        rows = torch.arange(B, device=x.device).unsqueeze(1)  # (B, 1)
        return torch.cat([prefix, patches[rows, keep]], dim=1)

    def extra_repr(self) -> str:
        return f"num_keep={self.num_keep}, num_prefix_tokens={self.num_prefix_tokens}"
