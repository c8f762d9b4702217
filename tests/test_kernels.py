"""Which attention kernel ran (pdsweep/training/kernels.py), told from the ops a real timm ViT ran."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pdsweep.training.kernels import attention_backend


@pytest.fixture
def vit() -> torch.nn.Module:
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=64, depth=1,
                             num_heads=2)


def test_fused_eager_and_math_kernels_are_told_apart(vit: torch.nn.Module) -> None:
    images = torch.randn(2, 3, 32, 32)
    assert attention_backend(lambda: vit(images)) == "flash (CPU)"
    with sdpa_kernel(SDPBackend.MATH):  # SDPA called, run as plain matmuls
        assert attention_backend(lambda: vit(images)) == "math"
    vit.blocks[0].attn.fused_attn = False  # timm's explicit softmax(q k^T) v
    assert attention_backend(lambda: vit(images)) == "eager"


def test_a_failing_step_is_recorded_as_unknown_not_raised() -> None:
    assert attention_backend(lambda: torch.ones(2) @ torch.ones(3)) == "unknown"
