"""One row per trial, one pyarrow Table with a fixed schema, one ``results.parquet`` per sweep.

The sweep's driver appends a row as each trial ends and rewrites the file atomically, so the
table on disk is complete up to the last finished trial, even if the driver dies. Readers
(``pdsweep report``, MLflow back-fill, a notebook) read this file, never Ray's internals.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pdsweep.errors import PdsweepError

RESULTS_FILE = "results.parquet"
ROBUSTNESS_KEEP_RATES = (1.0, 0.75, 0.5, 0.25)  # the test-time keep rates of the robustness curve

SCHEMA = pa.schema(
    [
        pa.field("sweep", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("phase", pa.string(), nullable=False),  # search | repeat
        pa.field("budget_gflops", pa.float64(), nullable=False),  # the budget tier
        pa.field("budget_memory_gb", pa.float64()),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # completed | stopped | error
        pa.field("model", pa.string(), nullable=False),
        pa.field("resolution", pa.int64(), nullable=False),
        pa.field("patch_size", pa.int64(), nullable=False),
        pa.field("depth", pa.int64(), nullable=False),
        pa.field("ensemble_size", pa.int64(), nullable=False),
        pa.field("keep_rate", pa.float64(), nullable=False),
        pa.field("keep_range_low", pa.float64()),
        pa.field("sampling", pa.string(), nullable=False),
        pa.field("keep_mode", pa.string(), nullable=False),
        pa.field("tokens_kept", pa.int64(), nullable=False),
        pa.field("num_classes", pa.int64(), nullable=False),
        pa.field("train_gflops", pa.float64(), nullable=False),
        pa.field("inference_gflops", pa.float64(), nullable=False),
        pa.field("predicted_memory_gb", pa.float64(), nullable=False),
        pa.field("measured_memory_gb", pa.float64()),  # CUDA peak; null on CPUs
        pa.field("best_val_accuracy", pa.float64()),
        pa.field("final_val_accuracy", pa.float64()),
        pa.field("val_auc", pa.float64()),
        pa.field("test_accuracy", pa.float64()),  # only trials that ran every epoch
        pa.field("test_auc", pa.float64()),
        pa.field(
            "robustness",
            pa.list_(pa.struct([pa.field("keep_rate", pa.float64()), pa.field("accuracy", pa.float64())])),
        ),
        pa.field(
            "history",  # every epoch the driver saw
            pa.list_(pa.struct([pa.field("epoch", pa.int64()), pa.field("train_loss", pa.float64()),
                                pa.field("val_accuracy", pa.float64())])),
        ),
        pa.field("epochs_run", pa.int64(), nullable=False),
        pa.field("epochs_planned", pa.int64(), nullable=False),
        pa.field("wall_seconds", pa.float64(), nullable=False),
        pa.field("train_seconds", pa.float64()),  # the trial's own training time
        pa.field("started_at", pa.timestamp("ms", tz="UTC")),  # when the trial's (last) run began on its worker
        pa.field("ended_at", pa.timestamp("ms", tz="UTC")),  # when it last reported
        pa.field("node_id", pa.string()),
        pa.field("error", pa.string()),
    ]
)


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts keyed by the schema's names) -> a Table; a missing or extra key is an error."""
    rows = list(rows)
    names = set(SCHEMA.names)
    for row in rows:
        if set(row) != names:
            missing, extra = sorted(names - set(row)), sorted(set(row) - names)
            raise ValueError(f"a results row must have exactly the schema's keys; missing {missing}, extra {extra}.")
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write(rows: Iterable[Mapping[str, Any]], path: Path) -> None:
    """Write the table atomically: a reader never sees a half-written file."""
    table = to_table(rows)
    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(table, partial)
    os.replace(partial, path)


def read(path: Path) -> pa.Table:
    """The results table of a sweep, checked against the schema."""
    if not path.is_file():
        raise PdsweepError(f"no results table at {str(path)!r}.")
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise PdsweepError(f"{path} is not a readable Parquet file ({error}); was it written by pdsweep?") from None
    added = [f for f in SCHEMA if f.name not in table.schema.names]
    if added and all(f.nullable for f in added):  # written before these columns existed: they read as empty
        for field in added:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        table = table.select(SCHEMA.names)
    if not table.schema.equals(SCHEMA, check_metadata=False):
        raise PdsweepError(f"{path} does not have pdsweep's results schema; was it written by another version?")
    return table


def read_rows(path: Path) -> list[dict[str, Any]]:
    return read(path).to_pylist() if path.is_file() else []
