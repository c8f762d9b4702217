"""Real datasets for the benchmarks, prepared offline from what is on this machine.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package (``apt-get install
dataset-fashion-mnist``: /usr/share/datasets/fashion-mnist/, IDX files, MIT licence). It is
converted once into pdsweep's ``npz`` layout (MedMNIST's: train/val/test images and labels),
with the last 5,000 training images as the validation split.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SIGN_LANGUAGE_DIGITS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sign-language-digits"


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist_npz(cache: Path) -> Path:
    """The npz file for ``--dataset npz:PATH``; built on first use."""
    out = cache / "fashion-mnist.npz"
    if out.is_file():
        return out
    if not FASHION_MNIST.is_dir():
        raise SystemExit("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
    train_images, train_labels = _idx(FASHION_MNIST / "train-images-idx3-ubyte.gz"), _idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        train_images=train_images[:55_000], train_labels=train_labels[:55_000],
        val_images=train_images[55_000:], val_labels=train_labels[55_000:],
        test_images=_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz"),
        test_labels=_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz"),
    )
    return out
