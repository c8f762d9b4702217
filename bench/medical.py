"""What the medical-imaging path costs and changes (issue #29), on real images.

1. **Pixels keep their meaning.** Fashion-MNIST images (real, 28 px) of two classes that differ
   in shape, not brightness (pullover vs coat), written as an X-ray exporter writes them: 12-bit
   values in 16-bit PNGs, with a detector's offset (800 + 12 x the 8-bit value: 800..3860, every
   value above 255, as in the issue's mammograms). Each variant is trained the same way (a tiny ViT,
   fixed seeds) and tested:
   - the 8-bit originals (the reference);
   - what pdsweep read before #29 (PIL's ``convert("RGB")``, every value above 255 clipped),
     reproduced here from the same files;
   - pdsweep's decode now (the bits the dataset uses: 0..4095);
   - the same files mapped over the whole 0..65535 (the naive full range), for comparison;
   - 8-bit and 16-bit images take the same training settings and seeds.
2. **The bootstrap's cost.** The 95% interval of every test metric (1,000 resamples) that each
   completed trial now computes, by test-set size and classes.

``python bench/medical.py`` prints both tables (Markdown) for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import FASHION_MNIST, _idx  # noqa: E402

from pdsweep.config import Config  # noqa: E402
from pdsweep.objective import bootstrap_intervals  # noqa: E402
from pdsweep.space import TrainingSettings  # noqa: E402
from pdsweep.training.data import Dataset, Split, load_dataset  # noqa: E402
from pdsweep.training.loop import train  # noqa: E402

CLASSES = (2, 4)  # pullover, coat: the same brightness, another shape
OFFSET, GAIN = 800, 12  # 8-bit value v -> 800 + 12 v: 12-bit values, none below 256
SETTINGS = TrainingSettings(epochs=4, batch_size=64, warmup_epochs=1, precision="fp32", augment=False)


def _images(per_class: int) -> tuple[np.ndarray, np.ndarray]:
    images = _idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")
    labels = _idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")
    chosen = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in CLASSES])
    return images[chosen], np.array([CLASSES.index(int(label)) for label in labels[chosen]])


def _write(root: Path, images: np.ndarray, labels: np.ndarray, twelve_bit: bool) -> Path:
    for i, (image, label) in enumerate(zip(images, labels)):
        path = root / f"class{label}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(OFFSET + image.astype(np.uint16) * GAIN if twelve_bit else image).save(path)
    return root


def _clipped(dataset: Dataset) -> Dataset:
    """The dataset as pdsweep read 16-bit PNGs before #29: PIL's convert("RGB") clips at 255."""
    def old(split: Split) -> Split:
        values = np.asarray(split.images, dtype=np.float64) * (4095 / 65535)  # back to the files' values
        return replace(split, images=np.minimum(np.round(values), 255).astype(np.uint8))

    return replace(dataset, train=old(dataset.train), val=old(dataset.val), test=old(dataset.test))


def _full_range(dataset: Dataset) -> Dataset:
    """The same files mapped over 0..65535 (12-bit values then fill the darkest 6%)."""
    def naive(split: Split) -> Split:
        return replace(split, images=np.round(np.asarray(split.images, dtype=np.float64) * (4095 / 65535)).astype(np.uint16))

    return replace(dataset, train=naive(dataset.train), val=naive(dataset.val), test=naive(dataset.test))


def decoding(per_class: int, seeds: int) -> list[str]:
    images, labels = _images(per_class)
    lines = ["| images read as | mean pixel (0..1) | test accuracy, mean over seeds | seeds |", "| --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        eight = load_dataset(f"folder:{_write(root / 'eight', images, labels, False)}", 28, cache_dir=root / "cache")
        deep = load_dataset(f"folder:{_write(root / 'deep', images, labels, True)}", 28, cache_dir=root / "cache")
        variants = {"8-bit originals (reference)": eight, "12-bit in 16-bit PNG, before #29 (clipped at 255)": _clipped(deep),
                    "12-bit in 16-bit PNG, over 0..65535": _full_range(deep),
                    "12-bit in 16-bit PNG, pdsweep now (0..4095)": deep}
        for name, dataset in variants.items():
            top = 255 if dataset.train.images.dtype == np.uint8 else 65535
            mean = float(np.asarray(dataset.train.images, dtype=np.float64).mean() / top)
            accuracy = [train(Config("vit_micro", 28, 7, depth=2, num_classes=2), dataset, replace(SETTINGS, seed=s),
                              device="cpu").test_accuracy for s in range(seeds)]
            lines.append(f"| {name} | {mean:.3f} | {np.mean(accuracy):.1%} | {seeds} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def bootstrap_cost() -> list[str]:
    lines = ["| test rows | classes | 1,000-resample intervals of every metric, s |", "| --- | --- | --- |"]
    for n, classes in ((300, 2), (3_000, 2), (10_000, 2), (10_000, 10)):
        rng = np.random.default_rng(0)
        proba, labels = rng.dirichlet(np.ones(classes), n), rng.integers(0, classes, n)
        started = time.perf_counter()
        bootstrap_intervals(proba, labels)
        lines.append(f"| {n:,} | {classes} | {time.perf_counter() - started:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=1000, help="images per class (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per variant (default %(default)s)")
    args = parser.parse_args()
    print("\n".join(decoding(args.per_class, args.seeds)))
    print()
    print("\n".join(bootstrap_cost()))


if __name__ == "__main__":
    main()
