"""Which attention kernel a step ran: PyTorch picks an SDPA backend (flash, memory-efficient,
cuDNN, math) per call from the device, dtype and shapes, and says nothing. A sweep records it,
so a figure measured with one kernel is not read as another's."""

from __future__ import annotations

from collections.abc import Callable

# The ATen op each SDPA backend runs under, as the profiler names it.
SDPA_OPS = {"flash": "_scaled_dot_product_flash_attention", "memory-efficient": "_scaled_dot_product_efficient_attention",
            "cudnn": "_scaled_dot_product_cudnn_attention", "math": "_scaled_dot_product_attention_math"}


def attention_backend(step: Callable[[], object]) -> str:
    """The attention kernel one call of ``step`` ran, from the profiler's op names: an SDPA
    backend, ``flash (CPU)``, or ``eager`` (timm's explicit softmax(q k^T) v, no SDPA call)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    names = {event.name for event in prof.events()}
    if any("_scaled_dot_product_flash_attention_for_cpu" in name for name in names):
        return "flash (CPU)"
    found = [kind for kind, op in SDPA_OPS.items() if any(op in name for name in names)]
    return ", ".join(found) or ("eager" if any("softmax" in name for name in names) else "none seen")
