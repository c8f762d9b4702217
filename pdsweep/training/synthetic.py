"""The built-in synthetic dataset: no download, deterministic by seed, any resolution.

Each image is a smooth, tinted background with two soft distractor blobs and eight small bright
"lesions". The class is the lesions' shape: a filled disk, a ring, an upright cross or a
diagonal cross. Shapes are drawn in continuous image coordinates (radius 4-6% of the image) and
rendered at the requested resolution with supersampling, so the same seed gives the same scenes
at every resolution, and the class signal sits in small local detail: a ring's hole or a
cross's orientation spans a few pixels at 64 px and blurs at 32 px, as a lesion's texture does
in a downsampled scan. Measured with ``vit_micro`` (4 blocks) for 8 epochs on 3,000 images:
78% validation accuracy at 64 px / patch 8, 74% at 32 px / patch 4 (same token count), chance
at 32 px / patch 8 (chance is 25%).
"""

from __future__ import annotations

import numpy as np

VERSION = 2  # part of the dataset cache key: bump when the images change
CLASS_NAMES = ("disk", "ring", "cross", "x-cross")
LESIONS_PER_IMAGE = 8
BLOBS_PER_IMAGE = 2
_SUPERSAMPLE = 2


def render(count: int, resolution: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images -> ((count, R, R, 3) uint8, (count,) int64 labels), balanced classes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(CLASS_NAMES)
    rng.shuffle(labels)
    images = np.empty((count, resolution, resolution, 3), dtype=np.uint8)
    size = resolution * _SUPERSAMPLE
    axis = ((np.arange(size) + 0.5) / size).astype(np.float32)  # pixel centres in [0, 1]
    for i, label in enumerate(labels):
        scene = _scene(rng, int(label))
        image = _draw(scene, axis)  # (S, S, 3)
        image = image.reshape(resolution, _SUPERSAMPLE, resolution, _SUPERSAMPLE, 3).mean(axis=(1, 3))
        image += np.random.default_rng(scene["noise_seed"]).normal(0, 0.03, image.shape).astype(np.float32)
        images[i] = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def _scene(rng: np.random.Generator, label: int) -> dict:
    """Every random number of one image, drawn in a fixed order (independent of resolution)."""
    return {
        "label": label,
        "tint": rng.uniform(0.25, 0.65, 3),
        "waves": [(rng.uniform(1, 4, 2), rng.uniform(0, 2 * np.pi), rng.uniform(0.04, 0.1)) for _ in range(3)],
        "blobs": [(rng.uniform(0.1, 0.9, 2), rng.uniform(0.06, 0.15), rng.uniform(-0.25, 0.25, 3)) for _ in range(BLOBS_PER_IMAGE)],
        "lesions": [
            (rng.uniform(0.08, 0.92, 2), rng.uniform(0.04, 0.06), rng.uniform(-0.2, 0.2), rng.uniform(0.3, 0.45))
            for _ in range(LESIONS_PER_IMAGE)
        ],
        "noise_seed": int(rng.integers(2**31)),
    }


def _draw(scene: dict, axis: np.ndarray) -> np.ndarray:
    """Render one scene, without its pixel noise, on the grid ``axis`` (S,) -> (S, S, 3)."""
    image = np.broadcast_to(scene["tint"].astype(np.float32), (len(axis), len(axis), 3)).copy()
    for (fy, fx), phase, amplitude in scene["waves"]:
        # sin(a + b) = sin a cos b + cos a sin b: two outer products instead of S^2 sines.
        a, b = 2 * np.pi * fy * axis + phase, 2 * np.pi * fx * axis
        wave = np.outer(np.sin(a), np.cos(b)) + np.outer(np.cos(a), np.sin(b))
        image += amplitude * wave[..., None]
    for (cy, cx), radius, colour in scene["blobs"]:
        gy, gx = (np.exp(-((axis - c) ** 2) / (2 * radius**2)) for c in (cy, cx))
        image += colour * np.outer(gy, gx)[..., None]  # a Gaussian is separable
    for (cy, cx), radius, angle, contrast in scene["lesions"]:
        # Only the lesion's bounding box can change.
        rows = slice(*np.searchsorted(axis, [cy - 1.5 * radius, cy + 1.5 * radius]))
        cols = slice(*np.searchsorted(axis, [cx - 1.5 * radius, cx + 1.5 * radius]))
        dy, dx = np.meshgrid(axis[rows] - cy, axis[cols] - cx, indexing="ij")
        image[rows, cols] += (contrast * _shape(scene["label"], dy, dx, radius, angle))[..., None]
    return image


def _shape(label: int, dy: np.ndarray, dx: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """A 0/1 mask of one lesion centred at (0, 0)."""
    r = np.hypot(dy, dx)
    if label == 0:  # disk
        return (r < radius).astype(float)
    if label == 1:  # ring: the hole is about a third of the lesion
        return ((r < radius) & (r > 0.55 * radius)).astype(float)
    theta = angle + (np.pi / 4 if label == 3 else 0.0)  # cross, or the cross turned 45 degrees
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    arm = 0.3 * radius
    inside = (np.abs(u) < radius) & (np.abs(v) < radius)
    return (inside & ((np.abs(u) < arm) | (np.abs(v) < arm))).astype(float)
