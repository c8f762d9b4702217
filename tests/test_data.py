from __future__ import annotations

import io
import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pdsweep.training.data import DatasetSpec, load_dataset
from pdsweep.training.sources import stratified_split
from pdsweep.errors import PdsweepError

SAMPLE = Path(__file__).parent / "data" / "sign-language-digits-sample"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sign-language-digits"


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ---- specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "arg"),
    [("synthetic", "synthetic", ""), ("synthetic:500", "synthetic", "500"), ("folder:/x/y", "folder", "/x/y"),
     ("npz:a.npz", "npz", "a.npz"), ("parquet:d?image=img", "parquet", "d?image=img")],
)
def test_spec_parse(text: str, kind: str, arg: str) -> None:
    assert DatasetSpec.parse(text) == DatasetSpec(kind, arg)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "match"),
    [("imagenet", r"unknown dataset kind 'imagenet'"), ("folder", r"dataset folder needs a path: --dataset folder:PATH"),
     ("synthetic:lots", r"synthetic:N takes a number of training images >= 10, got 'lots'")],
)
def test_spec_parse_rejects(text: str, match: str) -> None:
    with pytest.raises(PdsweepError, match=match):
        DatasetSpec.parse(text)


# ---- synthetic ------------------------------------------------------------------------------


def test_synthetic_is_deterministic_balanced_and_cached(tmp_path: Path) -> None:
    first = load_dataset("synthetic:40", 32, cache_dir=tmp_path / "a")
    again = load_dataset("synthetic:40", 32, cache_dir=tmp_path / "b")
    assert np.array_equal(first.train.images, again.train.images)
    assert np.array_equal(first.test.labels, again.test.labels)
    assert first.train.images.shape == (40, 32, 32, 3) and first.train.images.dtype == np.uint8
    assert np.bincount(first.train.labels).tolist() == [10, 10, 10, 10]
    assert isinstance(first.train.images, np.memmap)
    entry = next((tmp_path / "a" / "datasets").glob("synthetic-*/32px"))
    built = (entry / "meta.json").stat().st_mtime_ns
    load_dataset("synthetic:40", 32, cache_dir=tmp_path / "a")
    assert (entry / "meta.json").stat().st_mtime_ns == built  # reused, not rebuilt
    other_seed = load_dataset("synthetic:40", 32, seed=1, cache_dir=tmp_path / "a")
    assert not np.array_equal(other_seed.train.images, first.train.images)


def test_synthetic_draws_the_same_scenes_at_every_resolution(cache: Path) -> None:
    low = load_dataset("synthetic:20", 32, cache_dir=cache).train.images.astype(float)
    high = load_dataset("synthetic:20", 64, cache_dir=cache).train.images.astype(float)
    pooled = high.reshape(20, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    unrelated = np.roll(low, 1, axis=0)  # the same images, paired with the wrong scene
    assert np.abs(pooled - low).mean() < 0.3 * np.abs(unrelated - low).mean()


# ---- folder ---------------------------------------------------------------------------------


def test_folder_loader_on_real_photos(cache: Path) -> None:
    dataset = load_dataset(f"folder:{SAMPLE}", 48, cache_dir=cache)
    assert dataset.class_names == tuple(str(d) for d in range(10))  # LICENSE beside the classes is ignored
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 60
    assert dataset.train.images.shape[1:] == (48, 48, 3)
    for split in (dataset.train, dataset.val, dataset.test):
        assert set(np.unique(split.labels)) == set(range(10))  # stratified: every class everywhere
    assert dataset.skipped == 0


@pytest.mark.skipif(not SHARED.is_dir(), reason="the full dataset lives in ../shared/data (not on every clone)")
def test_folder_loader_on_the_whole_shared_dataset(cache: Path) -> None:
    dataset = load_dataset(f"folder:{SHARED}", 32, cache_dir=cache)
    total = len(dataset.train) + len(dataset.val) + len(dataset.test)
    assert total == 2062 and dataset.num_classes == 10  # three of them are 3024 x 3024
    assert abs(len(dataset.train) / total - 0.7) < 0.01


def test_folder_with_split_folders_and_mixed_sizes(tmp_path: Path, cache: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for label in ("cat", "dog"):
            (tmp_path / "d" / split / label).mkdir(parents=True)
            for i in range(count):
                size = (int(rng.integers(20, 300)), int(rng.integers(20, 300)))
                Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / "d" / split / label / f"{i}.png")
    dataset = load_dataset(f"folder:{tmp_path / 'd'}", 32, cache_dir=cache)
    assert dataset.class_names == ("cat", "dog")
    assert len(dataset.test) == 4 and len(dataset.train) + len(dataset.val) == 12  # val split from train


def _two_classes(root: Path, per_class: int = 3) -> Path:
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8, 3), 50 * i, dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def test_unreadable_images_are_skipped_counted_and_warned_once(tmp_path: Path, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _two_classes(tmp_path / "d", per_class=6)
    (root / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "b" / "truncated.png").write_bytes(b"\x89PNG\r\n")
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(f"folder:{root}", 8, cache_dir=cache)
    assert dataset.skipped == 2
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 12
    warnings = [r for r in caplog.records if "could not be read" in r.getMessage()]
    assert len(warnings) == 1 and "skipped 2 of 14 images" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda root: None, r"dataset path '.*missing' does not exist"),
        (lambda root: (root / "only").mkdir(parents=True), r"needs one sub-folder per class and at least 2 classes, found only 'only'"),
        (lambda root: (_two_classes(root), (root / "c").mkdir()), r"class folder '.*c' has no images"),
        (lambda root: [(root / c).mkdir(parents=True) or (root / c / "x.jpg").write_bytes(b"junk") for c in "ab"],
         r"has no readable training images \(2 could not be read\)"),
        (lambda root: (root / "val" / "a").mkdir(parents=True), r"has val/ but no train/"),
    ],
    ids=["missing", "one-class", "empty-class", "all-unreadable", "no-train-split"],
)
def test_bad_folders(tmp_path: Path, cache: Path, setup, match: str) -> None:
    root = tmp_path / "missing"
    setup(root)
    with pytest.raises(PdsweepError, match=match):
        load_dataset(f"folder:{root}", 8, cache_dir=cache)


# ---- npz ------------------------------------------------------------------------------------


def _medmnist(path: Path, colour: bool, label_shape: str) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        shape = (n, 28, 28, 3) if colour else (n, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 255, shape, dtype=np.uint8)
        labels = np.arange(n) % 3
        arrays[f"{split}_labels"] = labels[:, None] if label_shape == "column" else labels
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(("colour", "label_shape"), [(False, "column"), (True, "flat")])
def test_npz_medmnist_layout(tmp_path: Path, cache: Path, colour: bool, label_shape: str) -> None:
    path = _medmnist(tmp_path / "m.npz", colour, label_shape)
    dataset = load_dataset(f"npz:{path}", 32, cache_dir=cache)
    assert dataset.num_classes == 3
    assert dataset.train.images.shape == (12, 32, 32, 3 if colour else 1) and len(dataset.test) == 4
    assert dataset.train.labels.tolist() == [i % 3 for i in range(12)]
    same = load_dataset(f"npz:{path}", 28, cache_dir=cache)  # no resize needed: stored as given
    raw = np.load(path)["train_images"]
    assert np.array_equal(same.train.images[..., 0], raw if raw.ndim == 3 else raw[..., 0])


def test_npz_without_expected_keys(tmp_path: Path, cache: Path) -> None:
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 8, 8), np.uint8), labels=np.zeros(2))
    with pytest.raises(PdsweepError, match=r"lacks train_images, train_labels, .*; it has images, labels"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}", 8, cache_dir=cache)


# ---- parquet --------------------------------------------------------------------------------


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_parquet_with_bytes_structs_split_column_and_text_labels(tmp_path: Path, cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 30
    table = pa.table({
        "img": [{"bytes": _png(i * 8), "path": f"{i}.png"} for i in range(rows)],  # Hugging Face's layout
        "y": ["benign" if i % 2 else "malignant" for i in range(rows)],
        "split": ["train"] * 20 + ["validation"] * 5 + ["test"] * 5,
    })
    pq.write_table(table, tmp_path / "d.parquet")
    dataset = load_dataset(f"parquet:{tmp_path / 'd.parquet'}?image=img&label=y", 16, cache_dir=cache)
    assert dataset.class_names == ("benign", "malignant")
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (20, 5, 5)
    assert dataset.train.labels.tolist() == [1 - i % 2 for i in range(20)]


def test_parquet_folder_with_split_files(tmp_path: Path, cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d").mkdir()
    for split, n in (("train", 10), ("test", 4)):
        pq.write_table(pa.table({"image": [_png(i) for i in range(n)], "label": [i % 2 for i in range(n)]}), tmp_path / "d" / f"{split}-0.parquet")
    dataset = load_dataset(f"parquet:{tmp_path / 'd'}", 12, cache_dir=cache)
    assert len(dataset.test) == 4 and len(dataset.train) + len(dataset.val) == 10


def test_parquet_without_the_named_columns(tmp_path: Path, cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"pixels": [_png(0)], "target": [0]}), tmp_path / "d.parquet")
    with pytest.raises(PdsweepError, match=r"has no column 'image', 'label'; its columns are pixels, target. Name them with parquet:PATH\?image=COL&label=COL"):
        load_dataset(f"parquet:{tmp_path / 'd.parquet'}", 8, cache_dir=cache)


# ---- split and cache ------------------------------------------------------------------------


def test_stratified_split_keeps_class_proportions() -> None:
    labels = np.array([0] * 100 + [1] * 20)
    train, val, test = stratified_split(labels, seed=0)
    assert (np.bincount(labels[train]).tolist(), np.bincount(labels[val]).tolist(), np.bincount(labels[test]).tolist()) == ([70, 14], [15, 3], [15, 3])
    assert len(set(train) | set(val) | set(test)) == 120


def _load_in_child(cache: str) -> int:
    return int(load_dataset("synthetic:40", 16, cache_dir=Path(cache)).train.images.sum())


def test_concurrent_builders_share_one_cache_entry(cache: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        sums = pool.map(_load_in_child, [str(cache)] * 2)
    assert sums[0] == sums[1]
    entries = list((cache / "datasets").glob("synthetic-*/16px"))
    assert len(entries) == 1 and not list((cache / "datasets").glob("*/.building-*"))


def test_parquet_split_files_beside_unsplit_ones_and_without_train(tmp_path: Path, cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(n: int) -> pa.Table:
        return pa.table({"image": [_png(i) for i in range(n)], "label": [i % 2 for i in range(n)]})

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(table(20), mixed / "val.parquet")
    pq.write_table(table(40), mixed / "data.parquet")  # no split in its name: training data
    dataset = load_dataset(f"parquet:{mixed}", 12, cache_dir=cache)
    assert len(dataset.val) == 20 and len(dataset.train) + len(dataset.test) == 40
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    pq.write_table(table(10), held_out / "val.parquet")
    pq.write_table(table(10), held_out / "test.parquet")
    with pytest.raises(PdsweepError, match=r"has test and val splits but no training data"):
        load_dataset(f"parquet:{held_out}", 12, cache_dir=cache)


def test_npz_that_is_not_an_archive(tmp_path: Path, cache: Path) -> None:
    np.save(tmp_path / "arr.npy", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(PdsweepError, match=r"is a single array, not a .npz archive"):
        load_dataset(f"npz:{tmp_path / 'arr.npy'}", 8, cache_dir=cache)


def test_too_few_images_for_a_split(tmp_path: Path, cache: Path) -> None:
    root = _two_classes(tmp_path / "d", per_class=2)
    with pytest.raises(PdsweepError, match=r"has no test images after splitting"):
        load_dataset(f"folder:{root}", 8, cache_dir=cache)


def test_spec_absolute_keeps_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert str(DatasetSpec.parse("parquet:data?image=img").absolute()) == f"parquet:{tmp_path / 'data'}?image=img"
    assert DatasetSpec.parse("synthetic:50").absolute() == DatasetSpec("synthetic", "50")
