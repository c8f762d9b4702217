"""Model presets as data: a ViT is a handful of numbers.

Every preset is built through ``timm.create_model(timm_name, embed_dim=..., depth=..., ...)``;
no model code is copied. ``vit_micro`` is not from the paper: it is small enough for a laptop
CPU, and the quickstart and the tests use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pdsweep.errors import PdsweepError


@dataclass(frozen=True)
class Preset:
    """A ViT with a class token, pre-norm blocks and an MLP of ``mlp_ratio * embed_dim``."""

    name: str
    timm_name: str
    embed_dim: int
    num_heads: int
    depth: int
    mlp_ratio: float = 4.0

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden_dim(self) -> int:
        # timm's Block: ``int(dim * mlp_ratio)``.
        return int(self.embed_dim * self.mlp_ratio)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("vit_micro", "vit_tiny_patch16_224", embed_dim=64, num_heads=2, depth=4),
        Preset("deit_tiny", "deit_tiny_patch16_224", embed_dim=192, num_heads=3, depth=12),
        Preset("deit_small", "deit_small_patch16_224", embed_dim=384, num_heads=6, depth=12),
        Preset("deit_base", "deit_base_patch16_224", embed_dim=768, num_heads=12, depth=12),
        Preset("deit_large", "vit_large_patch16_224", embed_dim=1024, num_heads=16, depth=24),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is an error that lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(PRESETS)
        raise PdsweepError(f"unknown model {name!r}; choose one of: {known}.") from None
