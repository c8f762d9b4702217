"""What a sweep produced: the results table, MLflow tracking, the report and the UI.

Imports no Ray, Optuna or torch; the report and the UI read ``results.parquet`` and the
tracking store only. Names load their modules (pyarrow, matplotlib, MLflow) on first use.
"""

from pdsweep._lazy import lazy_exports

TOP_K = 3  # configs per tier the report ranks with their intervals, and --repeats re-trains (``--top-k``)

_EXPORTS = {
    "ResultRow": "pdsweep.results.rows",
    "RobustnessPoint": "pdsweep.results.rows",
    "EpochPoint": "pdsweep.results.rows",
    "SCHEMA": "pdsweep.results.rows",
    "read_rows": "pdsweep.results.rows",
    "Report": "pdsweep.results.report",
    "TierReport": "pdsweep.results.report",
    "Score": "pdsweep.results.report",
    "TrackingIds": "pdsweep.results.tracking",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
