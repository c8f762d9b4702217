"""Where a dataset's images come from: each kind read into decoded, resized (R, R, C) arrays per
split (by the rules of :mod:`pdsweep.training.decode`), with class names and a count of
unreadable images. :mod:`pdsweep.training.data` caches what these return; nothing here is read
twice.

Kinds: ``synthetic``, ``folder``, ``npz``, ``parquet`` and ``csv`` (a manifest of image files,
:mod:`pdsweep.training.manifest`); ``parquet`` and ``csv`` may give each image a group (patient,
exam), returned as a :class:`Grouping`.

Splits: ``train``/``val``/``test`` when the source has them, else a seeded, stratified split
(70/15/15) of what it has; with groups, of whole groups (:func:`grouped_split`), and a group given
two splits is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pdsweep.errors import PdsweepError
from pdsweep.training.decode import (
    Window, bits_in_use, common_form, fit_bits, from_array, read_image, square, stack, warn_self_scaled,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".dcm"}
SYNTHETIC_TRAIN_IMAGES = 4000


Arrays = dict[str, tuple[np.ndarray, np.ndarray]]
# Before decoding: split ("train", "val", "test", or "all": not split yet) -> (items, labels,
# group ids or None); an item is a path or encoded bytes.
Given = dict[str, tuple[list, list, list | None]]


@dataclass(frozen=True)
class Grouping:
    """Which patient (exam, ...) each image comes from: ``ids[split]`` (n,) int64 indexes ``names``."""

    names: tuple[str, ...]
    ids: dict[str, np.ndarray]


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


def grouped_split(labels: np.ndarray, groups: np.ndarray, seed: int,
                  fractions: Sequence[float] = SPLIT_FRACTIONS) -> list[np.ndarray]:
    """Index arrays for each fraction, each group whole in one of them (seeded).

    Stratified at the group level: a group's class is its most common label (a tie: the lowest),
    and each class's groups are shared out in the fractions' proportions, at least one to every
    part when the class has a group for each. ``labels``, ``groups``: (n,) int64.
    """
    if not len(labels):
        return [np.zeros(0, dtype=np.int64) for _ in fractions]
    rng = np.random.default_rng(seed)
    _, group_of = np.unique(groups, return_inverse=True)  # (n,) 0..G-1
    votes = np.zeros((group_of.max() + 1, labels.max() + 1), dtype=np.int64)  # (G, C)
    np.add.at(votes, (group_of, labels), 1)
    group_labels = votes.argmax(axis=1)
    part_of_group = np.empty(len(votes), dtype=np.int64)
    for label in np.unique(group_labels):
        members = rng.permutation(np.flatnonzero(group_labels == label))
        part_of_group[members] = np.repeat(np.arange(len(fractions)), _part_sizes(len(members), fractions))
    part_of = part_of_group[group_of]
    return [np.flatnonzero(part_of == i) for i in range(len(fractions))]


def _part_sizes(count: int, fractions: Sequence[float]) -> np.ndarray:
    """``count`` things shared out in ``fractions``' proportions, at least one each where there are enough."""
    sizes = np.diff(np.round(np.cumsum(fractions) * count).astype(int), prepend=0)
    sizes[-1] = count - sizes[:-1].sum()
    while count >= len(sizes) and sizes.min() == 0:
        sizes[sizes.argmax()] -= 1
        sizes[sizes.argmin()] += 1
    return sizes


def _split_missing(given: Given, seed: int, source: str) -> Given:
    """Complete the splits: unsplit items ("all") join train; missing val/test come from train.

    With no split given at all, this is a stratified 70/15/15 split of everything. Items with
    groups are drawn a whole group at a time (:func:`grouped_split`).
    """
    if set(given) == {"all"}:
        return dict(zip(SPLITS, _draw(given["all"], seed, SPLIT_FRACTIONS)))
    if "all" in given:
        items, labels, groups = given.pop("all")
        train = given.setdefault("train", ([], [], None if groups is None else []))
        train[0].extend(items)
        train[1].extend(labels)
        if groups is not None:
            train[2].extend(groups)  # type: ignore[union-attr]
    if "train" not in given:
        raise PdsweepError(f"dataset {source!r} has {' and '.join(sorted(given))} splits but no training data; "
                           "add a train split or items without a split.")
    missing = [s for s in ("val", "test") if s not in given]
    if missing:
        keep = 1.0 - 0.15 * len(missing)
        given.update(zip(["train", *missing], _draw(given["train"], seed, [keep] + [0.15] * len(missing))))
    return given


def _draw(bucket: tuple[list, list, list | None], seed: int,
          fractions: Sequence[float]) -> list[tuple[list, list, list | None]]:
    """``bucket`` split in ``fractions``: image by image, or whole groups where it has groups."""
    items, labels, groups = bucket
    if groups is None:
        parts = stratified_split(np.array(labels), seed, fractions)
    else:
        parts = grouped_split(np.array(labels, dtype=np.int64), np.array(groups, dtype=np.int64), seed, fractions)
    return [([items[i] for i in part], [labels[i] for i in part], None if groups is None else [groups[i] for i in part])
            for part in parts]


def _decode(given: Given, resolution: int,
            window: Window | None = None) -> tuple[Arrays, dict[str, np.ndarray] | None, int]:
    """Decode and resize every image (a path or encoded bytes); count the unreadable, left out
    with their labels and groups. Groups: (n,) int64 ids per split, or None. Every split in one
    form (:func:`pdsweep.training.decode.common_form`)."""
    from PIL import UnidentifiedImageError

    splits: Arrays = {}
    groups: dict[str, np.ndarray] = {}
    skipped = self_scaled = 0
    raw_max: dict[str, list[int | None]] = {}  # per split, per image kept: a 16-bit integer image's largest value
    for split in SPLITS:
        items, labels, group_ids = given[split]
        images, kept = [], []
        deep = raw_max.setdefault(split, [])
        for index, item in enumerate(items):
            try:
                decoded = read_image(item, window)
            except PdsweepError:  # an image pdsweep refuses, or pydicom missing: not "unreadable"
                raise
            except (UnidentifiedImageError, OSError, ValueError, TypeError):
                skipped += 1
                continue
            images.append(square(decoded, resolution))
            self_scaled += decoded.self_scaled
            deep.append(decoded.raw_max)
            kept.append(index)
        read = np.array(kept, dtype=np.intp)
        splits[split] = (stack(images, resolution), np.array(labels, dtype=np.int64)[read])
        if group_ids is not None:
            groups[split] = np.array(group_ids, dtype=np.int64)[read]
    warn_self_scaled(self_scaled, sum(len(labels) for _, labels in splits.values()))
    same = common_form([images for images, _ in splits.values()])
    found = [value for values in raw_max.values() for value in values if value is not None]
    if found:  # 16-bit integer images without a window: over the bits the dataset's values use
        bits = bits_in_use(max(found))
        same = [fit_bits(images, bits, np.array([v is not None for v in raw_max[name]], dtype=bool))
                for images, name in zip(same, splits)]
    return {name: (images, labels) for images, (name, (_, labels)) in zip(same, splits.items())}, groups or None, skipped


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


def folder(root: Path, resolution: int, seed: int, *, window: Window | None = None) -> tuple[Arrays, tuple[str, ...], int]:
    """``root/CLASS/*.jpg``, or ``root/{train,val,test}/CLASS/*.jpg`` (any image suffix of
    :data:`IMAGE_SUFFIXES`, ``.dcm`` included)."""

    if not root.is_dir():
        raise PdsweepError(f"folder dataset {str(root)!r} is not a directory; give a folder with one sub-folder per class.")
    split_dirs = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if split_dirs and "train" not in split_dirs:
        raise PdsweepError(f"folder dataset {str(root)!r} has {', '.join(split_dirs)}/ but no train/; add train/ or drop the split folders.")
    class_names = _class_names(split_dirs.get("train", root))
    given: Given = {}
    for split, directory in (split_dirs.items() if split_dirs else [("all", root)]):
        files, labels = [], []
        for label, name in enumerate(class_names):
            class_dir = directory / name
            found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")) if class_dir.is_dir() else []
            if not found and split in ("all", "train"):
                raise PdsweepError(f"class folder {str(class_dir)!r} has no images; add images or remove the folder.")
            files += found
            labels += [label] * len(found)
        given[split] = (files, labels, None)
    splits, _, skipped = _decode(_split_missing(given, seed, str(root)), resolution, window)
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


def npz(path: Path, resolution: int, *, window: Window | None = None) -> tuple[Arrays, tuple[str, ...], int]:
    """``train_images``, ``train_labels``, ``val_*``, ``test_*``: (N, H, W[, 1 or 3]) uint8 or
    uint16, (N[, 1])."""
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
        deep: dict[str, int] = {}  # split -> its uint16 array's largest value (no window)
        for split in SPLITS:
            try:
                images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
            except ValueError as error:  # e.g. object arrays, which would need pickle
                raise PdsweepError(f"npz dataset {str(path)!r}: {split} arrays cannot be read ({error}).") from None
            splits[split] = (_resize_array(images, resolution, f"{path}: {split}_images", window),
                             _labels(labels, f"{path}: {split}_labels", len(images)))
            if images.dtype == np.uint16 and window is None and images.size:
                deep[split] = int(images.max())
    same = common_form([images for images, _ in splits.values()])
    if deep:  # uint16 arrays without a window: over the bits the archive's values use, as 16-bit files
        bits = bits_in_use(max(deep.values()))
        same = [fit_bits(images, bits) if name in deep else images for images, name in zip(same, splits)]
    splits = {name: (images, labels) for images, (name, (_, labels)) in zip(same, splits.items())}
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


def _resize_array(images: np.ndarray, resolution: int, where: str, window: Window | None) -> np.ndarray:
    """(N, H, W[, C]) -> (N, R, R, C), C 1 or 3; stored as given where neither a resize nor a window is asked."""
    if images.dtype not in (np.uint8, np.uint16) or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))):
        raise PdsweepError(f"{where}: images must be uint8 or uint16 (N, H, W), (N, H, W, 1) or (N, H, W, 3), "
                           f"got {images.dtype} {images.shape}.")
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:3] == (resolution, resolution) and window is None:
        return np.ascontiguousarray(images)
    return stack([square(from_array(image, window), resolution) for image in images], resolution)


# ---- parquet ------------------------------------------------------------------------------


def parquet(options: dict[str, str], path: Path, resolution: int, seed: int, *,
            window: Window | None = None) -> tuple[Arrays, tuple[str, ...], int, Grouping | None]:
    """A Parquet file or folder with an image-bytes column and a label column.

    Columns ``image`` and ``label`` by default; ``parquet:PATH?image=COL&label=COL`` names
    others, and ``group=COL`` a column of patients (exams, ...) kept whole in one split. An image
    column may hold bytes or Hugging Face's ``{bytes, path}`` structs. Splits: a ``split`` column
    (train/val/validation/test), else files named ``train*``, ``val*``, ``test*`` in the folder,
    else a stratified split.
    """
    import pyarrow.parquet as pq

    image_col, label_col, group_col = options.get("image", "image"), options.get("label", "label"), options.get("group")
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise PdsweepError(f"parquet dataset {str(path)!r} has no .parquet files.")
    given: Given = {}
    for file in files:
        try:
            table = pq.read_table(file)
        except Exception as error:  # pyarrow raises several types for a corrupt file
            raise PdsweepError(f"parquet dataset {str(file)!r} cannot be read ({error}).") from None
        missing = [c for c in (image_col, label_col, group_col) if c is not None and c not in table.column_names]
        if missing:
            raise PdsweepError(
                f"parquet file {str(file)!r} has no column {', '.join(map(repr, missing))}; its columns are "
                f"{', '.join(table.column_names)}. Name them with parquet:PATH?image=COL&label=COL"
                f"{'&group=COL' if group_col else ''}."
            )
        images = table.column(image_col).to_pylist()
        labels = table.column(label_col).to_pylist()
        splits = table.column("split").to_pylist() if "split" in table.column_names else [_split_of(file)] * len(labels)
        groups = table.column(group_col).to_pylist() if group_col else [None] * len(labels)
        for row, (image, label, split, group) in enumerate(zip(images, labels, splits, groups), start=1):
            if group_col and (group is None or not str(group).strip()):
                raise PdsweepError(f"parquet file {str(file)!r} row {row}: the {group_col!r} cell is empty; "
                                   "give every row a group.")
            split = {"validation": "val", "valid": "val"}.get(str(split), str(split))
            _add(given, split if split in SPLITS else "all", image["bytes"] if isinstance(image, dict) else image, label,
                 None if group is None else str(group).strip())
    return _finish(given, "parquet", str(path), resolution, seed, window)


def _split_of(file: Path) -> str:
    stem = file.stem.lower()
    for prefix, split in (("train", "train"), ("val", "val"), ("test", "test")):
        if stem.startswith(prefix):
            return split
    return "all"


def _label_key(label: object) -> tuple[int, object]:
    """Integers in numeric order, then anything else as text."""
    return (0, label) if isinstance(label, int) else (1, str(label))


# ---- csv manifest -------------------------------------------------------------------------


def csv(options: dict[str, str], path: Path, resolution: int, seed: int, *,
        window: Window | None = None) -> tuple[Arrays, tuple[str, ...], int, Grouping | None]:
    """The images a CSV manifest lists (:mod:`pdsweep.training.manifest`), in any format ``folder`` reads."""
    from pdsweep.training.manifest import read_manifest

    manifest = read_manifest(path, options)
    given: Given = {}
    groups = manifest.groups or (None,) * len(manifest.files)
    for file, label, split, group in zip(manifest.files, _plain_integers(manifest.labels), manifest.splits, groups):
        _add(given, split, file, label, group)
    return _finish(given, "csv", str(path), resolution, seed, window)


def _plain_integers(labels: Sequence[str]) -> list[int] | list[str]:
    """Text labels that are all plain integers ("0", "12") as ints, to sort in numeric order."""
    try:
        numbers = [int(label) for label in labels]
    except ValueError:
        return list(labels)
    return numbers if all(str(n) == label for n, label in zip(numbers, labels)) else list(labels)


# ---- labelled (and grouped) items, shared by parquet and csv ------------------------------


def _add(given: Given, split: str, item: object, label: object, group: str | None) -> None:
    """One item into its split's bucket, which keeps a list of group names where items have groups."""
    bucket = given.setdefault(split, ([], [], None if group is None else []))
    bucket[0].append(item)
    bucket[1].append(label)
    if bucket[2] is not None:
        bucket[2].append(group)


def _finish(given: Given, kind: str, source: str, resolution: int, seed: int,
            window: Window | None) -> tuple[Arrays, tuple[str, ...], int, Grouping | None]:
    """Items with class names as labels and group names -> decoded splits, classes, the skipped count, groups."""
    labels_seen = {label for _, labels, _ in given.values() for label in labels}
    class_names = tuple(str(c) for c in sorted(labels_seen, key=_label_key))
    if len(class_names) < 2:
        found = ", ".join(map(repr, class_names)) or "none"
        raise PdsweepError(f"{kind} dataset {source!r} has {len(class_names)} {'class' if len(class_names) == 1 else 'classes'}"
                           f" ({found}); a classifier needs at least 2.")
    _check_groups_apart(given, kind, source)
    class_index = {name: i for i, name in enumerate(class_names)}
    group_names = tuple(sorted({group for _, _, groups in given.values() for group in groups or ()}))
    group_index = {name: i for i, name in enumerate(group_names)}
    indexed: Given = {
        split: (items, [class_index[str(label)] for label in labels],
                None if groups is None else [group_index[group] for group in groups])
        for split, (items, labels, groups) in given.items()
    }
    splits, group_ids, skipped = _decode(_split_missing(indexed, seed, source), resolution, window)
    _check_not_empty(splits, source, skipped)
    return splits, class_names, skipped, None if group_ids is None else Grouping(group_names, group_ids)


def _check_groups_apart(given: Given, kind: str, source: str) -> None:
    """Refuse a group given two splits; items without a split ("all") join train."""
    home: dict[str, str] = {}
    for split in ("train", "all", "val", "test"):
        groups = given[split][2] if split in given else None
        for group in dict.fromkeys(groups or ()):
            first = home.setdefault(group, split)
            if first != split and {first, split} != {"train", "all"}:
                named = [{"all": "no split (so train)"}.get(s, s) for s in (first, split)]
                raise PdsweepError(f"{kind} dataset {source!r}: group {group!r} is in both {named[0]} and {named[1]}; "
                                   "give all of a group's images the same split.")
