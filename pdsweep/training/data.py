"""Datasets: ``synthetic`` (default), ``folder:PATH``, ``npz:PATH``, ``parquet:PATH``.

Whatever the source, images are decoded, made RGB, resized (shorter side to R, then a centre
crop) and stored once per (dataset, resolution) as uint8 ``.npy`` arrays in a cache folder,
then memory-mapped: every trial on the machine shares one copy, and a trial reads only the
batches it uses. The cache folder is ``$PDSWEEP_CACHE`` or ``~/.cache/pdsweep``; an entry is
keyed by the source (its path, size and modification time), the resolution and the split seed,
and is built under a file lock and published by an atomic rename.

Splits: ``train``/``val``/``test`` when the source has them, else a seeded, stratified split
(70/15/15) of what it has.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from pdsweep.errors import PdsweepError
from pdsweep.paths import cache_root

log = logging.getLogger(__name__)

DatasetKind = Literal["synthetic", "folder", "npz", "parquet"]
DATASET_KINDS: tuple[str, ...] = get_args(DatasetKind)
# The ``KIND:PATH?KEY=VALUE&...`` options each kind takes.
DATASET_OPTIONS: dict[str, tuple[str, ...]] = {"parquet": ("image", "label")}
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SYNTHETIC_TRAIN_IMAGES = 4000
_CACHE_VERSION = 1


@dataclass(frozen=True)
class DatasetSpec:
    """``KIND`` or ``KIND:ARG`` as given to ``--dataset``."""

    kind: DatasetKind
    arg: str = ""

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        kind, _, arg = text.partition(":")
        if kind not in DATASET_KINDS:
            raise PdsweepError(
                f"unknown dataset kind {kind!r} in {text!r}; use synthetic, synthetic:N, folder:PATH, "
                "npz:PATH or parquet:PATH."
            )
        if kind == "synthetic":
            if arg and not (arg.isdigit() and int(arg) >= 10):
                raise PdsweepError(f"synthetic:N takes a number of training images >= 10, got {arg!r}.")
        elif not arg:
            raise PdsweepError(f"dataset {kind} needs a path: --dataset {kind}:PATH.")
        spec = cls(kind, arg)  # type: ignore[arg-type]
        unknown = sorted(set(spec.options) - set(DATASET_OPTIONS.get(kind, ())))
        if unknown:
            allowed = ", ".join(DATASET_OPTIONS.get(kind, ())) or "none"
            raise PdsweepError(f"dataset {text!r}: unknown option {', '.join(unknown)}; {kind} takes {allowed} "
                               f"(as {kind}:PATH?OPTION=VALUE&...).")
        return spec

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind

    @property
    def options(self) -> dict[str, str]:
        """``?key=value&key=value`` after the path, as a dict (empty without them)."""
        _, _, query = self.arg.partition("?")
        pairs = [part.partition("=") for part in query.split("&") if part]
        for key, mark, _ in pairs:
            if not mark or not key:
                raise PdsweepError(f"dataset {self}: option {key!r} needs a value, as {self.kind}:PATH?{key or 'KEY'}=VALUE.")
        return {key: value for key, _, value in pairs}

    @property
    def path(self) -> str:
        """The file or folder of a ``folder``, ``npz`` or ``parquet`` dataset (options aside)."""
        return self.arg.partition("?")[0]

    def absolute(self) -> DatasetSpec:
        """The same dataset with its path made absolute (the options kept)."""
        if self.kind == "synthetic":
            return self
        _, mark, options = self.arg.partition("?")
        return DatasetSpec(self.kind, str(Path(self.path).expanduser().resolve()) + mark + options)


@dataclass(frozen=True)
class Split:
    """One split: images (n, R, R, 3) uint8, memory-mapped, and labels (n,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    resolution: int
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    skipped: int = 0  # unreadable images left out

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_dataset(spec: str | DatasetSpec, resolution: int, *, seed: int = 0, cache_dir: Path | None = None) -> Dataset:
    """The dataset ``spec`` at ``resolution`` px, from the cache (built on first use)."""
    spec = DatasetSpec.parse(spec) if isinstance(spec, str) else spec
    if resolution < 1:
        raise PdsweepError(f"`resolution >= 1` must hold, but got {resolution=}.")
    source = _check_source(spec)
    root = cache_dir or cache_root()
    entry = root / "datasets" / f"{spec.kind}-{_slug(source)}-{_fingerprint(spec, source, resolution, seed)}" / f"{resolution}px"
    if not (entry / "meta.json").is_file():
        with _locked(entry.parent / ".lock"):
            if not (entry / "meta.json").is_file():  # another process may have built it meanwhile
                _build(spec, source, resolution, seed, entry)
    return _open(entry, name=str(spec))


# ---- the cache ---------------------------------------------------------------------------


def _check_source(spec: DatasetSpec) -> Path | None:
    if spec.kind == "synthetic":
        return None
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise PdsweepError(f"dataset path {str(path)!r} does not exist; check --dataset {spec}.")
    return path.resolve()


def _slug(source: Path | None) -> str:
    return "".join(c if c.isalnum() else "_" for c in source.name)[:40] if source else "default"


def _fingerprint(spec: DatasetSpec, source: Path | None, resolution: int, seed: int) -> str:
    """Changes when the source's files change (paths, sizes, modification times)."""
    digest = hashlib.sha256(f"{_CACHE_VERSION}|{spec}|{resolution}|{seed}".encode())
    if spec.kind == "synthetic":
        from pdsweep.training import synthetic

        digest.update(f"{synthetic.VERSION}|{spec.arg or SYNTHETIC_TRAIN_IMAGES}".encode())
    if source is not None:
        files = sorted(source.rglob("*")) if source.is_dir() else [source]
        for file in files:
            stat = file.stat()
            digest.update(f"{file.relative_to(source.parent)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(spec: DatasetSpec, source: Path | None, resolution: int, seed: int, entry: Path) -> None:
    """Decode and resize every image, then publish ``entry`` atomically."""
    from pdsweep.training import sources

    if spec.kind == "synthetic":
        splits, class_names, skipped = sources.synthetic(spec.arg, resolution, seed)
    elif spec.kind == "folder":
        splits, class_names, skipped = sources.folder(source, resolution, seed)  # type: ignore[arg-type]
    elif spec.kind == "npz":
        splits, class_names, skipped = sources.npz(source, resolution)  # type: ignore[arg-type]
    else:
        splits, class_names, skipped = sources.parquet(spec.options, source, resolution, seed)  # type: ignore[arg-type]
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=entry.parent))
    try:
        for name, (images, labels) in splits.items():
            np.save(staging / f"{name}_images.npy", images)
            np.save(staging / f"{name}_labels.npy", labels.astype(np.int64))
        meta = {"class_names": list(class_names), "skipped": skipped, "source": str(spec)}
        (staging / "meta.json").write_text(json.dumps(meta))
        staging.rename(entry)  # under the lock, and only when no entry exists
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _open(entry: Path, *, name: str) -> Dataset:
    meta = json.loads((entry / "meta.json").read_text())
    splits = {
        split: Split(
            images=np.load(entry / f"{split}_images.npy", mmap_mode="r"),
            labels=np.load(entry / f"{split}_labels.npy"),
        )
        for split in SPLITS
    }
    return Dataset(
        name=name,
        resolution=int(splits["train"].images.shape[1]),
        class_names=tuple(meta["class_names"]),
        skipped=int(meta["skipped"]),
        **splits,
    )
