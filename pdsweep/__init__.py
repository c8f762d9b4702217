"""pdsweep: with this much compute, what is the most accurate Vision Transformer I can train?

The public API. Importing it is cheap: torch, timm, Ray, Optuna, MLflow and fvcore load only
when a name that needs them (``train``, ``run_sweep``, ``fvcore_flops``, ...) is first used.
The layers and what each owns: ``docs/architecture.md``.
"""

from __future__ import annotations

from pdsweep._lazy import lazy_exports

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access.
_EXPORTS = {
    # values every layer shares
    "Config": "pdsweep.config",
    "keep_rate_for": "pdsweep.config",
    "patches_kept": "pdsweep.config",
    "PdsweepError": "pdsweep.errors",
    "Preset": "pdsweep.presets",
    "PRESETS": "pdsweep.presets",
    # cost: closed-form FLOPs, memory, budgets (no torch)
    "Budget": "pdsweep.cost",
    "Cost": "pdsweep.cost",
    "StepSetup": "pdsweep.cost",
    "MemoryEstimate": "pdsweep.cost",
    "estimate": "pdsweep.cost",
    "train_gflops": "pdsweep.cost",
    "inference_gflops": "pdsweep.cost",
    "max_keep_count": "pdsweep.cost",
    "largest_keep_rate": "pdsweep.cost",
    # space: search-space files and plans (no torch)
    "SearchSpace": "pdsweep.space",
    "TrainingSettings": "pdsweep.space",
    "load_space": "pdsweep.space",
    "Plan": "pdsweep.space",
    "plan": "pdsweep.space",
    # train: one config, no Ray
    "train": "pdsweep.training",
    "TrainResult": "pdsweep.training",
    "load_dataset": "pdsweep.training",
    "build_model": "pdsweep.training",
    "Ensemble": "pdsweep.training",
    "PatchDropout": "pdsweep.training",
    "fvcore_flops": "pdsweep.training",
    # results: the table and the report
    "ResultRow": "pdsweep.results",
    "Report": "pdsweep.results",
    # sweep: Ray Tune and Optuna
    "SweepSettings": "pdsweep.sweep",
    "SweepOutcome": "pdsweep.sweep",
    "run_sweep": "pdsweep.sweep",
    "resume_sweep": "pdsweep.sweep",
}

__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
