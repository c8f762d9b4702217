"""Swin Transformers (timm's Swin v1) with window-structured PatchDropout: shapes and FLOPs.

The PatchDropout study keeps, in every W x W window, the same n_r of its W rows and n_c of its
W columns: each window shrinks to n_r x n_c, the kept tokens still tile a regular grid, so
shifted windows, patch merging and the later stages all run on the reduced grid and the saving
holds in every stage. The fraction of tokens kept is (n_r n_c) / W^2 (W = 7, square keeps: 1,
36/49, 25/49, 16/49, 9/49, 4/49, 1/49).

Forward FLOPs per image in fvcore's convention (one multiply-add is one FLOP; conv, linear,
the attention matmuls and LayerNorm at 5 per element count; adds, softmax, roll, pad, gather and
the mean pool do not), with G = R/p, C_s = E 2^s, M_s = int(C_s * mlp_ratio), the grid
h_0 x w_0 = (G/W n_r) x (G/W n_c) after the gather and h_s = ceil(h_{s-1}/2), windows
a_s x b_s = min(n_r, h_s) x min(n_c, w_s) (timm clamps a window to its grid), T_s = h_s w_s
tokens and T~_s the same padded up to whole windows::

    patch embedding    3 p^2 E G^2 + 5 E G^2               (conv and its norm on the full grid)
    patch merging      T_s (20 C_{s-1} + 4 C_{s-1} C_s)     (s >= 1: norm of 4C, linear 4C -> 2C)
    each block         10 T C + 4 T~ C^2 + 2 T~ a b C + 2 T C M
    final norm, head   5 T_last C_last + C_last classes

Checked against fvcore's count of the real timm model in ``tests/test_swin.py``. The attention
term falls with the fourth power of n/W, the rest with the square.

A config keeps the same n of the W rows and columns (a square keep, n_r = n_c = n); the
rectangles are here for the tests. No torch here.
"""

from __future__ import annotations

from pdsweep.config import Config
from pdsweep.errors import PdsweepError
from pdsweep.presets import PRESETS, SwinShape
from pdsweep.windows import resolution_problem


SWIN_PRESETS: dict[str, SwinShape] = {name: p for name, p in PRESETS.items() if isinstance(p, SwinShape)}


def swin_flops(shape: SwinShape, resolution: int, keep: tuple[int, int] | None = None, *,
               num_classes: int = 1000, depths: tuple[int, ...] | None = None) -> int:
    """Forward FLOPs of one image (the formula in the module docstring). ``keep``: (n_r, n_c)
    rows and columns kept per window, None for every token; ``depths``: blocks per stage
    (default the shape's)."""
    problem = resolution_problem(shape, resolution) if keep is not None else None
    if problem:
        raise PdsweepError(f"{shape.name}: {problem}; use 224 px or a multiple of it.")
    W, p, E = shape.window, shape.patch_size, shape.embed_dim
    depths = depths or shape.depths
    widths = shape.widths()
    n_r, n_c = keep or (W, W)
    if not (1 <= n_r <= W and 1 <= n_c <= W):
        raise PdsweepError(f"`1 <= kept rows, columns <= {W}` must hold, but got keep={keep}.")
    G = resolution // p
    flops = 3 * p * p * E * G * G + 5 * E * G * G
    h, w = (G, G) if keep is None else (G // W * n_r, G // W * n_c)
    for s, blocks in enumerate(depths):
        C = widths[s]
        if s > 0:
            h, w = (h + 1) // 2, (w + 1) // 2
            flops += h * w * (20 * widths[s - 1] + 4 * widths[s - 1] * C)
        a, b = min(n_r, h), min(n_c, w)
        tokens, padded = h * w, -(-h // a) * a * (-(-w // b) * b)
        M = int(C * shape.mlp_ratio)
        flops += blocks * (10 * tokens * C + 4 * padded * C * C + 2 * padded * a * b * C + 2 * tokens * C * M)
    return flops + 5 * h * w * widths[-1] + widths[-1] * num_classes


def _shape(config: Config) -> SwinShape:
    preset = config.preset
    if not isinstance(preset, SwinShape):
        raise PdsweepError(f"{config.model} is a ViT, not a Swin.")
    return preset


def train_flops(config: Config) -> float:
    """Forward FLOPs per image at the training keep, summed over the ensemble (keep mode uniform:
    the mean over the n drawn)."""
    shape, keeps = _shape(config), config.window_keeps
    member = sum(swin_flops(shape, config.resolution, (n, n), num_classes=config.num_classes,
                            depths=config.stage_depths) for n in keeps) / len(keeps)
    return config.ensemble_size * member


def inference_flops(config: Config) -> int:
    """Forward FLOPs per image with every token, summed over the ensemble."""
    shape = _shape(config)
    return config.ensemble_size * swin_flops(shape, config.resolution, num_classes=config.num_classes,
                                             depths=config.stage_depths)


def param_count(config: Config) -> int:
    """Parameters of the whole ensemble, as timm's Swin has them (biases, relative position bias
    tables, patch merging without bias)."""
    shape = _shape(config)
    W, p, E = shape.window, shape.patch_size, shape.embed_dim
    widths = shape.widths()
    total = 3 * p * p * E + E + 2 * E  # patch embedding and its norm
    for s, blocks in enumerate(config.stage_depths):
        C, M = widths[s], int(widths[s] * shape.mlp_ratio)
        if s > 0:
            total += 2 * 4 * widths[s - 1] + 4 * widths[s - 1] * C  # norm of 4C, linear 4C -> 2C
        block = 2 * C + 3 * C * C + 3 * C + (2 * W - 1) ** 2 * shape.heads[s] + C * C + C + 2 * C + 2 * C * M + M + C
        total += blocks * block
    total += 2 * widths[-1] + widths[-1] * config.num_classes + config.num_classes
    return config.ensemble_size * total
