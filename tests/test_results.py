from __future__ import annotations

from pathlib import Path

import pytest

from pdsweep.results import rows as results
from pdsweep.results.rows import ResultRow
from pdsweep.errors import PdsweepError


def values(**overrides) -> dict:
    """A row's columns, as a table holds them."""
    base = {name: None for name in results.SCHEMA.names}
    base.update(
        sweep="s", trial_id="t1", phase="search", budget_gflops=1.3, seed=0, status="completed", model="vit_micro",
        resolution=32, patch_size=8, depth=2, ensemble_size=1, keep_rate=0.5, sampling="random", keep_mode="fixed", init="random",
        tokens_kept=9, num_classes=4, train_gflops=0.01, inference_gflops=0.02, predicted_memory_gb=0.1,
        epochs_run=2, epochs_planned=2, wall_seconds=3.0,
        robustness=[{"keep_rate": 1.0, "accuracy": 0.5}],
        history=[{"epoch": 1, "train_loss": 1.2, "val_accuracy": 0.4}],
    )
    base.update(overrides)
    return base


def row(**overrides) -> ResultRow:
    return ResultRow.from_dict(values(**overrides))


def test_round_trip_keeps_the_schema(tmp_path: Path) -> None:
    path = tmp_path / results.RESULTS_FILE
    results.write([row(), row(trial_id="t2", status="stopped", test_accuracy=None)], path)
    table = results.read(path)
    assert table.schema.equals(results.SCHEMA) and table.num_rows == 2
    [first, _] = results.read_rows(path)
    assert first.robustness == (results.RobustnessPoint(keep_rate=1.0, accuracy=0.5),)
    assert first.history == (results.EpochPoint(epoch=1, train_loss=1.2, val_accuracy=0.4),)
    assert first == row()  # every column survives the round trip
    assert not list(tmp_path.glob(".*partial"))


def test_rows_must_match_the_schema(tmp_path: Path) -> None:
    bad = values()
    del bad["seed"]
    with pytest.raises(ValueError, match=r"missing \['seed'\]"):
        ResultRow.from_dict(bad)
    with pytest.raises(ValueError, match=r"extra \['colour'\]"):
        ResultRow.from_dict(values(colour="red"))


def test_unreadable_or_foreign_files_are_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(PdsweepError, match=r"not a readable Parquet file"):
        results.read(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "other.parquet")
    with pytest.raises(PdsweepError, match=r"does not have pdsweep's results schema"):
        results.read(tmp_path / "other.parquet")
    assert results.read_rows(tmp_path / "missing.parquet") == []


def test_a_table_from_before_the_clock_columns_reads_with_them_empty(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / results.RESULTS_FILE
    results.write([row(trial_id="old")], path)
    pq.write_table(pq.read_table(path).drop_columns(["started_at", "ended_at"]), path)  # an older pdsweep's table
    [read] = results.read_rows(path)
    assert read.trial_id == "old" and read.started_at is None and read.ended_at is None
    pq.write_table(pq.read_table(path).drop_columns(["seed"]), path)  # a required column is never invented
    with pytest.raises(PdsweepError, match=r"does not have pdsweep's results schema"):
        results.read(path)


def test_a_table_from_a_newer_pdsweep_is_refused(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / results.RESULTS_FILE
    results.write([row()], path)
    assert pq.read_schema(path).metadata[b"pdsweep.schema_version"] == str(results.SCHEMA_VERSION).encode()
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"pdsweep.schema_version": b"99"}), path)
    with pytest.raises(PdsweepError, match=rf"results schema version '99', newer than this pdsweep reads \({results.SCHEMA_VERSION}\)"):
        results.read(path)


def test_a_row_table_writes_what_a_full_rewrite_would(tmp_path: Path) -> None:
    """The driver's table converts each row once and appends; what it writes is the table of
    every row in first-seen order, a replaced row in its place (bench/scale.py times it)."""
    table = results.RowTable([row(trial_id="a"), row(trial_id="b")])
    for i in range(150):  # past the chunk limit, so the chunks are combined on the way
        table.put(row(trial_id=f"t{i}", best_val_accuracy=i / 150))
        table.table()  # as the driver does after each trial: one chunk per row until they are combined
        if i % 37 == 0:
            results.write(table, tmp_path / "r.parquet")
            assert results.read_rows(tmp_path / "r.parquet") == list(table.rows.values())
    table.put(row(trial_id="b", status="interrupted"))
    table.put(row(trial_id="t200"))
    results.write(table, tmp_path / "r.parquet")
    expected = [row(trial_id="a"), row(trial_id="b", status="interrupted"),
                *(row(trial_id=f"t{i}", best_val_accuracy=i / 150) for i in range(150)), row(trial_id="t200")]
    assert results.read_rows(tmp_path / "r.parquet") == expected
    results.write(expected, tmp_path / "full.parquet")
    assert (results.read(tmp_path / "r.parquet").equals(results.read(tmp_path / "full.parquet")))
    assert table.table().column(0).num_chunks <= 65
