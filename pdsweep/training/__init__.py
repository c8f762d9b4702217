"""Training one config: PatchDropout, timm models, datasets, augmentation, the loop, checkpoints.

Imports no Ray, Optuna or MLflow. Torch loads when a name that needs it is first used, so
``pdsweep.training.metrics`` and ``pdsweep.training.data`` stay cheap for the driver and the report.
"""

from pdsweep._lazy import lazy_exports

_EXPORTS = {
    "train": "pdsweep.training.loop",
    "train_step": "pdsweep.training.loop",
    "evaluate": "pdsweep.training.loop",
    "fit_to_device": "pdsweep.training.loop",
    "TrainResult": "pdsweep.training.metrics",
    "EpochMetrics": "pdsweep.training.metrics",
    "ROBUSTNESS_KEEP_RATES": "pdsweep.training.metrics",
    "Dataset": "pdsweep.training.data",
    "DatasetSpec": "pdsweep.training.data",
    "load_dataset": "pdsweep.training.data",
    "build_model": "pdsweep.training.models",
    "build_member": "pdsweep.training.models",
    "Ensemble": "pdsweep.training.models",
    "PatchDropout": "pdsweep.training.patch_dropout",
    "fvcore_flops": "pdsweep.training.verify",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
