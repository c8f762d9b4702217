"""A sweep on Ray Tune: Ray and Optuna live in this subpackage only.

``sampler`` (budget-aware suggestions), ``searcher`` (what to try next), ``schedulers`` (when
to stop), ``trainable`` (a trial on a worker), ``callback`` (the driver's rows, MLflow and
progress lines), ``cluster`` (Ray, probing, resources), ``tuners`` and ``run`` (run and
resume), ``settings`` and ``spec`` (what crosses into Tune and into ``sweep.json``), ``store``
(where a sweep lives), ``submit`` (Ray Jobs). Importing the package loads neither Ray nor
Optuna: its names load their modules on first use.
"""

from pdsweep._lazy import lazy_exports

_EXPORTS = {
    "run_sweep": "pdsweep.sweep.run",
    "check_sweep": "pdsweep.sweep.run",
    "resume_sweep": "pdsweep.sweep.run",
    "SweepOutcome": "pdsweep.sweep.run",
    "SweepSettings": "pdsweep.sweep.settings",
    "SweepState": "pdsweep.sweep.settings",
    "DataProbe": "pdsweep.sweep.settings",
    "default_name": "pdsweep.sweep.settings",
    "TrialSpec": "pdsweep.sweep.spec",
    "TrialContext": "pdsweep.sweep.spec",
    "load_sweep": "pdsweep.sweep.files",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
