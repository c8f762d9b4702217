"""Which attention kernel a step ran: PyTorch picks an SDPA backend (flash, memory-efficient,
cuDNN, math) per call from the device, dtype and shapes, and says nothing. A sweep records it,
so a figure measured with one kernel is not read as another's."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pdsweep._compat import dispatched_ops

log = logging.getLogger(__name__)

# The ATen op each fused SDPA backend runs as (the math backend runs as plain matmuls and softmax).
SDPA_OPS = {"flash": "_scaled_dot_product_flash_attention", "memory-efficient": "_scaled_dot_product_efficient_attention",
            "cudnn": "_scaled_dot_product_cudnn_attention"}


def attention_backend(step: Callable[[], object]) -> str:
    """The attention kernel one call of ``step`` ran: an SDPA backend (``flash``,
    ``memory-efficient``, ``cudnn``, ``math``), ``flash (CPU)``, ``eager`` (timm's explicit
    softmax(q k^T) v: no SDPA call), or ``unknown`` if the step failed (the record is a
    diagnostic: it never fails a trial)."""
    import torch

    class SdpaCalls(torch.overrides.TorchFunctionMode):
        called = False

        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func is torch.nn.functional.scaled_dot_product_attention:
                SdpaCalls.called = True
            return func(*args, **(kwargs or {}))

    try:
        with dispatched_ops() as names, SdpaCalls():
            step()
    except Exception as error:  # noqa: BLE001 - a diagnostic never fails the trial
        log.warning("could not tell which attention kernel ran: %s", error)
        return "unknown"
    if any("_scaled_dot_product_flash_attention_for_cpu" in name for name in names):
        return "flash (CPU)"
    found = [kind for kind, op in SDPA_OPS.items() if any(op in name for name in names)]
    return ", ".join(found) or ("math" if SdpaCalls.called else "eager")
