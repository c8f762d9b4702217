"""Where a sweep's files live: a local folder, or a URI with a local mirror."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyarrow import fs

from pdsweep.sweep.store import SweepStore


def test_publish_and_fetch_through_a_file_uri(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PDSWEEP_CACHE", str(tmp_path / "cache-a"))
    store = SweepStore(f"file://{tmp_path / 'remote'}", "s")
    assert store.remote and tmp_path / "cache-a" in store.local_dir.parents
    store.local_dir.mkdir(parents=True)
    (store.local_dir / "optuna.journal").write_text("first\n")
    store.publish("optuna.journal", "absent.file")
    (store.local_dir / "optuna.journal").write_text("first\nsecond\n")
    store.publish("optuna.journal")
    published = tmp_path / "remote" / "s"
    # The last version, whole, and nothing from the copy-then-rename left behind.
    assert sorted(p.name for p in published.iterdir()) == ["optuna.journal"]
    assert (published / "optuna.journal").read_text() == "first\nsecond\n"

    monkeypatch.setenv("PDSWEEP_CACHE", str(tmp_path / "cache-b"))  # another machine's empty mirror
    elsewhere = SweepStore(f"file://{tmp_path / 'remote'}", "s")
    elsewhere.fetch("optuna.journal", "absent.file")
    assert (elsewhere.local_dir / "optuna.journal").read_text() == "first\nsecond\n"
    assert not (elsewhere.local_dir / "absent.file").exists()


def test_a_copy_that_breaks_leaves_the_published_file_whole(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PDSWEEP_CACHE", str(tmp_path / "cache"))
    store = SweepStore(f"file://{tmp_path / 'remote'}", "s")
    store.local_dir.mkdir(parents=True)
    (store.local_dir / "results.parquet").write_bytes(b"old table")
    store.publish("results.parquet")
    (store.local_dir / "results.parquet").write_bytes(b"new table, longer")
    copy = fs.copy_files

    def broken_copy(source: str, destination: str, **kwargs) -> None:  # the driver dies halfway
        copy(source, destination, **kwargs)
        Path(destination).write_bytes(Path(destination).read_bytes()[:4])
        raise OSError("connection lost")

    monkeypatch.setattr(fs, "copy_files", broken_copy)
    with pytest.raises(OSError):
        store.publish("results.parquet")
    published = tmp_path / "remote" / "s"
    assert (published / "results.parquet").read_bytes() == b"old table"
    assert [p.name for p in published.iterdir()] == ["results.parquet"]
