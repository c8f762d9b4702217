"""Where pdsweep keeps things by default: the runs dir and the cache. Defined once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

DEFAULT_RUNS_DIR = "pdsweep-runs"  # relative to where the command runs, as MLflow's ./mlruns was


def cache_root() -> Path:
    """Dataset cache and mirrors of remote sweeps: ``$PDSWEEP_CACHE`` or ``~/.cache/pdsweep``."""
    return Path(os.environ.get("PDSWEEP_CACHE") or Path.home() / ".cache" / "pdsweep")


def is_uri(runs_dir: str) -> bool:
    """A runs dir given as a storage URI (s3://, gs://, file://) rather than a local folder."""
    return "://" in runs_dir


def local_root(runs_dir: str) -> Path:
    """The local folder of a runs dir: the folder itself, or the driver's mirror of a URI."""
    if not is_uri(runs_dir):
        return Path(runs_dir).expanduser().resolve()
    return cache_root() / "sweeps" / hashlib.sha256(runs_dir.encode()).hexdigest()[:12]


# The driver's files in a sweep folder, RUNS_DIR/NAME/.
SWEEP_FILE = "sweep.json"  # settings and the space, for resume
RESULTS_FILE = "results.parquet"  # one row per trial
STUDY_FILE = "optuna.journal"  # the Optuna studies, one per budget tier
STARTS_FILE = "starts.log"  # one line per trial start
MLFLOW_FILE = "mlflow.db"  # the default SQLite tracking store: RUNS_DIR/mlflow.db (a URI's sweep: in its folder)
