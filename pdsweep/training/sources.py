"""Where a dataset's images come from: each kind read into decoded, resized (R, R, 3) arrays per
split, with class names and a count of unreadable images. :mod:`pdsweep.training.data` caches
what these return; nothing here is read twice.

Splits: ``train``/``val``/``test`` when the source has them, else a seeded, stratified split
(70/15/15) of what it has.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pdsweep.errors import PdsweepError
from pdsweep.training.data import IMAGE_SUFFIXES, SPLIT_FRACTIONS, SPLITS, SYNTHETIC_TRAIN_IMAGES

log = logging.getLogger(__name__)


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


def synthetic(arg: str, resolution: int, seed: int) -> tuple[Arrays, tuple[str, ...], int]:
    from pdsweep.training.synthetic import CLASS_NAMES, render

    train = int(arg) if arg else SYNTHETIC_TRAIN_IMAGES
    held_out = max(len(CLASS_NAMES) * 5, train // 4)
    sizes = {"train": train, "val": held_out, "test": held_out}
    # Each split has its own seed, so growing the training set leaves val and test unchanged.
    splits = {name: render(count, resolution, seed=1000 * seed + i) for i, (name, count) in enumerate(sizes.items())}
    return splits, CLASS_NAMES, 0


# ---- folder -------------------------------------------------------------------------------


def folder(root: Path, resolution: int, seed: int) -> tuple[Arrays, tuple[str, ...], int]:
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


def npz(path: Path, resolution: int) -> tuple[Arrays, tuple[str, ...], int]:
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
    present = len(np.unique(splits["train"][1]))
    if present < 2:
        raise PdsweepError(f"npz dataset {str(path)!r} has {present} class in train_labels; a classifier needs at least 2.")
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


def parquet(options: dict[str, str], path: Path, resolution: int, seed: int) -> tuple[Arrays, tuple[str, ...], int]:
    """A Parquet file or folder with an image-bytes column and a label column.

    Columns ``image`` and ``label`` by default; ``parquet:PATH?image=COL&label=COL`` names
    others. An image column may hold bytes or Hugging Face's ``{bytes, path}`` structs. Splits:
    a ``split`` column (train/val/validation/test), else files named ``train*``, ``val*``,
    ``test*`` in the folder, else a stratified split.
    """
    import pyarrow.parquet as pq

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
