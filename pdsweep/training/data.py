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
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from pdsweep.errors import PdsweepError
from pdsweep.paths import cache_root

log = logging.getLogger(__name__)

DatasetKind = Literal["synthetic", "folder", "npz", "parquet"]
DATASET_KINDS: tuple[str, ...] = get_args(DatasetKind)
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
        return cls(kind, arg)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind

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
    if spec.kind == "synthetic":
        splits, class_names, skipped = _synthetic(spec, resolution, seed)
    elif spec.kind == "folder":
        splits, class_names, skipped = _folder(source, resolution, seed)  # type: ignore[arg-type]
    elif spec.kind == "npz":
        splits, class_names, skipped = _npz(source, resolution)  # type: ignore[arg-type]
    else:
        splits, class_names, skipped = _parquet(spec, source, resolution, seed)  # type: ignore[arg-type]
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


# ---- splitting and resizing ---------------------------------------------------------------

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


def stratified_split(labels: np.ndarray, seed: int, fractions: Sequence[float] = SPLIT_FRACTIONS) -> list[np.ndarray]:
    """Index arrays for each fraction, every class split in the same proportions (seeded)."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        bounds = np.round(np.cumsum(fractions) * len(members)).astype(int)
        for i, (start, stop) in enumerate(zip([0, *bounds[:-1]], bounds)):
            parts[i].append(members[start:stop])
    return [np.sort(np.concatenate(p)) for p in parts]


def _split_missing(given: dict[str, tuple[list, list]], seed: int, source: str) -> dict[str, tuple[list, list]]:
    """Complete the splits: unsplit items ("all") join train; missing val/test come from train.

    With no split given at all, this is a stratified 70/15/15 split of everything.
    """
    if set(given) == {"all"}:
        items, labels = given.pop("all")
        idx = stratified_split(np.array(labels), seed)
        return {name: ([items[i] for i in part], [labels[i] for i in part]) for name, part in zip(SPLITS, idx)}
    if "all" in given:
        items, labels = given.pop("all")
        train = given.setdefault("train", ([], []))
        train[0].extend(items)
        train[1].extend(labels)
    if "train" not in given:
        raise PdsweepError(f"dataset {source!r} has {' and '.join(sorted(given))} splits but no training data; "
                           "add a train split or items without a split.")
    missing = [s for s in ("val", "test") if s not in given]
    if missing:
        items, labels = given["train"]
        keep = 1.0 - 0.15 * len(missing)
        idx = stratified_split(np.array(labels), seed, [keep] + [0.15] * len(missing))
        given["train"] = ([items[i] for i in idx[0]], [labels[i] for i in idx[0]])
        for name, part in zip(missing, idx[1:]):
            given[name] = ([items[i] for i in part], [labels[i] for i in part])
    return given


def resize_square(image: "PIL.Image.Image", resolution: int) -> np.ndarray:  # noqa: F821
    """Any PIL image -> (R, R, 3) uint8: RGB, shorter side to R (antialiased), centre crop."""
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return np.asarray(image.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8)


def _decode(given: dict[str, tuple[list, list]], resolution: int) -> tuple[Arrays, int]:
    """Open, make RGB and resize every image (a path or encoded bytes); count the unreadable."""
    from PIL import Image, UnidentifiedImageError

    splits: Arrays = {}
    skipped = 0
    for split in SPLITS:
        images, labels = [], []
        for item, label in zip(*given[split]):
            try:
                with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as image:
                    images.append(resize_square(image, resolution))
                labels.append(label)
            except (UnidentifiedImageError, OSError, ValueError, TypeError):
                skipped += 1
        splits[split] = (_stack(images, resolution), np.array(labels, dtype=np.int64))
    return splits, skipped


def _stack(images: list[np.ndarray], resolution: int) -> np.ndarray:
    if not images:
        return np.zeros((0, resolution, resolution, 3), dtype=np.uint8)
    return np.stack(images)


# ---- synthetic ----------------------------------------------------------------------------


def _synthetic(spec: DatasetSpec, resolution: int, seed: int) -> tuple[Arrays, tuple[str, ...], int]:
    from pdsweep.training.synthetic import CLASS_NAMES, render

    train = int(spec.arg) if spec.arg else SYNTHETIC_TRAIN_IMAGES
    held_out = max(len(CLASS_NAMES) * 5, train // 4)
    sizes = {"train": train, "val": held_out, "test": held_out}
    # Each split has its own seed, so growing the training set leaves val and test unchanged.
    splits = {name: render(count, resolution, seed=1000 * seed + i) for i, (name, count) in enumerate(sizes.items())}
    return splits, CLASS_NAMES, 0


# ---- folder -------------------------------------------------------------------------------


def _folder(root: Path, resolution: int, seed: int) -> tuple[Arrays, tuple[str, ...], int]:
    """``root/CLASS/*.jpg``, or ``root/{train,val,test}/CLASS/*.jpg``."""

    if not root.is_dir():
        raise PdsweepError(f"folder dataset {str(root)!r} is not a directory; give a folder with one sub-folder per class.")
    split_dirs = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if split_dirs and "train" not in split_dirs:
        raise PdsweepError(f"folder dataset {str(root)!r} has {', '.join(split_dirs)}/ but no train/; add train/ or drop the split folders.")
    class_names = _class_names(split_dirs.get("train", root))
    given: dict[str, tuple[list, list]] = {}
    for split, directory in (split_dirs.items() if split_dirs else [("all", root)]):
        files, labels = [], []
        for label, name in enumerate(class_names):
            class_dir = directory / name
            found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")) if class_dir.is_dir() else []
            if not found and split in ("all", "train"):
                raise PdsweepError(f"class folder {str(class_dir)!r} has no images; add images or remove the folder.")
            files += found
            labels += [label] * len(found)
        given[split] = (files, labels)
    splits, skipped = _decode(_split_missing(given, seed, str(root)), resolution)
    _check_not_empty(splits, str(root), skipped)
    return splits, class_names, skipped


def _class_names(directory: Path) -> tuple[str, ...]:
    names = tuple(sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if len(names) < 2:
        found = f"only {names[0]!r}" if names else "none"
        raise PdsweepError(
            f"folder dataset {str(directory)!r} needs one sub-folder per class and at least 2 classes, found {found}."
        )
    return names


def _check_not_empty(splits: Arrays, source: str, skipped: int) -> None:
    if skipped:
        total = skipped + sum(len(labels) for _, labels in splits.values())
        log.warning("%s: skipped %d of %d images that could not be read.", source, skipped, total)
    if not len(splits["train"][1]):
        raise PdsweepError(f"dataset {source!r} has no readable training images ({skipped} could not be read).")
    empty = [name for name in ("val", "test") if not len(splits[name][1])]
    if empty:
        raise PdsweepError(
            f"dataset {source!r} has no {' or '.join(empty)} images after splitting; add images (the automatic "
            "70/15/15 split needs about 7 per class) or give val/ and test/ splits."
        )


# ---- npz (MedMNIST layout) ----------------------------------------------------------------


def _npz(path: Path, resolution: int) -> tuple[Arrays, tuple[str, ...], int]:
    """``train_images``, ``train_labels``, ``val_*``, ``test_*``: (N, H, W[, 3]) uint8, (N[, 1])."""
    try:
        archive = np.load(path)
    except (OSError, ValueError) as error:
        raise PdsweepError(f"npz dataset {str(path)!r} cannot be read as a .npz file ({error}).") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise PdsweepError(f"npz dataset {str(path)!r} is a single array, not a .npz archive of named arrays "
                           "(train_images, train_labels, val_*, test_*).")
    with archive:
        expected = [f"{s}_{part}" for s in SPLITS for part in ("images", "labels")]
        missing = [k for k in expected if k not in archive.files]
        if missing:
            raise PdsweepError(
                f"npz dataset {str(path)!r} lacks {', '.join(missing)}; it has {', '.join(archive.files) or 'no arrays'} "
                "(expected the MedMNIST layout: train_images, train_labels, val_*, test_*)."
            )
        splits: Arrays = {}
        for split in SPLITS:
            try:
                images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
            except ValueError as error:  # e.g. object arrays, which would need pickle
                raise PdsweepError(f"npz dataset {str(path)!r}: {split} arrays cannot be read ({error}).") from None
            splits[split] = (_resize_array(images, resolution, f"{path}: {split}_images"), _labels(labels, f"{path}: {split}_labels", len(images)))
    num_classes = int(max(labels.max(initial=-1) for _, labels in splits.values())) + 1
    _check_not_empty(splits, str(path), 0)
    return splits, tuple(str(i) for i in range(num_classes)), 0


def _labels(labels: np.ndarray, where: str, count: int) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != count:
        raise PdsweepError(f"{where}: labels must be (N,) or (N, 1) with N={count}, got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
        raise PdsweepError(f"{where}: labels must be integers >= 0, got {labels.dtype}.")
    return labels.astype(np.int64)


def _resize_array(images: np.ndarray, resolution: int, where: str) -> np.ndarray:
    from PIL import Image

    if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise PdsweepError(f"{where}: images must be uint8 (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}.")
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.shape[1:3] == (resolution, resolution):
        return np.ascontiguousarray(images)
    return _stack([resize_square(Image.fromarray(image), resolution) for image in images], resolution)


# ---- parquet ------------------------------------------------------------------------------


def _parquet(spec: DatasetSpec, path: Path, resolution: int, seed: int) -> tuple[Arrays, tuple[str, ...], int]:
    """A Parquet file or folder with an image-bytes column and a label column.

    Columns ``image`` and ``label`` by default; ``parquet:PATH?image=COL&label=COL`` names
    others. An image column may hold bytes or Hugging Face's ``{bytes, path}`` structs. Splits:
    a ``split`` column (train/val/validation/test), else files named ``train*``, ``val*``,
    ``test*`` in the folder, else a stratified split.
    """
    import pyarrow.parquet as pq

    options = dict(part.split("=", 1) for part in spec.arg.partition("?")[2].split("&") if "=" in part)
    image_col, label_col = options.get("image", "image"), options.get("label", "label")
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise PdsweepError(f"parquet dataset {str(path)!r} has no .parquet files.")
    given: dict[str, tuple[list, list]] = {}
    for file in files:
        try:
            table = pq.read_table(file)
        except Exception as error:  # pyarrow raises several types for a corrupt file
            raise PdsweepError(f"parquet dataset {str(file)!r} cannot be read ({error}).") from None
        missing = [c for c in (image_col, label_col) if c not in table.column_names]
        if missing:
            raise PdsweepError(
                f"parquet file {str(file)!r} has no column {', '.join(map(repr, missing))}; its columns are "
                f"{', '.join(table.column_names)}. Name them with parquet:PATH?image=COL&label=COL."
            )
        images = table.column(image_col).to_pylist()
        labels = table.column(label_col).to_pylist()
        splits = table.column("split").to_pylist() if "split" in table.column_names else [_split_of(file)] * len(labels)
        for image, label, split in zip(images, labels, splits):
            split = {"validation": "val", "valid": "val"}.get(str(split), str(split))
            bucket = given.setdefault(split if split in SPLITS else "all", ([], []))
            bucket[0].append(image["bytes"] if isinstance(image, dict) else image)
            bucket[1].append(label)
    class_names = tuple(str(c) for c in sorted({label for _, labels in given.values() for label in labels}, key=_label_key))
    index = {name: i for i, name in enumerate(class_names)}
    given = {split: (items, [index[str(label)] for label in labels]) for split, (items, labels) in given.items()}
    splits_out, skipped = _decode(_split_missing(given, seed, str(path)), resolution)
    _check_not_empty(splits_out, str(path), skipped)
    if len(class_names) < 2:
        raise PdsweepError(f"parquet dataset {str(path)!r} has {len(class_names)} class; a classifier needs at least 2.")
    return splits_out, class_names, skipped


def _split_of(file: Path) -> str:
    stem = file.stem.lower()
    for prefix, split in (("train", "train"), ("val", "val"), ("test", "test")):
        if stem.startswith(prefix):
            return split
    return "all"


def _label_key(label: object) -> tuple[int, object]:
    """Integers in numeric order, then anything else as text."""
    return (0, label) if isinstance(label, int) else (1, str(label))
