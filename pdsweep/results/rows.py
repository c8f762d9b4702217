"""One row per trial: :class:`ResultRow`, its fixed pyarrow schema, one ``results.parquet`` per sweep.

The schema is derived, not written out: the config columns from :class:`pdsweep.config.Config`'s
axis declaration, the rest from :class:`ResultRow`'s fields, so a new axis or column is one edit.
The sweep's driver appends a row as each trial ends and rewrites the file atomically, so the
table on disk is complete up to the last finished trial, even if the driver dies. Readers
(``pdsweep report``, MLflow back-fill, a notebook) read this file, never Ray's internals.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from pdsweep.config import LEGACY_AXIS_VALUES, Config
from pdsweep.config import columns as config_columns
from pdsweep.errors import PdsweepError
from pdsweep.paths import RESULTS_FILE

__all__ = [
    "FAILED", "FINISHED", "RESULTS_FILE", "SCHEMA", "ClassRecall", "EpochPoint", "MetricInterval", "ResultRow", "SplitCount", "RobustnessPoint", "RowTable", "read", "read_rows", "to_table", "write",
]

SCHEMA_VERSION = 7  # 1: tables written before the version was recorded; 2: before the compute ledger columns; 3: before init; 4: before attention;
# 5: before every metric (history's structs lack val_auc, val_balanced_accuracy, val_macro_f1, val_loss);
# 6: before the step's arrangement (micro_batch_size, member_turns)
_VERSION_KEY = b"pdsweep.schema_version"

Phase = Literal["search", "repeat"]
# completed: every epoch ran; stopped: early stopping ended it; oom: an allocation failed;
# diverged: the loss went non-finite; error: the trial's code or data raised, or its worker was
# lost once too often; interrupted: running when the driver stopped (``resume`` continues it).
TrialStatus = Literal["completed", "stopped", "oom", "diverged", "error", "interrupted"]
DeviceKind = Literal["cpu", "gpu"]
FINISHED = ("completed", "stopped")  # the statuses that can be a tier's best
FAILED = ("oom", "diverged", "error")  # ended for good, without a comparable accuracy


@dataclass(frozen=True)
class RobustnessPoint:
    keep_rate: float  # kept at test time
    accuracy: float


@dataclass(frozen=True)
class EpochPoint:
    epoch: int
    train_loss: float | None
    val_accuracy: float | None
    # The other metrics (pdsweep.objective); empty in tables written before them.
    val_auc: float | None = None
    val_balanced_accuracy: float | None = None
    val_macro_f1: float | None = None
    val_loss: float | None = None

    def val(self, metric: str) -> float | None:
        return getattr(self, f"val_{metric}")


@dataclass(frozen=True)
class MetricInterval:
    """A bootstrap 95% interval of a test metric, over the test images (or groups)."""

    metric: str
    low: float
    high: float


@dataclass(frozen=True)
class ClassRecall:
    """One class's recall on the test split."""

    name: str
    recall: float | None  # None: no test image of the class


@dataclass(frozen=True)
class SplitCount:
    """How many images (and groups, for a grouped dataset) a split has."""

    split: str
    images: int
    groups: int | None


@dataclass(frozen=True)
class ResultRow:
    """One trial of a sweep, as ``results.parquet`` holds it (its config spread into columns)."""

    sweep: str
    trial_id: str
    phase: Phase
    budget_gflops: float  # the budget tier
    budget_memory_gb: float | None
    seed: int
    status: TrialStatus
    config: Config  # depth explicit
    train_gflops: float
    inference_gflops: float
    predicted_memory_gb: float
    measured_memory_gb: float | None  # CUDA peak; null on CPUs
    best_val_accuracy: float | None
    final_val_accuracy: float | None
    val_auc: float | None
    test_accuracy: float | None  # only trials that ran every epoch
    test_auc: float | None
    robustness: tuple[RobustnessPoint, ...] | None
    history: tuple[EpochPoint, ...] | None  # every epoch the driver saw
    epochs_run: int
    epochs_planned: int
    wall_seconds: float
    train_seconds: float | None  # the trial's own training time
    started_at: datetime | None  # when the trial's (last) run began on its worker
    ended_at: datetime | None  # when it last reported
    node_id: str | None
    error: str | None
    # The compute ledger (pdsweep.results.compute); empty in tables written before it.
    train_images: int | None = None  # the training split the epochs ran over
    device_kind: DeviceKind | None = None  # what the trial held: GPUs (a share) or else CPUs
    devices: float | None = None  # how many of them
    spent_tflop: float | None = None  # train GFLOPs x 3 x train images x epochs run, in TFLOP
    device_seconds: float | None = None  # wall_seconds x devices
    # A pretrained start (config.init == "pretrained"); empty for a random one.
    weights_source: str | None = None  # the hub name or file, as the space names it
    weights_sha256: str | None = None  # of the file the trial loaded
    pretrained_blocks: int | None = None  # blocks that started from the weights (the rest: random)
    # The attention kernel: as set (training.attention) and the one that ran (an SDPA backend, or
    # eager); empty in tables written before them.
    attention: str | None = None
    attention_backend: str | None = None
    # Every metric (pdsweep.objective) besides accuracy and AUC above, the objective the search
    # ran under, and what the scores are over; empty in tables written before them.
    metric: str | None = None  # training.metric of the sweep; None: accuracy (before it could be chosen)
    scored_by: str | None = None  # image, or mean (each group by the mean of its images' probabilities)
    best_val_auc: float | None = None
    best_val_balanced_accuracy: float | None = None
    best_val_macro_f1: float | None = None
    best_val_loss: float | None = None  # the lowest
    test_balanced_accuracy: float | None = None
    test_macro_f1: float | None = None
    test_loss: float | None = None
    test_intervals: tuple[MetricInterval, ...] | None = None
    class_recall: tuple[ClassRecall, ...] | None = None  # on the test split
    split_counts: tuple[SplitCount, ...] | None = None
    # How the step was arranged on the device (pdsweep.cost.arrange), which changes no result;
    # empty in tables written before it.
    micro_batch_size: int | None = None  # the images of each forward and backward (the batch: none cut)
    member_turns: bool | None = None  # an ensemble's members trained one at a time

    def best_val(self, metric: str) -> float | None:
        """The trial's best epoch's validation ``metric`` (``accuracy``, ``auc``, ``loss``, ...)."""
        return getattr(self, f"best_val_{metric}")

    def test(self, metric: str) -> float | None:
        return getattr(self, f"test_{metric}")

    def interval(self, metric: str) -> tuple[float, float] | None:
        """The bootstrap 95% interval of the test ``metric``, if the trial recorded one."""
        for point in self.test_intervals or ():
            if point.metric == metric:
                return point.low, point.high
        return None

    @property
    def finished(self) -> bool:
        """Whether the row can rank: it trained (to the end, or until early stopping)."""
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """The row as the table's columns (the config spread out)."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "config":
                values.update(value.columns())
            elif isinstance(value, tuple):
                values[f.name] = [dataclasses.asdict(point) for point in value]
            else:
                values[f.name] = value
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ResultRow:
        """A row from the table's columns; a missing or extra column is an error."""
        names = set(SCHEMA.names)
        if set(values) != names:
            missing, extra = sorted(names - set(values)), sorted(set(values) - names)
            raise ValueError(f"a results row must have exactly the schema's keys; missing {missing}, extra {extra}.")
        hints = typing.get_type_hints(cls)
        kept: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "config":
                kept["config"] = Config.from_columns(values)
                continue
            value = values[f.name]
            point = _point_type(hints[f.name])
            kept[f.name] = tuple(point(**p) for p in value) if point and value is not None else value
        return cls(**kept)


def _point_type(hint: Any) -> type | None:
    """``RobustnessPoint`` for ``tuple[RobustnessPoint, ...] | None``; None for a plain column."""
    for arg in (hint, *typing.get_args(hint)):
        if typing.get_origin(arg) is tuple:
            return typing.get_args(arg)[0]
    return None


def _arrow(hint: Any) -> tuple[pa.DataType, bool]:
    """The Arrow type of a field's annotation, and whether it may be null."""
    args = typing.get_args(hint)
    nullable = (typing.get_origin(hint) in (typing.Union, types.UnionType)) and type(None) in args
    if nullable:
        hint = next(a for a in args if a is not type(None))
    point = _point_type(hint)
    if point is not None:
        point_hints = typing.get_type_hints(point)
        struct = pa.struct([pa.field(f.name, _arrow(point_hints[f.name])[0]) for f in fields(point)])
        return pa.list_(struct), nullable
    if typing.get_origin(hint) is Literal:
        return pa.string(), nullable
    return _SCALARS[hint], nullable


_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), datetime: pa.timestamp("ms", tz="UTC"),
}


def _schema() -> pa.Schema:
    hints = typing.get_type_hints(ResultRow)
    columns = []
    for f in fields(ResultRow):
        if f.name == "config":
            columns += [pa.field(info.name, _SCALARS[info.kind], nullable=info.nullable) for info in config_columns()]
        else:
            kind, nullable = _arrow(hints[f.name])
            columns.append(pa.field(f.name, kind, nullable=nullable))
    return pa.schema(columns, metadata={_VERSION_KEY: str(SCHEMA_VERSION).encode()})


SCHEMA = _schema()


def to_table(rows: Iterable[ResultRow]) -> pa.Table:
    return pa.Table.from_pylist([row.to_dict() for row in rows], schema=SCHEMA)


class RowTable:
    """A sweep's rows by trial id, in the order they first came, with their Arrow table.

    The driver rewrites ``results.parquet`` after every trial. Converting every row again each
    time made the 10,000th write 70 times the cost of the 100th (``bench/scale.py``); here each
    row is converted once, and a new row is appended to the table. A row that replaces one
    (an interrupted trial finished by ``resume``) rebuilds the table, in place order.
    """

    def __init__(self, rows: Iterable[ResultRow] = ()) -> None:
        self.rows: dict[str, ResultRow] = {row.trial_id: row for row in rows}
        self._table = to_table(self.rows.values())
        self._new: list[dict[str, Any]] = []

    def put(self, row: ResultRow) -> None:
        replaced = row.trial_id in self.rows
        self.rows[row.trial_id] = row
        if replaced:
            self._table, self._new = to_table(self.rows.values()), []
        else:
            self._new.append(row.to_dict())

    def table(self) -> pa.Table:
        if self._new:
            self._table = pa.concat_tables([self._table, pa.Table.from_pylist(self._new, schema=SCHEMA)])
            self._new = []
            if self._table.column(0).num_chunks > 64:  # many one-row chunks slow the writer down
                self._table = self._table.combine_chunks()
        return self._table


def write(rows: Iterable[ResultRow] | RowTable, path: Path) -> None:
    """Write the table atomically: a reader never sees a half-written file, and a write that
    fails (a full disk) leaves the previous table and no partial file."""
    table = rows.table() if isinstance(rows, RowTable) else to_table(rows)
    partial = path.with_name(f".{path.name}.partial")
    try:
        pq.write_table(table, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def read(path: Path | str) -> pa.Table:
    """The results table of a sweep, checked against the schema (columns matched by name).

    A table from an older pdsweep that lacks a column added since, one that may be empty,
    reads with that column empty; a required column is never invented.
    """
    path = Path(path)
    if not path.is_file():
        raise PdsweepError(f"no results table at {str(path)!r}.")
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise PdsweepError(f"{path} is not a readable Parquet file ({error}); was it written by pdsweep?") from None
    version = (table.schema.metadata or {}).get(_VERSION_KEY, b"1")
    if not version.isdigit() or int(version) > SCHEMA_VERSION:
        raise PdsweepError(f"{path} has results schema version {version.decode(errors='replace')!r}, newer than this "
                           f"pdsweep reads ({SCHEMA_VERSION}); upgrade pdsweep to read it.")
    for field in SCHEMA:
        if field.name not in table.schema.names and field.nullable:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        elif field.name not in table.schema.names and field.name in LEGACY_AXIS_VALUES:  # an axis added since
            table = table.append_column(field, pa.array([LEGACY_AXIS_VALUES[field.name]] * table.num_rows, field.type))
    table = _widen_history(table)
    foreign = PdsweepError(f"{path} does not have pdsweep's results schema; was it written by another version?")
    if set(table.schema.names) != set(SCHEMA.names):
        raise foreign
    table = table.select(SCHEMA.names)
    if not table.schema.equals(SCHEMA, check_metadata=False):
        raise foreign
    return table.replace_schema_metadata(SCHEMA.metadata)


def _widen_history(table: pa.Table) -> pa.Table:
    """An older table's ``history``, its epochs given the metric fields added since (empty)."""
    if "history" not in table.schema.names:
        return table
    wanted = SCHEMA.field("history").type
    column = table.column("history")
    if column.type == wanted or not pa.types.is_list(column.type) or not pa.types.is_struct(column.type.value_type):
        return table
    names = {f.name for f in column.type.value_type}
    if not names <= {f.name for f in wanted.value_type}:
        return table  # not ours: the schema check names it
    widened = pa.array([None if epochs is None else [{f.name: e.get(f.name) for f in wanted.value_type} for e in epochs]
                        for epochs in column.to_pylist()], type=wanted)
    return table.set_column(table.schema.get_field_index("history"), pa.field("history", wanted, nullable=True), widened)


def read_rows(path: Path | str) -> list[ResultRow]:
    """Every row of ``path``; none when there is no table yet."""
    return [ResultRow.from_dict(values) for values in read(path).to_pylist()] if Path(path).is_file() else []
