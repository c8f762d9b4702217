from __future__ import annotations

import torch

from pdsweep.training.augment import augment, normalize, to_float


def _images(batch: int = 6, size: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return to_float(torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8))


def test_to_float_and_normalize_shapes() -> None:
    images = _images()
    assert images.shape == (6, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    grey = torch.full((1, 3, 2, 2), 0.5)
    expected = torch.tensor([(0.5 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.5 - 0.406) / 0.225])
    assert torch.allclose(normalize(grey)[0, :, 0, 0], expected)


def test_augment_is_seeded_per_generator_and_per_image() -> None:
    images = _images()
    one = augment(images, torch.Generator().manual_seed(1))
    same = augment(images, torch.Generator().manual_seed(1))
    other = augment(images, torch.Generator().manual_seed(2))
    assert torch.equal(one, same) and not torch.equal(one, other)
    assert one.shape == images.shape and 0 <= one.min() and one.max() <= 1
    # Each image gets its own draw: the same image repeated comes out differently.
    repeated = augment(images[:1].repeat(4, 1, 1, 1), torch.Generator().manual_seed(3))
    assert not torch.equal(repeated[0], repeated[1])


def test_without_crop_rotation_or_jitter_only_flips_remain() -> None:
    images = _images(batch=32)
    out = augment(images, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0), max_degrees=0.0, jitter=0.0)
    for original, result in zip(images, out):
        assert torch.allclose(result, original, atol=1e-5) or torch.allclose(result, original.flip(-1), atol=1e-5)
    flipped = sum(not torch.allclose(r, o, atol=1e-5) for o, r in zip(images, out))
    assert 5 < flipped < 27  # about half


def test_to_float_scales_uint16_and_repeats_a_grey_channel() -> None:
    grey = torch.randint(0, 256, (2, 4, 4, 1), dtype=torch.uint8)
    assert torch.equal(to_float(grey), to_float(grey.expand(-1, -1, -1, 3)))  # as its RGB copy would give
    deep = torch.tensor([0, 4095, 65535], dtype=torch.int32).to(torch.uint16).view(1, 1, 3, 1)
    out = to_float(deep)
    assert out.shape == (1, 3, 1, 3) and torch.allclose(out[0, 0, 0], torch.tensor([0, 4095 / 65535, 1.0]))
    jittered = augment(to_float(grey), torch.Generator().manual_seed(0))
    assert torch.equal(jittered[:, 0], jittered[:, 1]) and torch.equal(jittered[:, 1], jittered[:, 2])  # stays grey
