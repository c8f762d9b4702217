"""A config becomes timm ViTs or Swins with pdsweep's PatchDropout: one member, or an ensemble."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import timm
import torch
from torch import nn

from pdsweep.config import Config
from pdsweep.cost import Attention
from pdsweep.presets import SwinShape
from pdsweep.training.patch_dropout import PatchDropout
from pdsweep.training.swin_dropout import WindowPatchDropout
from pdsweep.windows import window_keep_nearest


def build_member(config: Config, *, device: str | torch.device | None = None, attention: Attention = "fused") -> nn.Module:
    """One randomly initialised model for ``config``, keeping ``config.patches_kept`` in training.

    Built by ``timm.create_model`` from the preset's numbers; nothing is downloaded (pretrained
    weights are loaded afterwards, :func:`pdsweep.training.weights.load_into`).
    ``device="meta"`` builds it without memory (for counting FLOPs). ``attention="eager"``:
    timm's explicit ``softmax(q k^T) v`` in every block instead of the fused kernel. A ViT gets
    :class:`PatchDropout` (``model.patch_drop``), a Swin :class:`WindowPatchDropout`
    (``model.window_drop``) with stochastic depth off (timm's Swin default is 0.1, its ViT's 0:
    pdsweep trains both alike).
    """
    preset = config.preset
    with torch.device(device) if device is not None else contextlib.nullcontext():
        if isinstance(preset, SwinShape):
            model = timm.create_model(
                preset.timm_name, pretrained=False, img_size=config.resolution, embed_dim=preset.embed_dim,
                depths=config.stage_depths, num_heads=preset.heads, window_size=preset.window,
                mlp_ratio=preset.mlp_ratio, num_classes=config.num_classes, drop_path_rate=0.0,
            )
        else:
            model = timm.create_model(
                preset.timm_name,
                pretrained=False,
                img_size=config.resolution,
                patch_size=config.patch_size,
                embed_dim=preset.embed_dim,
                num_heads=preset.num_heads,
                mlp_ratio=preset.mlp_ratio,
                depth=config.blocks,
                num_classes=config.num_classes,
            )
    if isinstance(preset, SwinShape):
        keeps = config.window_keeps
        model.window_drop = WindowPatchDropout(model, (keeps[-1], keeps[-1]), counts=keeps)
    else:
        model.patch_drop = PatchDropout(
            config.grid_size, config.requested_counts, config.sampling, num_prefix_tokens=model.num_prefix_tokens
        )
    set_attention(model, attention)
    return model


def set_attention(member: nn.Module, attention: Attention) -> None:
    """Every attention layer of a timm ViT or Swin on the fused kernel (SDPA) or on timm's
    explicit (eager) path."""
    for module in member.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = attention == "fused"


def set_test_keep(member: nn.Module, keep_rate: float | None) -> None:
    """Make ``member`` drop tokens in evaluation at ``keep_rate`` (None: use every token)."""
    if hasattr(member, "window_drop"):
        window = member.window_drop.window
        member.window_drop.test_keep = None if keep_rate is None else window_keep_nearest(keep_rate, window)
    else:
        member.patch_drop.test_keep_rate = keep_rate


class Ensemble(nn.Module):
    """``ensemble_size`` independently initialised members; softmax outputs averaged.

    Members differ in their initialisation (a pretrained start: the head only), their
    PatchDropout masks, and their augmentation and data order (the training loop draws those
    per member).
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, R, R) images -> (K, B, C) logits of each member."""
        return torch.stack([member(x) for member in self.members])

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, R, R) images -> (B, C) mean of the members' softmax."""
        return self(x).softmax(dim=-1).mean(dim=0)


@contextlib.contextmanager
def one_draw(member: nn.Module, batch_size: int) -> Iterator[None]:
    """The forwards inside are micro-batches of one step of ``batch_size`` images: PatchDropout
    draws once for the step (a Swin's window rows and columns, a ViT's kept patches for every
    image), as the batch at once would."""
    module = member.window_drop if hasattr(member, "window_drop") else member.patch_drop
    module.begin_step(batch_size)
    try:
        yield
    finally:
        module.end_step()


def build_model(config: Config, *, device: str | torch.device | None = None, attention: Attention = "fused") -> Ensemble:
    """The ensemble for ``config`` (one member when ``ensemble_size == 1``)."""
    return Ensemble([build_member(config, device=device, attention=attention) for _ in range(config.ensemble_size)])


def kept_at_test(model: Ensemble, keep_rate: float) -> float:
    """The keep rate ``model`` keeps when asked for ``keep_rate`` at test time: a Swin's window
    keeps (n/W)^2 (the n whose rate is nearest, :func:`pdsweep.windows.window_keep_nearest`), a
    ViT the rate asked."""
    member = model.members[0]
    if hasattr(member, "window_drop"):
        window = member.window_drop.window
        return (window_keep_nearest(keep_rate, window) / window) ** 2
    return keep_rate


@contextlib.contextmanager
def dropping_at_test(model: Ensemble, keep_rate: float) -> Iterator[None]:
    """Evaluate with PatchDropout active at ``keep_rate`` (each member's own strategy)."""
    for member in model.members:
        set_test_keep(member, keep_rate)
    try:
        yield
    finally:
        for member in model.members:
            set_test_keep(member, None)
