"""Patient-level groups: ``csv:PATH`` manifests, ``parquet:PATH?group=COL``, and splits that
never put one group in two of them (issue #29)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import CliResult, assert_one_line_error, cases
from pdsweep.errors import PdsweepError
from pdsweep.training.data import Dataset, DatasetSpec, load_dataset
from pdsweep.training.sources import _split_missing, grouped_split

SPLIT_NAMES = ("train", "val", "test")


# ---- the split rule -------------------------------------------------------------------------


@st.composite
def grouped_items(draw: st.DrawFn) -> tuple[dict[str, tuple[list, list, list]], dict[int, str]]:
    """Groups of 1-6 images in 2-3 classes (a few of mixed labels); some with a split given."""
    classes = draw(st.integers(2, 3))
    with_splits = draw(st.booleans())
    given: dict[str, tuple[list, list, list]] = {}
    given_split: dict[int, str] = {}
    for group in range(draw(st.integers(2, 40))):
        label = draw(st.integers(0, classes - 1))
        mixed = draw(st.integers(0, 9)) == 0
        split = draw(st.sampled_from(["all", "all", "train", "val", "test"])) if with_splits and group else "all"
        given_split[group] = split
        bucket = given.setdefault(split, ([], [], []))
        for _ in range(draw(st.integers(1, 6))):
            bucket[0].append(sum(len(b[0]) for b in given.values()))  # the image's number
            bucket[1].append(draw(st.integers(0, classes - 1)) if mixed else label)
            bucket[2].append(group)
    return given, given_split


def _copy(given: dict[str, tuple[list, list, list]]) -> dict[str, tuple[list, list, list]]:
    return {split: (list(items), list(labels), list(groups)) for split, (items, labels, groups) in given.items()}


@settings(max_examples=cases(300))
@given(drawn=grouped_items(), seed=st.integers(0, 2**32 - 1))
def test_no_group_is_ever_in_two_splits(drawn: tuple[dict, dict[int, str]], seed: int) -> None:
    given, given_split = drawn
    images = sorted(i for items, _, _ in given.values() for i in items)
    out = _split_missing(_copy(given), seed, "manifest")
    assert sorted(i for split in SPLIT_NAMES for i in out[split][0]) == images  # each image in exactly one split
    home = {group: split for split in SPLIT_NAMES for group in out[split][2]}
    for split in SPLIT_NAMES:
        assert all(home[group] == split for group in out[split][2])
    for group, split in given_split.items():
        if split in ("val", "test"):
            assert home[group] == split  # a given held-out split is kept
    assert _split_missing(_copy(given), seed, "manifest") == out  # reproducible per seed


@settings(max_examples=cases(100))
@given(sizes=st.lists(st.integers(1, 6), min_size=3, max_size=60), classes=st.integers(2, 3),
       seed=st.integers(0, 2**32 - 1))
def test_every_split_has_every_class_with_enough_groups(sizes: list[int], classes: int, seed: int) -> None:
    group_labels = [g % classes for g in range(len(sizes))]
    groups = np.repeat(np.arange(len(sizes)), sizes)
    labels = np.repeat(group_labels, sizes)
    parts = grouped_split(labels, groups, seed)
    for label in range(classes):
        if group_labels.count(label) >= 3:
            assert all(label in labels[part] for part in parts)


def test_grouped_split_shares_each_class_s_groups_70_15_15() -> None:
    group_labels = np.array([0] * 100 + [1] * 20)
    groups = np.repeat(np.arange(120), 2)
    parts = grouped_split(np.repeat(group_labels, 2), groups, seed=0)
    per_class = [np.bincount(group_labels[np.unique(groups[part])], minlength=2).tolist() for part in parts]
    assert per_class == [[70, 14], [15, 3], [15, 3]]


# ---- csv manifests --------------------------------------------------------------------------


def _png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, dtype=np.uint8)).save(path)
    return path


def _manifest(root: Path, patients: int = 12, *, split_of: Callable[[int], str] | None = None) -> Path:
    """``patients`` patients of 1-3 images each, labels 2 and 10; every other path absolute."""
    lines = ["path,label,group" + (",split" if split_of else "")]
    for patient in range(patients):
        for image in range(1 + patient % 3):
            file = _png(root / "imgs" / f"p{patient}_{image}.png", 10 * patient + image)
            path = str(file) if image % 2 else f"imgs/{file.name}"
            lines.append(f"{path},{2 if patient % 2 else 10},p{patient}" + (f",{split_of(patient)}" if split_of else ""))
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    return root / "m.csv"


def _groups_apart(dataset: Dataset) -> None:
    seen = [set(split.groups.tolist()) for split in (dataset.train, dataset.val, dataset.test)]  # type: ignore[union-attr]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_a_csv_manifest_loads_end_to_end(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "d")
    dataset = load_dataset(f"csv:{manifest}", 16, cache_dir=tmp_path / "cache")
    assert dataset.class_names == ("2", "10")  # integer labels in numeric order
    assert dataset.train.images.shape[1:] == (16, 16, 3)
    assert dataset.group_names == tuple(sorted(f"p{i}" for i in range(12)))
    counts = dataset.counts()
    assert sum(images for images, _ in counts.values()) == 24 and sum(groups for _, groups in counts.values()) == 12
    for split in (dataset.train, dataset.val, dataset.test):
        assert split.groups is not None and split.groups.dtype == np.int64 and len(split.groups) == len(split)
        assert set(split.labels.tolist()) == {0, 1}  # every class in every split
    _groups_apart(dataset)
    entry = next((tmp_path / "cache" / "datasets").glob("csv-*/16px"))
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["counts"] == {name: list(count) for name, count in counts.items()}
    assert meta["group_names"] == list(dataset.group_names) and (entry / "val_groups.npy").is_file()


def test_a_split_column_is_kept_and_unreadable_images_leave_with_their_group(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "d", split_of=lambda p: {0: "test", 1: "test", 2: "validation", 3: "val"}.get(p, ""))
    (tmp_path / "d" / "imgs" / "p5_0.png").write_bytes(b"not a png")
    dataset = load_dataset(f"csv:{manifest}", 8, cache_dir=tmp_path / "cache")
    names = dataset.group_names
    assert {names[g] for g in dataset.test.groups} == {"p0", "p1"}  # type: ignore[union-attr]
    assert {names[g] for g in dataset.val.groups} == {"p2", "p3"}  # type: ignore[union-attr]
    assert dataset.skipped == 1 and len(dataset.train.groups) == len(dataset.train) == 24 - 7 - 1  # type: ignore[arg-type]
    assert "p5" in {names[g] for g in dataset.train.groups}  # type: ignore[union-attr]  # its other images stay


def test_a_csv_without_groups_splits_image_by_image(tmp_path: Path) -> None:
    rows = ["file,diagnosis"] + [f"{_png(tmp_path / f'{i}.png', i).name},{'ab'[i % 2]}" for i in range(20)]
    (tmp_path / "m.csv").write_text("\n".join(rows))
    dataset = load_dataset(f"csv:{tmp_path / 'm.csv'}?path=file&label=diagnosis", 8, cache_dir=tmp_path / "cache")
    assert dataset.class_names == ("a", "b") and dataset.group_names == ()
    assert dataset.counts() == {"train": (14, None), "val": (2, None), "test": (4, None)}


def test_the_cache_changes_when_a_listed_image_changes(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "d")
    first = load_dataset(f"csv:{manifest}", 8, cache_dir=tmp_path / "cache")
    image = tmp_path / "d" / "imgs" / "p0_0.png"
    _png(image, 255)
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load_dataset(f"csv:{manifest}", 8, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "datasets").glob("csv-*"))) == 2
    assert first.train.images.max() < 255 <= max(s.images.max() for s in (second.train, second.val, second.test))


# ---- parquet ?group=COL ---------------------------------------------------------------------


def _png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_parquet_with_a_group_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    patients = [p for p in range(15) for _ in range(1 + p % 4)]
    pq.write_table(pa.table({"image": [_png_bytes(i) for i in range(len(patients))], "label": [p % 2 for p in patients],
                             "patient": [f"id{p}" for p in patients]}), tmp_path / "d.parquet")
    grouped = load_dataset(f"parquet:{tmp_path / 'd.parquet'}?group=patient", 8, cache_dir=tmp_path / "cache")
    _groups_apart(grouped)
    assert sum(groups for _, groups in grouped.counts().values()) == 15  # type: ignore[misc]
    plain = load_dataset(f"parquet:{tmp_path / 'd.parquet'}", 8, cache_dir=tmp_path / "cache")
    assert plain.train.groups is None and plain.group_names == ()


def test_parquet_with_an_empty_group_cell(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"image": [_png_bytes(0)] * 3, "label": [0, 1, 0], "patient": ["a", None, "b"]})
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(PdsweepError, match=r"row 2: the 'patient' cell is empty"):
        load_dataset(f"parquet:{tmp_path / 'd.parquet'}?group=patient", 8, cache_dir=tmp_path / "cache")


# ---- bad manifests: one line each -----------------------------------------------------------


def _bad(root: Path, rows: list[str]) -> Path:
    _png(root / "a.png", 0)
    _png(root / "b.png", 9)
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return root / "m.csv"


BAD_MANIFESTS = {
    "no-path-column": (["file,label", "a.png,x"], "", r"has no column 'path'; its columns are file, label"),
    "no-label-column": (["path,diagnosis", "a.png,x"], "", r"has no column 'label'; its columns are path, diagnosis"),
    "no-named-group-column": (["path,label", "a.png,x"], "?group=patient", r"has no column 'patient'; its columns are path, label"),
    "empty-group": (["path,label,group", "a.png,x,p1", "b.png,y,"], "", r"line 3: the 'group' cell is empty"),
    "missing-file": (["path,label", "a.png,x", "scans/c.png,y"], "", r"line 3: image 'scans/c.png' does not exist"),
    "one-class": (["path,label", "a.png,x", "b.png,x"], "", r"has 1 class \('x'\); a classifier needs at least 2"),
    "group-in-two-splits": (["path,label,group,split", "a.png,x,p1,train", "b.png,y,p1,val"], "",
                            r"group 'p1' is in both train and val; give all of a group's images the same split"),
    "unsplit-and-held-out": (["path,label,group,split", "a.png,x,p1,", "b.png,y,p1,test"], "",
                             r"group 'p1' is in both no split \(so train\) and test"),
    "unknown-split": (["path,label,split", "a.png,x,training"], "", r"line 2: split 'training' is not train, val"),
}


@pytest.mark.parametrize(("rows", "options", "match"), BAD_MANIFESTS.values(), ids=BAD_MANIFESTS)
def test_bad_manifests(tmp_path: Path, rows: list[str], options: str, match: str) -> None:
    manifest = _bad(tmp_path, rows)
    with pytest.raises(PdsweepError, match=match):
        load_dataset(f"csv:{manifest}{options}", 8, cache_dir=tmp_path / "cache")


def test_csv_options_are_checked() -> None:
    assert DatasetSpec.parse("csv:m.csv?group=patient&path=file").options == {"group": "patient", "path": "file"}
    with pytest.raises(PdsweepError, match=r"unknown option image; csv takes path, label, group"):
        DatasetSpec.parse("csv:m.csv?image=x")


def test_a_bad_manifest_through_the_cli(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    manifest = _bad(tmp_path, ["file,label", "a.png,x"])
    result = cli("train", "--model", "vit_micro", "--resolution", "16", "--patch-size", "8", "--epochs", "1",
                 "--device", "cpu", "--dataset", f"csv:{manifest}", "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(result, "has no column 'path'; its columns are file, label")
