"""Datasets: ``synthetic`` (default), ``folder:PATH``, ``npz:PATH``, ``parquet:PATH``, ``csv:PATH``
(a manifest of image files: :mod:`pdsweep.training.manifest`).

Whatever the source, images are decoded at their full range (16-bit, float and DICOM ones too,
by the rules of :mod:`pdsweep.training.decode`; ``?window=LOW,HIGH`` maps a value range to
black..white), resized (shorter side to R, then a centre crop) and stored once per (dataset,
resolution) as ``.npy`` arrays (n, R, R, C) in a cache folder: C is 1 where every image is
greyscale, else 3; uint8 for 8-bit images, uint16 (0..65535 for black..white) where any image has
more bits, is float or is windowed. The arrays are then memory-mapped: every trial on the
machine shares one copy, and a trial reads only the batches it uses. The cache folder is
``$PDSWEEP_CACHE`` or ``~/.cache/pdsweep``; an entry is keyed by the source (its path, size
and modification time), the resolution and the split seed, and is built under a file lock and
published by an atomic rename.

Splits: ``train``/``val``/``test`` when the source has them, else a seeded, stratified split
(70/15/15) of what it has. Where images have groups (a patient, an exam: ``csv`` with a
``group`` column, ``parquet:PATH?group=COL``), whole groups are drawn, stratified by each
group's majority label, so no group is in two splits; :attr:`Split.groups` says which group
each image is in.
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
from pdsweep.training import sources
from pdsweep.training.decode import Window
from pdsweep.training.sources import SPLITS, SYNTHETIC_TRAIN_IMAGES

log = logging.getLogger(__name__)

DatasetKind = Literal["synthetic", "folder", "npz", "parquet", "csv"]
DATASET_KINDS: tuple[str, ...] = get_args(DatasetKind)
# The ``KIND:PATH?KEY=VALUE&...`` options each kind takes.
# ``window=LOW,HIGH``: the pixel values shown black..white (:class:`pdsweep.training.decode.Window`).
DATASET_OPTIONS: dict[str, tuple[str, ...]] = {"folder": ("window",), "npz": ("window",),
                                               "parquet": ("image", "label", "group", "window"),
                                               "csv": ("path", "label", "group", "window")}
_CACHE_VERSION = 2  # 2: 16-bit images no longer clipped to 8 bits, greyscale in one channel


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
                "npz:PATH, parquet:PATH or csv:PATH."
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
        spec.window  # a bad window is refused now, before any image is read
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
    def window(self) -> Window | None:
        """The ``?window=LOW,HIGH`` option (None: each image's own range, :mod:`pdsweep.training.decode`)."""
        text = self.options.get("window")
        try:
            return None if text is None else Window.parse(text)
        except PdsweepError as error:
            raise PdsweepError(f"dataset {self}: {error}") from None

    @property
    def path(self) -> str:
        """The file or folder of a ``folder``, ``npz``, ``parquet`` or ``csv`` dataset (options aside)."""
        return self.arg.partition("?")[0]

    def absolute(self) -> DatasetSpec:
        """The same dataset with its path made absolute (the options kept)."""
        if self.kind == "synthetic":
            return self
        _, mark, options = self.arg.partition("?")
        return DatasetSpec(self.kind, str(Path(self.path).expanduser().resolve()) + mark + options)


@dataclass(frozen=True)
class Split:
    """One split: images (n, R, R, C), C 1 (greyscale) or 3, uint8 or uint16, memory-mapped;
    labels (n,) int64; groups (n,) int64, each image's index into :attr:`Dataset.group_names`
    (None: the dataset has no groups)."""

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_groups(self) -> int | None:
        return None if self.groups is None else len(np.unique(self.groups))


@dataclass(frozen=True)
class Dataset:
    name: str
    resolution: int
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    skipped: int = 0  # unreadable images left out
    group_names: tuple[str, ...] = ()  # empty: no groups

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> dict[str, tuple[int, int | None]]:
        """Per split: (images, groups), groups None where the dataset has none."""
        return {name: (len(split), split.num_groups) for name, split in zip(SPLITS, (self.train, self.val, self.test))}


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
    """Changes when the source's files, or the images a manifest lists, change (paths, sizes,
    modification times)."""
    digest = hashlib.sha256(f"{_CACHE_VERSION}|{spec}|{resolution}|{seed}".encode())
    if spec.kind == "synthetic":
        from pdsweep.training import synthetic

        digest.update(f"{synthetic.VERSION}|{spec.arg or SYNTHETIC_TRAIN_IMAGES}".encode())
    if source is not None:
        files = sorted(source.rglob("*")) if source.is_dir() else [source]
        for file in files:
            stat = file.stat()
            digest.update(f"{file.relative_to(source.parent)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    if spec.kind == "csv":
        from pdsweep.training.manifest import read_manifest

        for file in sorted(set(read_manifest(source, spec.options).files)):  # type: ignore[arg-type]
            stat = file.stat()
            digest.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}".encode())
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

    grouping: sources.Grouping | None = None
    if spec.kind == "synthetic":
        splits, class_names, skipped = sources.synthetic(spec.arg, resolution, seed)
    elif spec.kind == "folder":
        splits, class_names, skipped = sources.folder(source, resolution, seed, window=spec.window)  # type: ignore[arg-type]
    elif spec.kind == "npz":
        splits, class_names, skipped = sources.npz(source, resolution, window=spec.window)  # type: ignore[arg-type]
    elif spec.kind == "parquet":
        splits, class_names, skipped, grouping = sources.parquet(spec.options, source, resolution, seed, window=spec.window)  # type: ignore[arg-type]
    else:
        splits, class_names, skipped, grouping = sources.csv(spec.options, source, resolution, seed, window=spec.window)  # type: ignore[arg-type]
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=entry.parent))
    try:
        for name, (images, labels) in splits.items():
            np.save(staging / f"{name}_images.npy", images)
            np.save(staging / f"{name}_labels.npy", labels.astype(np.int64))
            if grouping is not None:
                np.save(staging / f"{name}_groups.npy", grouping.ids[name])
        counts = {name: (len(labels), None if grouping is None else Split(images, labels, grouping.ids[name]).num_groups)
                  for name, (images, labels) in splits.items()}
        meta = {"class_names": list(class_names), "skipped": skipped, "source": str(spec),
                "group_names": None if grouping is None else list(grouping.names), "counts": counts}
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
            groups=np.load(entry / f"{split}_groups.npy") if (entry / f"{split}_groups.npy").is_file() else None,
        )
        for split in SPLITS
    }
    return Dataset(
        name=name,
        resolution=int(splits["train"].images.shape[1]),
        class_names=tuple(meta["class_names"]),
        skipped=int(meta["skipped"]),
        group_names=tuple(meta.get("group_names") or ()),
        **splits,
    )
