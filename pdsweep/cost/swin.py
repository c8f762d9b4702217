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

The presets are not config axes yet: issue #13 wires Swin into ``Config``, the planner and the
sweeps; until then this module and :mod:`pdsweep.training.swin_dropout` are its tested parts.
No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pdsweep.errors import PdsweepError


@dataclass(frozen=True)
class SwinShape:
    """A Swin v1: patch size, width of the first stage, blocks and heads per stage, window."""

    name: str
    timm_name: str
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    patch_size: int = 4
    window: int = 7
    mlp_ratio: float = 4.0

    def widths(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**s for s in range(len(self.depths)))


SWIN_PRESETS: dict[str, SwinShape] = {
    s.name: s
    for s in (
        SwinShape("swin_tiny", "swin_tiny_patch4_window7_224", 96, (2, 2, 6, 2), (3, 6, 12, 24)),
        SwinShape("swin_small", "swin_small_patch4_window7_224", 96, (2, 2, 18, 2), (3, 6, 12, 24)),
        SwinShape("swin_base", "swin_base_patch4_window7_224", 128, (2, 2, 18, 2), (4, 8, 16, 32)),
    )
}


def stage_grids(shape: SwinShape, resolution: int) -> tuple[int, ...]:
    """The side of each stage's grid at ``resolution`` with every token (PatchMerging: ceil(g/2))."""
    grids = [resolution // shape.patch_size]
    for _ in shape.depths[1:]:
        grids.append((grids[-1] + 1) // 2)
    return tuple(grids)


def resolution_problem(shape: SwinShape, resolution: int) -> str | None:
    """Why window-structured dropout cannot run at ``resolution`` (None if it can).

    Every stage's grid must be a multiple of the window or fit in one window: then the reduced
    grids tile into whole windows and timm never pads (its pad tokens are not masked, so they
    would act as keys). For patch 4, window 7 and four stages: 28, 56, 112 px or a multiple of 224.
    """
    if resolution % shape.patch_size:
        return f"patch size {shape.patch_size} does not divide resolution {resolution}"
    first = resolution // shape.patch_size
    if first < shape.window or first % shape.window:
        return (f"at {resolution} px the first stage's grid is {first}, not a multiple of the window "
                f"({shape.window}); rows and columns are kept per window")
    bad = [g for g in stage_grids(shape, resolution) if g % shape.window and g > shape.window]
    if bad:
        return (f"at {resolution} px the stage grids are {', '.join(map(str, stage_grids(shape, resolution)))}; "
                f"{bad[0]} is neither a multiple of the window ({shape.window}) nor within one window")
    return None


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


def window_keep_rates(window: int = 7) -> tuple[float, ...]:
    """The keep rates a square window keep can express, (n / W)^2, highest first."""
    return tuple((n / window) ** 2 for n in range(window, 0, -1))
