"""Cross-checks of the analytic cost model against the real timm model.

- FLOPs: fvcore counts the real model. Two things make that honest and fast. fvcore skips
  ``aten::scaled_dot_product_attention`` (timm's fused attention) without a word, dropping the
  very term PatchDropout saves, so a handle counts it as the two matmuls it is. And the model is
  built on the meta device, so a 23-TFLOP config traces in a second; only the patch embedding
  runs on the CPU, because torch's meta convolution cannot be traced.
- Memory: bytes autograd saves for backward (``saved_tensors_hooks``), the real parameter,
  gradient and optimizer-state tensors after a step, and the peak of a whole step from the
  profiler's memory timeline.

Heavy imports (torch, fvcore) live here, never in :mod:`pdsweep.cost`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pdsweep._compat import memory_timeline
from pdsweep.config import Config
from pdsweep.cost import StepSetup
from pdsweep.training.models import build_member, build_model, set_attention
from pdsweep.training.loop import autocast, make_optimizer, member_step, train_step


def _sdpa_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """fvcore handle: q (B, H, Tq, E), k (B, H, Tk, E), v (B, H, Tk, Ev) -> QK^T + AV MACs."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(inputs[i]) for i in range(3))
    return math.prod(q) * k[-2] + math.prod(q[:-1]) * k[-2] * v[-1]


def _to_meta(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return output.to("meta")


def fvcore_flops(config: Config, *, train: bool = True, fused_attention: bool = True) -> int:
    """fvcore's count of one forward of the real ensemble on one image.

    ``train=True`` counts with PatchDropout active (train FLOPs), ``False`` with every patch
    (inference FLOPs). ``fused_attention=False`` switches timm to its explicit
    ``q @ k.T`` / ``attn @ v`` path, which fvcore counts with its own matmul handle.
    """
    from fvcore.nn import FlopCountAnalysis

    model = build_model(config, device="meta")
    for member in model.members:
        member.patch_embed.to_empty(device="cpu")
        for param in member.patch_embed.parameters():
            nn.init.zeros_(param)
        member.patch_embed.register_forward_hook(_to_meta)
        set_attention(member, "fused" if fused_attention else "eager")
    model.train(train)
    images = torch.zeros(1, 3, config.resolution, config.resolution)
    analysis = FlopCountAnalysis(model, images)
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flops)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python values
        return int(analysis.total())


def saved_activation_bytes(config: Config, setup: StepSetup) -> int:
    """Bytes autograd keeps for backward in one member's forward and loss (parameters excluded),
    on one micro-batch where ``setup`` cuts the batch (the whole batch it is cut from counted).

    Tensors sharing a storage (views) are counted once, at the storage's size.
    """
    torch.manual_seed(0)
    member = build_member(config, attention=setup.attention).train()
    params = {p.untyped_storage().data_ptr() for p in member.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    images, labels = _batch(config, setup.batch_size)
    storages[images.untyped_storage().data_ptr()] = images.nbytes  # the batch is held anyway
    images, labels = images[: setup.micro], labels[: setup.micro]  # a micro-batch: a view into it
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with autocast(images.device, setup.precision):
            logits = member(images)
        loss = nn.functional.cross_entropy(logits.float(), labels, label_smoothing=0.1)
    loss.backward()
    return sum(storages.values())


@dataclass(frozen=True)
class MeasuredMemory:
    """Bytes measured on a real training step (CPU)."""

    params: int
    grads: int
    optimizer_state: int
    activations: int  # saved for backward by one member (one micro-batch), plus the input batch
    peak: int  # the step's peak from the profiler's memory timeline

    @property
    def states_plus_activations(self) -> int:
        return self.params + self.grads + self.optimizer_state + self.activations


def measure_memory(config: Config, setup: StepSetup) -> MeasuredMemory:
    """Measure one training step of the real ensemble on the CPU, arranged as ``setup`` says.

    Members in turns: a step of the first member's turn, the others waiting (on a GPU, on the
    host: outside the device's memory). The profiler's timeline lists every tensor a step touches
    and every parameter its optimizer holds, so here the optimizer holds the first member's (the
    step is the same: the others have no gradient), and the states counted are that member's.
    """
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = build_model(config, attention=setup.attention).train()
    images, labels = _batch(config, setup.batch_size)
    trained, opt, step = _arranged_step(model, setup, (images, labels))
    step()  # creates the optimizer state
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    params = list(trained.parameters())
    state = [t for p in params for t in opt.state.get(p, {}).values() if torch.is_tensor(t) and t.dim() > 0]
    return MeasuredMemory(
        params=sum(p.nbytes for p in params),
        grads=sum(p.grad.nbytes for p in params if p.grad is not None),
        optimizer_state=sum(t.nbytes for t in state),
        activations=saved_activation_bytes(config, setup),
        peak=_timeline_peak(prof),
    )


def _arranged_step(model: nn.Module, setup: StepSetup,
                   batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[nn.Module, torch.optim.Optimizer, Callable[[], None]]:
    """What one step of ``setup``'s arrangement trains (the ensemble, or in member turns its
    first member), its optimizer, and the step."""
    turns = bool(setup.member_turns) and len(model.members) > 1
    trained = model.members[0] if turns else model
    opt = make_optimizer(trained, setup.optimizer, lr=0.01, weight_decay=1e-4)

    def step() -> None:
        if turns:
            opt.zero_grad(set_to_none=True)
            member_step(trained, batch, precision=setup.precision, micro_batch_size=setup.micro_batch_size)
            opt.step()
        else:
            train_step(model, opt, batch, precision=setup.precision, micro_batch_size=setup.micro_batch_size)

    return trained, opt, step


def measure_cuda_peak(config: Config, setup: StepSetup) -> int:
    """Peak bytes ``torch.cuda.max_memory_allocated`` sees over one training step on the GPU,
    arranged as ``setup`` says (member turns: the first member's, the others on the host).

    Measured on the second step (the first creates the optimizer state), counted from the
    allocation before the model existed.
    """
    device = torch.device("cuda")
    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated(device)
    torch.manual_seed(0)
    model = build_model(config, attention=setup.attention).train()
    images, labels = (t.to(device) for t in _batch(config, setup.batch_size))
    trained, _, step = _arranged_step(model, setup, (images, labels))
    trained.to(device)
    step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - baseline


def _timeline_peak(prof: Any) -> int:
    """Largest total of live CPU allocations over the profiled step, preexisting ones included.

    The same accounting as torch's ``export_memory_timeline``: creation adds, destruction
    subtracts, a new version of a tensor changes nothing.
    """
    total = peak = 0
    for change in memory_timeline(prof):
        total += change
        peak = max(peak, total)
    return peak


def _batch(config: Config, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(batch_size, 3, config.resolution, config.resolution)
    labels = torch.randint(0, config.num_classes, (batch_size,))
    return images, labels
