from __future__ import annotations

import pytest

from pdsweep.config import Config
from pdsweep.cost import param_count
from pdsweep.training.models import build_member
from pdsweep.presets import PRESETS, get_preset
from pdsweep.errors import PdsweepError


@pytest.mark.parametrize(
    ("name", "dim", "heads", "depth"),
    [("deit_tiny", 192, 3, 12), ("deit_small", 384, 6, 12), ("deit_base", 768, 12, 12), ("deit_large", 1024, 16, 24)],
)
def test_paper_presets_build_the_stated_timm_model(name: str, dim: int, heads: int, depth: int) -> None:
    preset = PRESETS[name]
    assert (preset.embed_dim, preset.num_heads, preset.depth, preset.mlp_ratio) == (dim, heads, depth, 4.0)
    model = build_member(Config(name, 224, 16), device="meta")
    assert model.embed_dim == dim
    assert len(model.blocks) == depth
    assert model.blocks[0].attn.num_heads == heads
    assert model.blocks[0].mlp.fc1.out_features == 4 * dim
    assert model.cls_token is not None


@pytest.mark.parametrize(
    ("name", "dim", "depths", "heads"),
    [("swin_tiny", 96, (2, 2, 6, 2), (3, 6, 12, 24)), ("swin_small", 96, (2, 2, 18, 2), (3, 6, 12, 24)),
     ("swin_base", 128, (2, 2, 18, 2), (4, 8, 16, 32))],
)
def test_swin_presets_build_timms_swin_v1_shapes(name: str, dim: int, depths: tuple[int, ...], heads: tuple[int, ...]) -> None:
    model = build_member(Config(name, 224, 4), device="meta")
    assert model.embed_dim == dim and model.patch_embed.patch_size == (4, 4)
    assert tuple(len(layer.blocks) for layer in model.layers) == depths
    assert tuple(layer.blocks[0].attn.num_heads for layer in model.layers) == heads
    assert all(layer.blocks[0].attn.window_size == (7, 7) for layer in model.layers)
    assert sum(p.numel() for p in model.parameters()) == param_count(Config(name, 224, 4))


@pytest.mark.parametrize("name", [name for name, preset in PRESETS.items() if preset.family == "vit"])
def test_config_overrides_reach_the_model(name: str) -> None:
    config = Config(name, 64, 8, depth=2, num_classes=7)
    model = build_member(config, device="meta")
    assert len(model.blocks) == 2
    assert model.patch_embed.grid_size == (8, 8)
    assert model.head.out_features == 7
    assert sum(p.numel() for p in model.parameters()) == param_count(config)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(PdsweepError, match=r"unknown model 'vit_giant'; choose one of: vit_micro, deit_tiny"):
        get_preset("vit_giant")
