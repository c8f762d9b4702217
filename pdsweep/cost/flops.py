"""Closed-form training cost of a config: FLOPs per image and peak training memory.

FLOPs follow fvcore's convention (one fused multiply-add is one FLOP; matmuls, convolutions
and norms count, element-wise ops do not) and count timm's ViT exactly, attention matmuls
included. Per member and image, with T = tokens through the blocks (kept patches + class token),
N = all patches, D = width, M = MLP width (4D), L = blocks, p = patch size, C = classes:

    patch embedding   3 p^2 N D                 (a conv over every patch: dropout comes after it)
    each block        T D (3D + D + 2M)         (qkv, out projection, fc1, fc2)
                    + 2 T^2 D                   (Q K^T and A V)
                    + 10 T D                    (two LayerNorms; fvcore counts 5 per element)
    final norm        5 T D
    head              D C

Eq. 1 of Liu et al. (PatchDropout, WACV 2023) approximates a forward as 2 L N^2 d + 4 L N d^2.
Its attention term is ours (2 L T^2 D); its linear term counts the four D x D projections but
not the MLP (8 L T D^2 at ratio 4), and it drops norms, patch embedding and head. Those are small
for large models at full length and large once most tokens are dropped (the patch embedding
does not shrink with the keep rate), which is exactly where a budget is decided.
:func:`eq1_flops` is kept for comparison; ``bench/cost.py`` prints both.

No torch import here: the planner and the sampler call this thousands of times a second.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from pdsweep.config import Config, strategy_count
from pdsweep.cost import swin

GIGA = 1e9


class _Arch(NamedTuple):
    """The numbers of one ensemble member that every formula here needs."""

    D: int  # embed dim
    H: int  # heads
    M: int  # MLP hidden dim
    L: int  # blocks
    N: int  # patches
    p: int  # patch size
    R: int  # resolution
    C: int  # classes
    K: int  # ensemble members


def _arch(config: Config) -> _Arch:
    preset = config.preset
    if config.family != "vit":
        raise TypeError(f"{config.model} is not a ViT; its cost is in pdsweep.cost.swin.")
    return _Arch(
        D=preset.embed_dim,
        H=preset.num_heads,
        M=preset.mlp_hidden_dim,
        L=config.blocks,
        N=config.num_patches,
        p=config.patch_size,
        R=config.resolution,
        C=config.num_classes,
        K=config.ensemble_size,
    )


def _member_flops(a: _Arch, T: float, T2: float | None = None) -> float:
    """Forward FLOPs of one member on one image with T tokens through the blocks.

    ``T2`` is the mean of T^2 when the token count varies between iterations (keep mode
    uniform); with integers in, the count is an exact integer.
    """
    T2 = T * T if T2 is None else T2
    block = T * a.D * (4 * a.D + 2 * a.M) + 2 * T2 * a.D + 10 * T * a.D
    return 3 * a.p * a.p * a.N * a.D + a.L * block + 5 * T * a.D + a.D * a.C


@functools.lru_cache(maxsize=65536)
def _token_moments(grid: int, low: int, high: int, sampling: str) -> tuple[float, float]:
    """Mean of T and of T^2 when the requested count is uniform on [low, high]."""
    tokens = [strategy_count(grid, c, sampling) + 1 for c in range(low, high + 1)]
    return sum(tokens) / len(tokens), sum(t * t for t in tokens) / len(tokens)


def _train_member_flops(a: _Arch, config: Config, top: int) -> float:
    """Mean train FLOPs of a member whose strategy is asked for ``top`` patches (at most)."""
    counts = config.requested_counts
    if len(counts) == 1 or counts[0] >= top:
        return _member_flops(a, strategy_count(config.grid_size, top, config.sampling) + 1)
    return _member_flops(a, *_token_moments(config.grid_size, counts[0], top, config.sampling))


def train_flops(config: Config) -> float:
    """Forward FLOPs per image at the training keep rate, summed over the ensemble.

    Under keep mode uniform, the mean over the iterations' token counts.
    """
    if config.family == "swin":
        return swin.train_flops(config)
    a = _arch(config)
    return a.K * _train_member_flops(a, config, config.requested_counts[-1])


def inference_flops(config: Config) -> int:
    """Forward FLOPs per image with every patch (keep rate 1), summed over the ensemble."""
    if config.family == "swin":
        return swin.inference_flops(config)
    a = _arch(config)
    return a.K * int(_member_flops(a, a.N + 1))


def train_gflops(config: Config) -> float:
    return train_flops(config) / GIGA


def inference_gflops(config: Config) -> float:
    return inference_flops(config) / GIGA


def eq1_flops(config: Config) -> int | None:
    """The paper's Eq. 1, ``2 L N^2 d + 4 L N d^2``, with N the tokens kept, for comparison (a
    ViT's: None for a Swin)."""
    if config.family == "swin":
        return None
    a = _arch(config)
    T = config.tokens_kept
    return a.K * (2 * a.L * T * T * a.D + 4 * a.L * T * a.D * a.D)


def param_count(config: Config) -> int:
    """Parameters of the whole ensemble, as timm's ViT has them (qkv bias, class token); a Swin's
    as timm's Swin has them."""
    if config.family == "swin":
        return swin.param_count(config)
    a = _arch(config)
    return a.K * _member_params(a)


def _member_params(a: _Arch) -> int:
    D, M = a.D, a.M
    patch_embed = 3 * a.p * a.p * D + D
    tokens = D + (a.N + 1) * D  # class token, position embedding
    block = 4 * D * D + 2 * D * M + 9 * D + M  # norms, qkv, proj, fc1, fc2 with biases
    return patch_embed + tokens + a.L * block + 2 * D + D * a.C + a.C
