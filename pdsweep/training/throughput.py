"""A measured training throughput: a few real training steps of one config, in seconds.

What the pre-flight's wall-time estimate starts from (:mod:`pdsweep.sweep.estimate`). The steps
are those of :func:`pdsweep.training.loop.train_step` on random images (no data loading, no
augmentation), so the rate is an upper bound on what a trial reaches.
"""

from __future__ import annotations

import time

import torch

from pdsweep.config import Config
from pdsweep.cost import StepSetup
from pdsweep.training.device import DeviceName, resolve_device
from pdsweep.training.loop import make_optimizer, train_step
from pdsweep.training.models import build_model


def images_per_second(config: Config, setup: StepSetup, *, device: DeviceName = "auto", seconds: float = 1.0) -> float:
    """Training images per second of ``config`` on ``device``, from about ``seconds`` of steps.

    A one-image step first (it warms the kernels up and prices an image), then steps of as many
    images as fit in a quarter of ``seconds`` (at most the batch size), until ``seconds`` pass.
    """
    target = resolve_device(device)
    precision = setup.precision if target.type == "cuda" else "fp32"
    torch.manual_seed(0)
    model = build_model(config, attention=setup.attention).to(target).train()
    optimizer = make_optimizer(model, setup.optimizer, lr=1e-4, weight_decay=0.0)

    def step(batch: int) -> float:
        images = torch.randn(batch, 3, config.resolution, config.resolution, device=target)  # (B, 3, R, R)
        labels = torch.randint(0, config.num_classes, (batch,), device=target)
        started = time.perf_counter()
        train_step(model, optimizer, (images, labels), precision=precision)
        if target.type == "cuda":
            torch.cuda.synchronize(target)
        return time.perf_counter() - started

    per_image = step(1)
    per_image = min(per_image, step(1))  # the first step pays for the optimizer state and the kernels
    batch = max(1, min(setup.batch_size, int(seconds / 4 / max(per_image, 1e-6))))
    images, spent = 0, 0.0
    while spent < seconds / 2 or images == 0:
        spent += step(batch)
        images += batch
    return images / spent
