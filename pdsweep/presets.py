"""Model presets as data: a ViT or a Swin Transformer is a handful of numbers.

Every preset is built through ``timm.create_model(timm_name, embed_dim=..., depth=..., ...)``;
no model code is copied. ``family`` says which: ``vit`` (:class:`Preset`, a plain ViT with a
class token) or ``swin`` (:class:`SwinShape`, timm's Swin v1: patch 4, window 7, four stages
that merge patches). ``vit_micro`` and ``swin_micro`` are not from the paper: they are small
enough for a laptop CPU, and the quickstart and the tests use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pdsweep.errors import PdsweepError

Family = Literal["vit", "swin"]


@dataclass(frozen=True)
class Preset:
    """A ViT with a class token, pre-norm blocks and an MLP of ``mlp_ratio * embed_dim``."""

    name: str
    timm_name: str
    embed_dim: int
    num_heads: int
    depth: int
    mlp_ratio: float = 4.0
    family: Family = "vit"

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden_dim(self) -> int:
        # timm's Block: ``int(dim * mlp_ratio)``.
        return int(self.embed_dim * self.mlp_ratio)


@dataclass(frozen=True)
class SwinShape:
    """A Swin v1: patch size, width of the first stage, blocks and heads per stage, window.

    ``depth`` (a config's block count) is the sum of ``depths``; a config that asks for another
    depth changes the third stage's blocks (where Swin's depth lives: tiny 6, small and base 18).
    """

    name: str
    timm_name: str
    embed_dim: int
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    patch_size: int = 4
    window: int = 7
    mlp_ratio: float = 4.0
    family: Family = "swin"

    @property
    def depth(self) -> int:
        return sum(self.depths)

    @property
    def num_heads(self) -> int:
        """Heads of the first stage (what a weights file's metadata records)."""
        return self.heads[0]

    @property
    def min_depth(self) -> int:
        """The fewest blocks: one in the third stage."""
        return self.depth - self.depths[2] + 1

    def stage_depths(self, depth: int | None = None) -> tuple[int, ...]:
        """Blocks per stage for ``depth`` blocks in all (None: the preset's)."""
        if depth is None:
            return self.depths
        if depth < self.min_depth:
            raise PdsweepError(f"{self.name} needs depth >= {self.min_depth} (its stages hold "
                               f"{'+'.join(map(str, self.depths))} blocks and depth changes the third); "
                               f"got depth={depth}.")
        return (*self.depths[:2], self.depths[2] + depth - self.depth, *self.depths[3:])

    def widths(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**s for s in range(len(self.depths)))


ModelPreset = Preset | SwinShape

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        Preset("vit_micro", "vit_tiny_patch16_224", embed_dim=64, num_heads=2, depth=4),
        Preset("deit_tiny", "deit_tiny_patch16_224", embed_dim=192, num_heads=3, depth=12),
        Preset("deit_small", "deit_small_patch16_224", embed_dim=384, num_heads=6, depth=12),
        Preset("deit_base", "deit_base_patch16_224", embed_dim=768, num_heads=12, depth=12),
        Preset("deit_large", "vit_large_patch16_224", embed_dim=1024, num_heads=16, depth=24),
        SwinShape("swin_micro", "swin_tiny_patch4_window7_224", 32, (1, 1, 2, 1), (1, 2, 4, 8)),
        SwinShape("swin_tiny", "swin_tiny_patch4_window7_224", 96, (2, 2, 6, 2), (3, 6, 12, 24)),
        SwinShape("swin_small", "swin_small_patch4_window7_224", 96, (2, 2, 18, 2), (3, 6, 12, 24)),
        SwinShape("swin_base", "swin_base_patch4_window7_224", 128, (2, 2, 18, 2), (4, 8, 16, 32)),
    )
}


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name``; an unknown name is an error that lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(PRESETS)
        raise PdsweepError(f"unknown model {name!r}; choose one of: {known}.") from None
