"""pdsweep: with this much compute, what is the most accurate Vision Transformer I can train?

The public API. Importing it is cheap: torch, timm and fvcore load only when a name that needs
them (``build_model``, ``fvcore_flops``, ...) is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access.
_EXPORTS = {
    "Config": "pdsweep.config",
    "keep_rate_for": "pdsweep.config",
    "patches_kept": "pdsweep.config",
    "PdsweepError": "pdsweep.errors",
    "Preset": "pdsweep.presets",
    "PRESETS": "pdsweep.presets",
    "Budget": "pdsweep.cost",
    "Cost": "pdsweep.cost",
    "MemoryEstimate": "pdsweep.cost",
    "estimate": "pdsweep.cost",
    "train_gflops": "pdsweep.cost",
    "inference_gflops": "pdsweep.cost",
    "max_keep_count": "pdsweep.cost",
    "SearchSpace": "pdsweep.space",
    "TrainingSettings": "pdsweep.space",
    "load_space": "pdsweep.space",
    "Plan": "pdsweep.plan",
    "plan": "pdsweep.plan",
    "build_model": "pdsweep.models",
    "Ensemble": "pdsweep.models",
    "PatchDropout": "pdsweep.patch_dropout",
    "fvcore_flops": "pdsweep.verify",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pdsweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
