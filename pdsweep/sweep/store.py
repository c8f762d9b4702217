"""Where a sweep lives: a local folder, or a URI that Ray's storage accepts (s3://, gs://, file://).

Ray Tune writes its experiments (``search/``, ``repeats/``) straight to the sweep's storage
path. The driver keeps its own files (``sweep.json``, ``results.parquet``, ``optuna.journal``,
``starts.log``) in a local folder (the sweep folder itself when ``--runs-dir`` is local, else a
mirror in the cache) and publishes them to the remote sweep folder after every change, so a
sweep on shared storage can be read, reported on and resumed from any machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pdsweep.errors import PdsweepError
from pdsweep.paths import MLFLOW_FILE, RESULTS_FILE, STARTS_FILE, STUDY_FILE, SWEEP_FILE, is_uri, local_root

__all__ = ["MLFLOW_FILE", "RESULTS_FILE", "RESUME_FILES", "STARTS_FILE", "STUDY_FILE", "SWEEP_FILE", "SweepStore", "relocate", "relocated", "retried"]

RESUME_FILES = (SWEEP_FILE, RESULTS_FILE, STUDY_FILE, MLFLOW_FILE)  # what a resume fetches from a remote runs dir


def retried(action: Callable[[], None], attempts: int = 4, first_wait_s: float = 0.5) -> OSError | None:
    """Run ``action``, retrying an ``OSError`` (a full disk, a storage blip: pyarrow's errors
    are ``OSError`` too) with backoff; returns the last error if every attempt failed."""
    last: OSError | None = None
    for attempt in range(attempts):
        try:
            action()
            return None
        except OSError as error:
            last = error
            if attempt + 1 < attempts:
                time.sleep(first_wait_s * 2**attempt)
    return last


# A resumed sweep may live elsewhere than when Ray pickled its searcher and callback (a moved
# folder, another machine's mirror of a URI). `pdsweep resume` records where it is now, and
# those objects look themselves up here when they are unpickled.
_RELOCATED: dict[str, SweepStore] = {}
_FILESYSTEMS: dict[str, tuple[object, str]] = {}  # runs dir -> (pyarrow filesystem, root)


def relocate(store: SweepStore) -> None:
    _RELOCATED[store.name] = store


def relocated(store: SweepStore) -> SweepStore:
    return _RELOCATED.get(store.name, store)


def relocated_name(name: str) -> SweepStore | None:
    """Where ``pdsweep resume`` found sweep ``name`` in this process, if it did."""
    return _RELOCATED.get(name)


def resuming() -> SweepStore | None:
    """The sweep this process resumed last (one driver runs one sweep at a time), if any."""
    return next(reversed(_RELOCATED.values()), None)


@dataclass(frozen=True)
class SweepStore:
    runs_dir: str  # a local folder (made absolute by SweepSettings) or a URI
    name: str

    @property
    def remote(self) -> bool:
        return is_uri(self.runs_dir)

    @property
    def local_dir(self) -> Path:
        """Where the driver reads and writes its own files."""
        return local_root(self.runs_dir) / self.name

    @property
    def starts_log(self) -> str | None:
        """Where trials log their starts: the sweep folder when it is local (workers can write it)."""
        return None if self.remote else str(self.local_dir / STARTS_FILE)

    @property
    def storage_path(self) -> str:
        """The sweep folder as Ray Tune's ``storage_path`` (a path or a URI)."""
        return f"{self.runs_dir.rstrip('/')}/{self.name}" if self.remote else str(self.local_dir)

    @property
    def tracking_root(self) -> Path:
        """Where the default tracking store lives: ``RUNS_DIR`` (``mlflow.db``, ``mlartifacts/``),
        shared by the sweeps of a local runs dir; for a sweep at a storage URI, the sweep's own
        folder, whose ``mlflow.db`` is published with its results, so that another machine that
        resumes the sweep has its runs."""
        return self.local_dir if self.remote else self.local_dir.parent

    @property
    def tracking_uri(self) -> str:
        """The default SQLite tracking store, found from where the sweep is now."""
        return f"sqlite:///{self.tracking_root / MLFLOW_FILE}"

    def experiment(self, name: str) -> str:
        return f"{self.storage_path}/{name}"

    def where(self, file: str) -> str:
        return f"{self.storage_path}/{file}"

    def _fs(self):  # -> (pyarrow FileSystem, path of the runs dir inside it)
        """The runs dir's filesystem, opened once per process (for s3, opening it asks the
        network for the bucket's region). A storage error (``OSError``) is raised as it is, for
        the caller's retries; a URI pyarrow cannot use is a one-line error."""
        from pyarrow import fs

        if self.runs_dir not in _FILESYSTEMS:
            try:
                _FILESYSTEMS[self.runs_dir] = fs.FileSystem.from_uri(self.runs_dir)
            except OSError:
                raise
            except Exception as error:  # pyarrow raises several types for bad URIs and credentials
                raise PdsweepError(f"cannot open --runs-dir {self.runs_dir!r} ({error}); give a local folder or a URI "
                                   "that pyarrow and Ray can write (s3://, gs://, file://).") from None
        return _FILESYSTEMS[self.runs_dir]

    def exists(self) -> bool:
        if not self.remote:
            return self.local_dir.exists()
        from pyarrow import fs

        filesystem, root = self._fs()
        return filesystem.get_file_info(f"{root.rstrip('/')}/{self.name}").type != fs.FileType.NotFound

    def check(self) -> None:
        """Fail now, clearly, if the runs dir cannot be reached (a URI) ."""
        if self.remote:
            try:
                filesystem, root = self._fs()
                filesystem.create_dir(root, recursive=True)
            except PdsweepError:
                raise
            except Exception as error:  # permission, network, missing bucket
                raise PdsweepError(f"cannot write to --runs-dir {self.runs_dir!r} ({error}).") from None

    def publish(self, *files: str) -> None:
        """Copy the driver's files to the remote sweep folder (nothing to do when local)."""
        if not self.remote:
            return
        from pyarrow import fs

        filesystem, root = self._fs()
        target = f"{root.rstrip('/')}/{self.name}"
        for file in files:
            if (self.local_dir / file).is_file():
                filesystem.create_dir(f"{target}/{Path(file).parent}".rstrip("/."), recursive=True)
                final = f"{target}/{file}"
                if filesystem.type_name == "local":  # a shared folder: copy aside, then rename, so a
                    # driver killed mid-copy leaves the previous file whole, never a truncated one
                    folder, _, name = final.rpartition("/")
                    partial = f"{folder}/.{name}.partial-{os.getpid()}"
                    try:
                        fs.copy_files(str(self.local_dir / file), partial, destination_filesystem=filesystem)
                        filesystem.move(partial, final)
                    finally:
                        if filesystem.get_file_info(partial).type != fs.FileType.NotFound:
                            filesystem.delete_file(partial)
                else:  # an object store writes an object whole or not at all
                    fs.copy_files(str(self.local_dir / file), final, destination_filesystem=filesystem)

    def fetch(self, *files: str) -> None:
        """Copy the remote sweep's files into the local mirror (before a resume or a report)."""
        if not self.remote:
            return
        from pyarrow import fs

        filesystem, root = self._fs()
        self.local_dir.mkdir(parents=True, exist_ok=True)
        for file in files:
            source = filesystem.get_file_info(f"{root.rstrip('/')}/{self.name}/{file}")
            local = self.local_dir / file
            if source.type != fs.FileType.File:
                continue
            if local.is_file() and source.mtime_ns is not None and local.stat().st_mtime_ns > source.mtime_ns:
                continue  # this machine's copy is newer (a write not yet published, or a driver running here)
            fs.copy_files(source.path, str(local), source_filesystem=filesystem)

    def require(self, shown: str | None = None) -> Path:
        """The local ``sweep.json`` of this sweep; an error listing the known sweeps if it has none
        (naming the runs dir as ``shown``, the way the user gave it, if given)."""
        path = self.local_dir / SWEEP_FILE
        if not path.is_file():
            where = shown or self.runs_dir
            known = self.known(SWEEP_FILE)
            listing = f"known sweeps: {', '.join(known)}" if known else f"no sweeps in {where}"
            raise PdsweepError(f"no sweep named {self.name!r} in {where}; {listing}.")
        return path

    def known(self, marker: str) -> list[str]:
        """Names of the sweeps in the runs dir (folders holding ``marker``)."""
        if not self.remote:
            root = Path(self.runs_dir).expanduser().resolve()
            return sorted(p.parent.name for p in root.glob(f"*/{marker}")) if root.is_dir() else []
        from pyarrow import fs

        filesystem, root = self._fs()
        try:
            entries = filesystem.get_file_info(fs.FileSelector(root, allow_not_found=True))
        except Exception:  # an unreadable listing is no sweeps
            return []
        return sorted(
            info.base_name for info in entries
            if info.type == fs.FileType.Directory
            and filesystem.get_file_info(f"{info.path}/{marker}").type == fs.FileType.File
        )
