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

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Stage:
    """One stage of a member at the training keep: its shapes on the reduced grid (per image)."""

    blocks: int
    width: int  # C_s
    hidden: int  # M_s
    heads: int  # H_s
    tokens: int  # T_s = h_s^2
    padded: int  # T~_s: tokens padded to whole windows
    window_area: int  # A_s: tokens per window
    merged_width: int  # C_{s-1}, the width patch merging takes in; 0 for the first stage
    window: int  # the window its relative position bias table is for: W, or the full grid's side if smaller

    @property
    def block_params(self) -> int:
        """A block's parameters: two norms, qkv, proj, the bias table, the MLP (biases included)."""
        C, M = self.width, self.hidden
        attention = 4 * C * C + 4 * C + (2 * self.window - 1) ** 2 * self.heads  # qkv, proj, bias table
        return 4 * C + attention + 2 * C * M + M + C  # two norms, attention, MLP

    @property
    def merging_params(self) -> int:
        """Patch merging's LayerNorm of 4 C_{s-1} and its linear 4 C_{s-1} -> C_s (no bias)."""
        return 2 * 4 * self.merged_width + 4 * self.merged_width * self.width

    @property
    def weight_matrix_params(self) -> int:
        """Linear weights of the stage, which autocast copies to bf16 and keeps for backward."""
        C, M = self.width, self.hidden
        return self.blocks * (4 * C * C + 2 * C * M) + 4 * self.merged_width * C


def stages(config: Config) -> list[Stage]:
    """The member's stages at the training keep (the most rows kept, under keep mode uniform)."""
    shape = _shape(config)
    W, n = shape.window, config.window_keeps[-1]
    side, full = config.grid_size // W * n, config.grid_size
    stages = []
    for s, (blocks, width, heads) in enumerate(zip(config.stage_depths, shape.widths(), shape.heads)):
        if s > 0:
            side, full = (side + 1) // 2, (full + 1) // 2
        a = min(n, side)
        stages.append(Stage(
            blocks=blocks, width=width, hidden=int(width * shape.mlp_ratio), heads=heads, tokens=side * side,
            padded=(-(-side // a) * a) ** 2, window_area=a * a, merged_width=shape.widths()[s - 1] if s else 0,
            window=min(W, full),  # timm clamps a window (and its table) to a smaller grid
        ))
    return stages


def param_count(config: Config) -> int:
    """Parameters of the whole ensemble, as timm's Swin has them (biases, relative position bias
    tables, patch merging without bias)."""
    shape = _shape(config)
    members = stages(config)
    patch_embed = 3 * shape.patch_size**2 * shape.embed_dim + shape.embed_dim + 2 * shape.embed_dim  # conv, norm
    body = sum(st.blocks * st.block_params + (st.merging_params if st.merged_width else 0) for st in members)
    head = 2 * members[-1].width + members[-1].width * config.num_classes + config.num_classes  # norm, head
    return config.ensemble_size * (patch_embed + body + head)
