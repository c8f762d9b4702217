"""A config becomes timm ViT(s) with pdsweep's PatchDropout: one member, or an ensemble."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import timm
import torch
from torch import nn

from pdsweep.config import Config
from pdsweep.errors import PdsweepError
from pdsweep.training.patch_dropout import PatchDropout

log = logging.getLogger(__name__)


def build_member(config: Config, *, device: str | torch.device | None = None) -> nn.Module:
    """One randomly initialised ViT for ``config``, keeping ``config.patches_kept`` in training.

    Built by ``timm.create_model`` from the preset's numbers; nothing is downloaded.
    ``device="meta"`` builds it without memory (for counting FLOPs).
    """
    preset = config.preset
    with torch.device(device) if device is not None else contextlib.nullcontext():
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
    model.patch_drop = PatchDropout(
        config.grid_size, config.requested_counts, config.sampling, num_prefix_tokens=model.num_prefix_tokens
    )
    return model


class Ensemble(nn.Module):
    """``ensemble_size`` independently initialised members; softmax outputs averaged."""

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


def build_model(config: Config, *, device: str | torch.device | None = None) -> Ensemble:
    """The ensemble for ``config`` (one member when ``ensemble_size == 1``)."""
    return Ensemble([build_member(config, device=device) for _ in range(config.ensemble_size)])



@contextlib.contextmanager
def dropping_at_test(model: Ensemble, keep_rate: float) -> Iterator[None]:
    """Evaluate with PatchDropout active at ``keep_rate`` (each member's own strategy)."""
    for member in model.members:
        member.patch_drop.test_keep_rate = keep_rate
    try:
        yield
    finally:
        for member in model.members:
            member.patch_drop.test_keep_rate = None


def check_weights_file(path: str | Path) -> Path:
    """``path`` if it is a file, else the error a user sees (checked before any data is read)."""
    path = Path(path)
    if not path.is_file():
        raise PdsweepError(f"pretrained weights {str(path)!r} not found; give a local .safetensors or .pth file.")
    return path


def load_pretrained(member: nn.Module, path: Path) -> None:
    """Load a local timm checkpoint (``.safetensors``, or ``.pth``/``.bin`` by torch.load).

    Position embeddings are resampled to the member's patch grid and the patch embedding to
    its patch size (timm's ``checkpoint_filter_fn``); a head of another class count is left at
    its fresh initialisation; blocks beyond the checkpoint's depth stay random. Nothing is
    downloaded.
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = check_weights_file(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors and torch raise several types for a bad file
        raise PdsweepError(f"pretrained weights {str(path)!r} cannot be read ({error}).") from None
    if not isinstance(state, dict):
        raise PdsweepError(f"pretrained weights {str(path)!r} hold no state dict.")
    state = checkpoint_filter_fn(state, member)
    own = member.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("blocks.") for k in usable):
        raise PdsweepError(
            f"pretrained weights {str(path)!r} match none of the model's blocks; is it a ViT of width "
            f"{member.embed_dim}?"
        )
    member.load_state_dict(usable, strict=False)
    left_random = sorted({k.split(".")[0] if not k.startswith("blocks.") else ".".join(k.split(".")[:2]) for k in own if k not in usable})
    if left_random:
        log.info("pretrained %s: left at random initialisation: %s", path.name, ", ".join(left_random))
