"""Decoding: one image (a file or its encoded bytes) to pixels at its full range, and resizing.
The one place decoding lives; :mod:`pdsweep.training.sources` calls it for every kind.

The rules: each image's values are mapped linearly from a range onto [0, 1] (black to white),
and clipped to it only where a window asks for it:

- 8-bit images (PIL modes 1, L, LA, P, RGB, RGBA, CMYK, ...): 0..255, kept as uint8 exactly as
  PIL gives them; greyscale (1, L, LA) as one channel, every other mode converted to RGB.
- 16-bit integer images (PNG, TIFF: PIL modes I;16, I;16B, ...): 0..2^n - 1, where n is the
  bits the dataset's values use (at least 8): X-ray and mammography exports keep 12-bit values
  (0..4095) in 16-bit files, and mapping those from 0..65535 would leave them in the darkest 6%.
  n comes from the largest value of all such images of the dataset (:func:`bits_in_use`,
  :func:`fit_bits`), so the same value is the same grey in every one of them (other images of
  a mixed dataset keep their own rules). An ``npz`` dataset's uint16 arrays are read the same
  way, n from the archive's largest value. Without a window only. Mode I (32-bit integers, how older Pillow opens 16-bit PNGs):
  the same where every value lies in 0..65535, else the image's own min..max.
- Float images (TIFF, mode F): the image's own min..max (a constant image is black), so each
  image is scaled on its own; a window gives one fixed mapping for the whole dataset.
- DICOM (``.dcm`` files, or bytes with the ``DICM`` marker; through pydicom, ``pip install
  'pdsweep[dicom]'``): the modality rescale first (RescaleSlope and RescaleIntercept, or a
  Modality LUT), then the file's VOI LUT or WindowCenter/WindowWidth where it has one (pydicom's
  ``apply_voi_lut``). The range: a VOI LUT's output bits (0..2^n - 1), else BitsStored's range
  (0..2^BitsStored - 1, or signed where PixelRepresentation is 1) through the rescale, which is
  also the range pydicom's windowing maps into. MONOCHROME1 is inverted (1 - value), so high is
  bright as in MONOCHROME2. RGB DICOMs (SamplesPerPixel 3) read as RGB: 8-bit as uint8, deeper
  ones over 0..2^BitsStored - 1. A multi-frame DICOM is refused.
- A window (``?window=LOW,HIGH`` on the dataset, ``--window``): LOW..HIGH in the image's own
  values (a DICOM's after the rescale, e.g. Hounsfield units), values outside clipped to it. It
  applies to every image of the dataset, 8-bit ones included, and replaces a DICOM's own VOI.

Pixels leave :func:`read_image` as (H, W, C) arrays, C 1 or 3: uint8 (8-bit images without a
window) or float32 in [0, 1]. :func:`square` resizes them (shorter side to R, antialiased
bicubic, centre crop; floats in float) and stores floats as uint16 (0..65535 for [0, 1]), so a
12-bit signal keeps its levels. :func:`stack` gives a dataset one form: uint16 if any image is,
3 channels if any image has them.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pdsweep.errors import PdsweepError

log = logging.getLogger(__name__)

DICOM_EXTRA = "pip install 'pdsweep[dicom]'"
_UINT16_MAX = 65535
_GREY_MODES = {"1", "L", "LA", "La"}


@dataclass(frozen=True)
class Window:
    """Pixel values ``low..high`` shown black..white; values outside are clipped to it."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise PdsweepError(f"a window needs finite LOW < HIGH, but got {self.low:g},{self.high:g}; "
                               "give it as LOW,HIGH such as 0,4095.")

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"LOW,HIGH"``, e.g. ``"-1000,400"``."""
        try:
            low, high = (float(part) for part in text.split(","))
        except ValueError:
            raise PdsweepError(f"a window takes LOW,HIGH (two numbers, LOW < HIGH) such as 0,4095, got {text!r}.") from None
        return cls(low, high)


@dataclass(frozen=True)
class Decoded:
    """One image's pixels: (H, W, C), C 1 or 3; uint8 as stored, or float32 in [0, 1]."""

    pixels: np.ndarray
    self_scaled: bool = False  # mapped by its own min..max (a float image without a window)
    raw_max: int | None = None  # a 16-bit integer image read over 0..65535 (no window): its largest value


def read_image(item: Path | str | bytes, window: Window | None = None) -> Decoded:
    """A path or encoded bytes, decoded by the rules above. Raises OSError or ValueError for an
    unreadable image, :class:`PdsweepError` for one pdsweep refuses (multi-frame DICOM, no pydicom)."""
    if _is_dicom(item):
        return _read_dicom(item, window)
    from PIL import Image

    with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as image:
        if image.mode.startswith("I;16") or image.mode == "I":
            values = np.asarray(image)
            own = 0 <= values.min(initial=0) and values.max(initial=0) <= _UINT16_MAX
            decoded = _mapped(values.astype(np.float32)[..., None], window, (0, _UINT16_MAX) if own else None)
            return replace(decoded, raw_max=int(values.max(initial=0))) if own and window is None else decoded
        if image.mode == "F":
            return _mapped(np.asarray(image, dtype=np.float32)[..., None], window, None)
        if image.mode in _GREY_MODES:
            return from_array(np.asarray(image.convert("L"))[..., None], window)
        return from_array(np.asarray(image.convert("RGB")), window)


def from_array(pixels: np.ndarray, window: Window | None = None) -> Decoded:
    """(H, W, C) uint8 (0..255) or uint16 (0..65535) pixels, as an image file holding them decodes."""
    if pixels.dtype == np.uint8 and window is None:
        return Decoded(pixels)
    full = (0, np.iinfo(pixels.dtype).max)
    return _mapped(pixels.astype(np.float32), window, full)


def _mapped(values: np.ndarray, window: Window | None, full: tuple[float, float] | None) -> Decoded:
    """``values`` mapped from the window, else ``full``, else their own finite min..max, to [0, 1]."""
    if window is not None:
        low, high = window.low, window.high
    elif full is not None:
        low, high = full
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    scaled = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 1).astype(np.float32)
    return Decoded(scaled, self_scaled=window is None and full is None)


# ---- DICOM ------------------------------------------------------------------------------------


def _is_dicom(item: Path | str | bytes) -> bool:
    if isinstance(item, bytes):
        return item[128:132] == b"DICM"
    return Path(item).suffix.lower() == ".dcm"


def _read_dicom(item: Path | str | bytes, window: Window | None) -> Decoded:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise PdsweepError(f"DICOM images need pydicom, which is not installed; {DICOM_EXTRA}.") from None
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    where = "DICOM bytes" if isinstance(item, bytes) else f"DICOM {str(item)!r}"
    try:
        ds = pydicom.dcmread(io.BytesIO(item) if isinstance(item, bytes) else item)
    except InvalidDicomError as error:
        raise OSError(f"{where}: {error}") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise PdsweepError(f"{where} has {frames} frames; pdsweep reads single-frame images: save each frame "
                           "as its own file, or remove it.")
    try:
        stored = ds.pixel_array
    except Exception as error:  # no PixelData, or a compressed one without its decoder
        raise OSError(f"{where}: pixel data cannot be decoded ({error})") from None
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        if stored.dtype == np.uint8:
            return from_array(stored, window)
        return _mapped(stored.astype(np.float32), window, (0, 2 ** int(ds.BitsStored) - 1))
    values = apply_modality_lut(stored, ds)
    full = _rescaled_range(ds)
    if window is None and ds.get("VOILUTSequence"):
        values, full = apply_voi_lut(values, ds), (0, 2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    elif window is None and "WindowCenter" in ds:
        values = apply_voi_lut(values, ds)
    decoded = _mapped(np.asarray(values, dtype=np.float32)[..., None], window, full)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        return Decoded(1 - decoded.pixels)
    return decoded


def _rescaled_range(ds: Any) -> tuple[float, float]:
    """BitsStored's range through the modality rescale (the range pydicom's windowing maps into).
    ``ds``: a ``pydicom.Dataset``."""
    if ds.get("ModalityLUTSequence"):
        return 0, 2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    bits = int(ds.BitsStored)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


# ---- resizing and storage ---------------------------------------------------------------------


def square(decoded: Decoded, resolution: int) -> np.ndarray:
    """(H, W, C) -> (R, R, C): shorter side to R (antialiased bicubic), centre crop. uint8 stays
    uint8; floats are resized in float, clipped to [0, 1] and stored as uint16."""
    from PIL import Image

    pixels = decoded.pixels
    height, width, channels = pixels.shape
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    box = (left, top, left + resolution, top + resolution)
    if pixels.dtype == np.uint8:
        planes = [Image.fromarray(pixels[..., 0] if channels == 1 else pixels)]  # L or RGB, resized as one
    else:
        planes = [Image.fromarray(np.ascontiguousarray(pixels[..., c])) for c in range(channels)]  # mode F each
    out = []
    for plane in planes:
        if size != plane.size:
            plane = plane.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        out.append(np.asarray(plane.crop(box)))
    if pixels.dtype == np.uint8:
        return out[0].reshape(resolution, resolution, channels)
    return to_uint16(np.stack(out, axis=-1))


def to_uint16(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] (clipped to it) -> uint16 0..65535."""
    return np.round(np.clip(values, 0, 1) * _UINT16_MAX).astype(np.uint16)


def stack(images: list[np.ndarray], resolution: int) -> np.ndarray:
    """(R, R, C) images -> (n, R, R, C) in one form (:func:`common_form`); (0, R, R, 1) uint8 if none."""
    if not images:
        return np.zeros((0, resolution, resolution, 1), dtype=np.uint8)
    return np.stack(common_form(images))


def common_form(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Arrays (..., C) in one dtype and channel count: uint16 if any non-empty one is (uint8 x 257,
    the same [0, 1]), 3 channels if any non-empty one has them (grey repeated)."""
    present = [a for a in arrays if a.size]
    deep = any(a.dtype == np.uint16 for a in present)
    channels = 3 if any(a.shape[-1] == 3 for a in present) else 1
    out = []
    for array in arrays:
        if deep and array.dtype == np.uint8:
            array = array.astype(np.uint16) * 257
        if array.shape[-1] != channels:
            array = np.repeat(array, channels, axis=-1)
        out.append(array)
    return out


def bits_in_use(raw_max: int) -> int:
    """The bits the largest value of a dataset's 16-bit integer images needs (at least 8)."""
    bits = max(8, int(raw_max).bit_length())
    if bits < 16:
        log.info("16-bit images with values up to %d: read as %d-bit (0..%d is black..white).", raw_max, bits, 2**bits - 1)
    return bits


def fit_bits(array: np.ndarray, bits: int, rows: np.ndarray | None = None) -> np.ndarray:
    """A uint16 array of 16-bit integer images read over 0..65535, its ``rows`` (all if None)
    remapped over 0..2^bits - 1 (16: unchanged)."""
    if bits >= 16 or not array.size:
        return array
    chosen = slice(None) if rows is None else rows
    out = np.array(array)
    scaled = np.asarray(array[chosen], dtype=np.float64) * (_UINT16_MAX / (2**bits - 1))
    out[chosen] = np.round(np.minimum(scaled, _UINT16_MAX)).astype(np.uint16)
    return out


def warn_self_scaled(count: int, total: int) -> None:
    """Say once per dataset that images were each scaled by their own min..max."""
    if count:
        log.warning("%d of %d images (float, or integers outside 0..65535) were each mapped from their own "
                    "min..max to black..white; give a window (?window=LOW,HIGH on the dataset, or --window) "
                    "for one fixed mapping.", count, total)
