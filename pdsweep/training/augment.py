"""Batched image augmentation on tensors, on the training device, each image its own draw.

torchvision's v2 transforms draw one set of parameters per call; here a random resized crop, a
horizontal flip and a small rotation are folded into one affine matrix per image and applied
with a single ``grid_sample``, then colour jitter scales brightness, contrast and saturation
per image. Everything is seeded by the generator passed in, so a resumed run replays it.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """(B, R, R, C) uint8 (0..255) or uint16 (0..65535), C 1 or 3 -> (B, 3, R, R) float in [0, 1];
    a greyscale channel is repeated into all three (the models, pretrained ones too, take RGB)."""
    out = images.permute(0, 3, 1, 2).float().div_(65535 if images.dtype == torch.uint16 else 255)  # (B, C, R, R)
    return out.repeat(1, 3, 1, 1) if out.shape[1] == 1 else out


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, R, R) in [0, 1] -> standardised with ImageNet statistics (as pretrained ViTs expect)."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def augment(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    max_degrees: float = 10.0,
    jitter: float = 0.2,
) -> torch.Tensor:
    """(B, 3, R, R) in [0, 1] -> augmented (B, 3, R, R) in [0, 1]."""
    B = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(B, generator=generator, device=images.device) * (high - low) + low

    # Random resized crop: area fraction and aspect ratio, as torchvision draws them.
    area = uniform(*scale)
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))
    width = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the image side
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (uniform(0, 1) * (1 - width) + width / 2) * 2 - 1  # in [-1, 1] grid units
    centre_y = (uniform(0, 1) * (1 - height) + height / 2) * 2 - 1
    flip = torch.where(torch.rand(B, generator=generator, device=images.device) < 0.5, -1.0, 1.0)
    angle = uniform(-max_degrees, max_degrees) * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([width * cos * flip, -height * sin, centre_x], dim=1),
            torch.stack([width * sin * flip, height * cos, centre_y], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3): output grid -> input coordinates
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    # Colour jitter: brightness, contrast, saturation, each a factor in [1 - jitter, 1 + jitter].
    def factor() -> torch.Tensor:
        return uniform(1 - jitter, 1 + jitter).view(B, 1, 1, 1)

    out = out * factor()
    mean_grey = _grey(out).mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    out = (out - mean_grey) * factor() + mean_grey
    grey = _grey(out)
    out = grey + (out - grey) * factor()
    return out.clamp_(0, 1)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, R, R) -> (B, 1, R, R) luma."""
    return (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)
