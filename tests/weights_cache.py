"""Write weights into a Hugging Face hub cache layout, as ``hf download`` leaves it, so tests load
them by hub name offline (``models--ORG--NAME/{refs/main, snapshots/COMMIT/...}``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from pdsweep.config import Config
from pdsweep.training.models import build_member


def write_hub_weights(cache: Path, repo: str, state: dict[str, torch.Tensor], *, architecture: str = "vit_tiny_patch16_224",
                      model_args: dict | None = None) -> Path:
    """``state`` as ``model.safetensors`` (and a timm ``config.json``) of ``repo`` in ``cache``."""
    org, name = repo.split("/")
    root = cache / f"models--{org}--{name}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    config = {"architecture": architecture, "num_classes": 10, **({"model_args": model_args} if model_args else {})}
    (snapshot / "config.json").write_text(json.dumps(config))
    return snapshot / "model.safetensors"


def micro_state(seed: int = 0, **config: object) -> dict[str, torch.Tensor]:
    """A vit_micro's weights (width 64, 2 heads): depth 2 at 32 px, patch 4, unless told."""
    torch.manual_seed(seed)
    values = {"model": "vit_micro", "resolution": 32, "patch_size": 4, "depth": 2, "num_classes": 10, **config}
    return build_member(Config(**values)).state_dict()  # type: ignore[arg-type]
