"""Training one config, without Ray. (The step and the optimizer; the loop grows around them.)"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from pdsweep.config import OptimizerName, Precision
from pdsweep.models import Ensemble

MOMENTUM = 0.9


def make_optimizer(
    model: nn.Module, name: OptimizerName, *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD with momentum 0.9, or AdamW, over every parameter of ``model``.

    ``foreach`` on every device (torch picks it on GPUs only), so the step's memory is the same
    on a CPU as on the GPU the memory model is for.
    """
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=weight_decay, foreach=True
        )
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    raise ValueError(f"unknown optimizer {name!r}; choose one of: sgd, adamw.")


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    """bf16 autocast for ``bf16-mixed``; nothing for ``fp32``."""
    if precision == "bf16-mixed":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def train_step(
    model: Ensemble,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    precision: Precision,
    label_smoothing: float = 0.1,
    grad_clip: float | None = None,
) -> float:
    """One optimizer step on a batch; returns the members' mean loss.

    images: (B, 3, R, R), labels: (B,). Members train on the same batch one backward at a time,
    so only one member's activations are alive at once (the memory model counts it so).
    """
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for member in model.members:
        with autocast(images.device, precision):
            logits = member(images)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        loss.backward()
        total += loss.item()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return total / len(model.members)
