"""Pixels keep their meaning: 16-bit, float and DICOM images at their full range
(:mod:`pdsweep.training.decode`), windows, and greyscale datasets stored in one channel."""

from __future__ import annotations

import io
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pdsweep.config import Config
from pdsweep.errors import PdsweepError
from pdsweep.space import TrainingSettings
from pdsweep.training.augment import normalize, to_float
from pdsweep.training.data import load_dataset
from pdsweep.training.decode import Window, from_array, read_image, square
from pdsweep.training.loop import train
from conftest import assert_one_line_error

FAST = TrainingSettings(epochs=6, batch_size=16, optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=1,
                        precision="fp32", augment=False)
TRAIN = ("train", "--model", "vit_micro", "--resolution", "16", "--patch-size", "8", "--depth", "1", "--epochs", "1",
         "--device", "cpu")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)  # uint16 -> mode I;16, float32 -> mode F
    return path


# ---- resizing ---------------------------------------------------------------------------------


def test_square_keeps_the_centre() -> None:
    wide = np.zeros((10, 30, 3), dtype=np.uint8)
    wide[:, 10:20] = 255  # a white centre third
    out = square(from_array(wide), 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8 and out.mean() > 240


def test_deep_images_are_resized_in_float_with_the_same_geometry() -> None:
    wide = np.zeros((10, 30, 1), dtype=np.uint16)
    wide[:, 10:20] = 4000  # a bright centre third, far above 255
    out = square(from_array(wide), 10)
    assert out.shape == (10, 10, 1) and out.dtype == np.uint16
    assert abs(int(np.median(out)) - 4000) <= 1 and out.max() < 4100  # kept, not clipped to 255 or to white


# ---- 8-bit images: as before ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "LA", "1", "P", "RGB", "RGBA"])
def test_8bit_images_decode_as_pil_converts_them(mode: str) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pixels = read_image(buffer.getvalue()).pixels
    grey = mode in ("L", "LA", "1")
    expected = np.asarray(image.convert("L"))[..., None] if grey else np.asarray(image.convert("RGB"))
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, expected)
    # A grey image resized in one channel gives what each channel of its RGB copy gives (the old path).
    rgb = square(from_array(np.asarray(image.convert("RGB"))), 6)
    assert np.array_equal(np.repeat(square(from_array(pixels), 6), 3 // pixels.shape[-1], axis=-1), rgb)


# ---- 16-bit and float images --------------------------------------------------------------------


def _xray(label: int, rng: np.random.Generator, levels: tuple[int, int] = (2000, 3000), size: int = 32) -> np.ndarray:
    """A 16-bit image, every value above 255: a background near 1000 and a 12 px square at a
    random place, ``levels[label]`` bright."""
    image = rng.integers(900, 1100, (size, size)).astype(np.uint16)
    x, y = rng.integers(0, size - 12, 2)
    image[y : y + 12, x : x + 12] = levels[label]
    return image


@pytest.mark.parametrize(("levels", "window", "bits"), [((2000, 3000), "", 12), ((3000, 30000), "", 15),
                                                       ((2000, 3000), "?window=0,4095", None)],
                         ids=["12-bit", "15-bit", "12-bit-windowed"])
def test_16bit_png_folder_trains(tmp_path: Path, cache: Path, levels: tuple[int, int], window: str,
                                 bits: int | None) -> None:
    """Fails on the old decode (PIL's convert("RGB")), which clipped every value to 255: every
    image was white and the model at chance (the first assertion shows it). 12-bit values (an
    X-ray export's) are read over 0..4095, the bits the dataset uses, not 0..65535, where they
    would fill only the darkest 6%; a window maps them as it says."""
    rng = np.random.default_rng(0)
    for label in (0, 1):
        for i in range(100):
            _save(tmp_path / "d" / f"class{label}" / f"{i}.png", _xray(label, rng, levels))
    with Image.open(tmp_path / "d" / "class0" / "0.png") as image:
        assert image.mode == "I;16" and (np.asarray(image.convert("RGB")) == 255).all()  # what the old code saw
    dataset = load_dataset(f"folder:{tmp_path / 'd'}{window}", 32, cache_dir=cache)
    assert dataset.train.images.dtype == np.uint16 and dataset.train.images.shape[1:] == (32, 32, 1)
    if bits is not None:  # 32 px: no resize, so the stored values are the file's, over 0..2^bits - 1
        stored = np.concatenate([s.images.ravel() for s in (dataset.train, dataset.val, dataset.test)])
        files = np.concatenate([np.asarray(Image.open(f)).ravel() for f in sorted((tmp_path / "d").rglob("*.png"))])
        assert sorted(np.unique(stored)) == sorted(np.unique(np.round(files * (65535 / (2**bits - 1))).astype(np.uint16)))
    result = train(Config("vit_micro", 32, 8, depth=2, num_classes=2), dataset, FAST, device="cpu")
    assert result.test_accuracy > 0.9


def test_16bit_and_float_tiffs_read_to_the_documented_ranges(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    deep = rng.integers(0, 65536, (7, 11)).astype(np.uint16)
    floats = rng.normal(-3.0, 50.0, (7, 11)).astype(np.float32)
    decoded = read_image(_save(tmp_path / "deep.tif", deep))
    assert np.allclose(decoded.pixels[..., 0], deep / 65535, atol=1e-7) and not decoded.self_scaled
    assert np.array_equal(square(decoded, 7)[..., 0], deep[:, 2:9])  # native height: stored exactly
    decoded = read_image(_save(tmp_path / "float.tif", floats))
    reference = (floats - floats.min()) / (floats.max() - floats.min())  # the image's own min..max
    assert np.allclose(decoded.pixels[..., 0], reference, atol=1e-6) and decoded.self_scaled
    windowed = read_image(tmp_path / "float.tif", Window(-20.0, 40.0))
    assert np.allclose(windowed.pixels[..., 0], np.clip((floats + 20) / 60, 0, 1), atol=1e-6) and not windowed.self_scaled


def test_a_float_folder_warns_once_that_a_window_fixes_the_mapping(tmp_path: Path, cache: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(2)
    for label in ("a", "b"):
        for i in range(7):
            _save(tmp_path / "d" / label / f"{i}.tif", rng.normal(0, 1, (8, 8)).astype(np.float32))
    with caplog.at_level(logging.WARNING):
        load_dataset(f"folder:{tmp_path / 'd'}", 8, cache_dir=cache)
        load_dataset(f"folder:{tmp_path / 'd'}?window=-2,2", 8, cache_dir=cache)
    warnings = [r.getMessage() for r in caplog.records if "own min..max" in r.getMessage()]
    assert len(warnings) == 1 and "14 of 14 images" in warnings[0] and "?window=LOW,HIGH" in warnings[0]


def test_a_window_changes_the_arrays_as_documented(tmp_path: Path, cache: Path) -> None:
    rng = np.random.default_rng(3)
    for label in (0, 1):
        for i in range(7):
            _save(tmp_path / "d" / str(label) / f"{i}.png", _xray(label, rng, size=16))
    plain = load_dataset(f"folder:{tmp_path / 'd'}", 16, cache_dir=cache)
    windowed = load_dataset(f"folder:{tmp_path / 'd'}?window=1000,3000", 16, cache_dir=cache)
    # The stored values (16 px: no resize), read over the 12 bits the files use, back in file units.
    assert plain.train.images.max() > 4095
    raw = plain.train.images.astype(np.float64) * (4095 / 65535)
    expected = np.round(np.clip((raw - 1000) / 2000, 0, 1) * 65535).astype(np.uint16)
    assert np.abs(windowed.train.images.astype(int) - expected).max() <= 1  # the 12-bit remap rounds once more
    assert len(list((cache / "datasets").iterdir())) == 2  # the window is part of the cache key


def test_npz_keeps_one_channel_and_takes_uint16(tmp_path: Path, cache: Path) -> None:
    rng = np.random.default_rng(4)
    arrays = {}
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 65536, (n, 12, 12)).astype(np.uint16)
        arrays[f"{split}_labels"] = np.arange(n) % 2
    np.savez(tmp_path / "m.npz", **arrays)
    same = load_dataset(f"npz:{tmp_path / 'm.npz'}", 12, cache_dir=cache)
    assert same.train.images.dtype == np.uint16 and np.array_equal(same.train.images[..., 0], arrays["train_images"])
    resized = load_dataset(f"npz:{tmp_path / 'm.npz'}", 6, cache_dir=cache)
    assert resized.test.images.shape == (4, 6, 6, 1) and resized.test.images.dtype == np.uint16
    # 12-bit values in uint16 arrays: read over 0..4095, as 16-bit files of them are.
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] //= 16
    np.savez(tmp_path / "twelve.npz", **arrays)
    twelve = load_dataset(f"npz:{tmp_path / 'twelve.npz'}", 12, cache_dir=cache)
    expected = np.round(arrays["train_images"] * (65535 / 4095)).astype(np.uint16)
    assert np.array_equal(twelve.train.images[..., 0], expected)


def test_a_stray_8bit_image_leaves_the_16bit_ones_their_range(tmp_path: Path, cache: Path) -> None:
    """One 8-bit PNG among 12-bit ones: the 12-bit images are still read over 0..4095, the 8-bit
    one over 0..255; neither is darkened for the other."""
    for label in (0, 1):
        for i in range(7):
            _save(tmp_path / "d" / str(label) / f"{i}.png", np.full((8, 8), 1000 + 3000 * label, dtype=np.uint16))
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(tmp_path / "d" / "0" / "stray.png")
    dataset = load_dataset(f"folder:{tmp_path / 'd'}", 8, cache_dir=cache)
    values = {int(v) for s in (dataset.train, dataset.val, dataset.test) for v in np.unique(s.images)}
    assert values == {round(1000 * 65535 / 4095), round(4000 * 65535 / 4095), 128 * 257}


# ---- one channel ------------------------------------------------------------------------------


@pytest.mark.parametrize(("modes", "channels"), [(["L", "L"], 1), (["RGB", "RGB"], 3), (["L", "RGB"], 3)])
def test_greyscale_datasets_are_cached_in_one_channel(tmp_path: Path, cache: Path, modes: list[str],
                                                      channels: int) -> None:
    rng = np.random.default_rng(5)
    for label, mode in zip("ab", modes):
        for i in range(7):
            _save(tmp_path / "d" / label / f"{i}.png", rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
            Image.open(tmp_path / "d" / label / f"{i}.png").convert(mode).save(tmp_path / "d" / label / f"{i}.png")
    dataset = load_dataset(f"folder:{tmp_path / 'd'}", 8, cache_dir=cache)
    assert dataset.train.images.shape[1:] == (8, 8, channels) and dataset.train.images.dtype == np.uint8
    model_input = normalize(to_float(torch.from_numpy(np.array(dataset.train.images[:4]))))
    assert model_input.shape == (4, 3, 8, 8)


def test_mixed_bit_depths_share_uint16() -> None:
    from pdsweep.training.decode import common_form

    eight, sixteen = np.full((2, 2, 1), 255, np.uint8), np.full((2, 2, 3), 65535, np.uint16)
    out = common_form([eight, sixteen, np.zeros((0, 2, 2, 1), np.uint8)])
    assert [a.dtype for a in out] == [np.uint16] * 3 and [a.shape[-1] for a in out] == [3, 3, 3]
    assert (out[0] == 65535).all()  # 8-bit white is 16-bit white


# ---- DICOM ------------------------------------------------------------------------------------


def _dicom(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", window: tuple[float, float] | None = None,
           frames: int = 1) -> Path:
    """A 12-bit DICOM (BitsStored 12 of 16, RescaleSlope 2, RescaleIntercept -100), written with pydicom."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = stored.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def pydicom() -> None:
    pytest.importorskip("pydicom", minversion="3.0")  # the tests write files with pydicom 3's API


@pytest.mark.usefixtures("pydicom")
@pytest.mark.parametrize(
    ("photometric", "file_window", "user_window"),
    [("MONOCHROME2", None, None), ("MONOCHROME1", None, None), ("MONOCHROME2", (2000.0, 1001.0), None),
     ("MONOCHROME1", (2000.0, 1001.0), (0.0, 4000.0))],
    ids=["mono2", "mono1-inverted", "file-window", "user-window-wins"],
)
def test_dicom_reads_to_the_documented_values(tmp_path: Path, photometric: str, file_window: tuple[float, float] | None,
                                              user_window: tuple[float, float] | None) -> None:
    stored = np.random.default_rng(6).integers(0, 4096, (9, 7)).astype(np.uint16)
    path = _dicom(tmp_path / "x.dcm", stored, photometric, file_window)
    values = stored * 2.0 - 100  # the modality rescale
    if user_window is not None:
        low, high = user_window
        expected = np.clip((values - low) / (high - low), 0, 1)
    elif file_window is not None:  # DICOM's linear VOI function, onto the same output range
        center, width = file_window
        expected = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    else:  # BitsStored's range through the rescale: -100..8090
        expected = (values + 100) / (4095 * 2)
    if photometric == "MONOCHROME1":
        expected = 1 - expected
    decoded = read_image(path, Window(*user_window) if user_window else None)
    assert decoded.pixels.shape == (9, 7, 1) and np.allclose(decoded.pixels[..., 0], expected, atol=1e-6)
    assert np.allclose(read_image(path.read_bytes(), Window(*user_window) if user_window else None).pixels, decoded.pixels)


def _dicom_folder(root: Path, per_class: int = 8) -> Path:
    rng = np.random.default_rng(7)
    for label in (0, 1):
        for i in range(per_class):
            _dicom(root / f"class{label}" / f"{i}.dcm", _xray(label, rng, size=16))
    return root


@pytest.mark.usefixtures("pydicom")
def test_a_dicom_folder_loads_and_trains(tmp_path: Path, cache: Path) -> None:
    dataset = load_dataset(f"folder:{_dicom_folder(tmp_path / 'd')}", 16, cache_dir=cache)
    images = dataset.train.images
    assert images.shape[1:] == (16, 16, 1) and images.dtype == np.uint16 and len(np.unique(images)) > 100
    result = train(Config("vit_micro", 16, 8, depth=1, num_classes=2), dataset, replace(FAST, epochs=1), device="cpu")
    assert len(result.history) == 1 and np.isfinite(result.history[0].train_loss)


@pytest.mark.usefixtures("pydicom")
def test_a_multi_frame_dicom_is_refused_in_one_line(tmp_path: Path, cache: Path) -> None:
    root = _dicom_folder(tmp_path / "d", per_class=7)
    _dicom(root / "class0" / "cine.dcm", np.zeros((2, 16, 16), np.uint16), frames=2)
    with pytest.raises(PdsweepError, match=r"DICOM '.*cine\.dcm' has 2 frames; pdsweep reads single-frame images") as error:
        load_dataset(f"folder:{root}", 16, cache_dir=cache)
    assert "\n" not in str(error.value)


@pytest.mark.usefixtures("pydicom")
def test_without_pydicom_a_dicom_folder_names_the_extra(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                        cli) -> None:  # noqa: ANN001
    root = _dicom_folder(tmp_path / "d", per_class=7)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if not installed
    with pytest.raises(PdsweepError, match=r"DICOM images need pydicom, which is not installed; pip install 'pdsweep\[dicom\]'"):
        load_dataset(f"folder:{root}", 16, cache_dir=cache)
    result = cli(*TRAIN, "--dataset", f"folder:{root}", "--cache-dir", cache)
    assert_one_line_error(result, "pip install 'pdsweep[dicom]'")


# ---- --window ---------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["5,5", "a,b", "9,1", "1", "nan,1", "1,2,3"])
@pytest.mark.parametrize("command", ["train", "run"])
def test_bad_window_flags_exit_2_in_one_line(tmp_path: Path, cli, command: str, window: str) -> None:  # noqa: ANN001
    args = [*TRAIN, "--cache-dir", tmp_path / "cache"] if command == "train" else ["run", "--runs-dir", tmp_path / "runs"]
    result = cli(*args, "--dataset", f"folder:{tmp_path}", "--window", window)
    assert_one_line_error(result, "--window")
    assert sorted(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("dataset", "fragment"),
    [("synthetic:40", "synthetic images are 8-bit RGB and take no window"), ("folder:{}?window=0,9", "keep one")],
)
def test_window_flags_that_do_not_fit_the_dataset(tmp_path: Path, cli, dataset: str, fragment: str) -> None:  # noqa: ANN001
    result = cli(*TRAIN, "--dataset", dataset.format(tmp_path), "--window", "0,4095", "--cache-dir", tmp_path / "cache")
    assert_one_line_error(result, fragment)


def test_window_option_is_checked_when_the_dataset_is_parsed(tmp_path: Path) -> None:
    with pytest.raises(PdsweepError, match=r"dataset folder:.*\?window=3,1: a window needs finite LOW < HIGH"):
        load_dataset(f"folder:{tmp_path}?window=3,1", 8, cache_dir=tmp_path / "cache")


def test_window_flag_goes_into_the_dataset_spec(tmp_path: Path) -> None:
    from pdsweep.cli._base import dataset_with_window

    assert dataset_with_window(f"folder:{tmp_path}", "0,4095") == f"folder:{tmp_path}?window=0,4095"
    assert dataset_with_window("parquet:p?image=img", "-1000,400") == "parquet:p?image=img&window=-1000,400"
    assert dataset_with_window("synthetic", None) == "synthetic"
