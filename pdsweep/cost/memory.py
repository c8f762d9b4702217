"""Peak training memory of one step, in closed form.

Memory is the peak of one training step (parameters, gradients, optimizer state, activations
saved for backward, the largest transient; see :class:`MemoryEstimate`) for timm's ViT trained
by pdsweep's training step: fp32 weights, fp32 or bf16 autocast, and fused attention (no T x T
matrix is stored) or eager attention (timm's explicit path: each block keeps its H x T x T
attention probabilities, and the backward holds two such matrices in flight; on long sequences
that is several times the fused figure).
An ensemble trains its members on the same batch one backward at a time with one optimizer,
so it holds every member's weights, gradients and state but one member's activations; members
that take turns (:class:`~pdsweep.cost.StepSetup`'s ``member_turns``) hold one member's. Micro-
batches hold one micro-batch's activations, every gradient made so far, and the batch they are
cut from.

No torch import here: the planner and the sampler call this thousands of times a second.
"""

from __future__ import annotations

from dataclasses import replace

from pdsweep.config import Config
from pdsweep.cost.flops import GIGA, _Arch, _arch, _member_params
from pdsweep.cost.memory_estimate import _ACTIVATION_BYTES, _FP32, _INT64, _OPTIMIZER_STATES, MemoryEstimate
from pdsweep.cost.setup import StepSetup
from pdsweep.cost.swin_memory import swin_memory


def _weight_matrix_params(a: _Arch) -> int:
    """Parameters that autocast copies to bf16 and keeps for backward: conv and linear weights."""
    return 3 * a.p * a.p * a.D + a.L * (4 * a.D * a.D + 2 * a.D * a.M) + a.D * a.C


def _attention_matrix_bytes(a: _Arch, T: int, precision: str) -> tuple[int, int]:
    """Per image, what eager attention keeps of its H x T x T matrices for backward, and what its
    backward holds in flight (the gradients of the probabilities and of the logits).

    The softmax runs in fp32 (autocast's fp32 list) and keeps its output; under bf16 autocast
    ``attn @ v`` keeps a bf16 copy too. The softmax's backward holds its output, the gradient of
    it and the gradient of the logits (fp32 each); by then the bf16 copy has been freed.
    """
    act = _ACTIVATION_BYTES[precision]
    copy = act if act != _FP32 else 0
    matrix = a.H * T * T
    return (_FP32 + copy) * matrix, (2 * _FP32 - copy) * matrix


def _activation_bytes(a: _Arch, T: int, batch_size: int, precision: str, attention: str = "fused") -> int:
    """Bytes autograd saves for backward in one member's forward on a batch.

    The residual stream and LayerNorm inputs stay fp32 under autocast; linear inputs and
    outputs, attention and the MLP are in the activation dtype. Measured against
    ``torch.autograd.graph.saved_tensors_hooks`` in ``tests/test_verify.py``.
    """
    act = _ACTIVATION_BYTES[precision]
    D, M, N, n = a.D, a.M, a.N, T - 1
    per_block = (
        2 * (_FP32 * T * D + 2 * _FP32 * T)  # LayerNorm inputs, their mean and rstd
        + act * T * (6 * D + 2 * M)  # qkv in/out, attention out, fc1 in, GELU in, fc2 in
        + (_FP32 * a.H * T if attention == "fused" else _attention_matrix_bytes(a, T, precision)[0])  # logsumexp, or
    )                                                                                            # the probabilities
    image = _FP32 * 3 * a.R * a.R + (act * 3 * a.R * a.R if act != _FP32 else 0)
    dropout_index = _INT64 * (n + 1) if n < N else 0
    final_norm = _FP32 * T * D + 2 * _FP32 * T
    head_input = _FP32 * T * D if act == _FP32 else act * D  # fp32: a view into the norm output
    loss = _FP32 * a.C + _INT64
    per_image = a.L * per_block + image + dropout_index + final_norm + head_input + loss
    weight_copies = act * _weight_matrix_params(a) if act != _FP32 else 0
    return batch_size * per_image + weight_copies


def _backward_transient(a: _Arch, T: int, batch_size: int, precision: str, attention: str) -> int:
    """Gradients in flight as the backward starts: through the last MLP (the gradient of the GELU
    output and of the residual stream; under autocast also a bf16 weight gradient before its cast
    into the fp32 .grad), or, with eager attention, through the last block's attention matrices,
    by when that block's MLP activations are freed."""
    act = _ACTIVATION_BYTES[precision]
    mlp = batch_size * T * (act * a.M + _FP32 * a.D) + (act * a.D * a.M if act != _FP32 else 0)
    if attention == "fused":
        return mlp
    freed = batch_size * T * (act * (a.D + 2 * a.M) + _FP32 * a.D)  # fc1, GELU and fc2 inputs, the norm's input
    return max(mlp, batch_size * _attention_matrix_bytes(a, T, precision)[1] - freed)


def _memory(a: _Arch, T: int, batch_size: int, precision: str, optimizer: str, attention: str = "fused") -> MemoryEstimate:
    params = a.K * _member_params(a)
    act = _ACTIVATION_BYTES[precision]
    return MemoryEstimate(
        params=_FP32 * params,
        grads=_FP32 * params,
        optimizer_state=_FP32 * _OPTIMIZER_STATES[optimizer] * params,
        activations=_activation_bytes(a, T, batch_size, precision, attention),
        backward_transient=_backward_transient(a, T, batch_size, precision, attention),
        # The gradient of the (B, N + 1, D) tokens, the zeros PatchDropout's backward scatters
        # into, the gradient of the patch embedding's output, and the input batch, still held.
        embedding_transient=batch_size
        * (2 * _FP32 * (a.N + 1) * a.D + act * a.N * a.D + _FP32 * 3 * a.R * a.R),
        # foreach SGD (weight decay) and AdamW (sqrt of the second moment) each make one fp32
        # temporary per parameter.
        step_transient=_FP32 * params,
        ensemble_size=a.K,
    )


def memory(config: Config, setup: StepSetup = StepSetup()) -> MemoryEstimate:
    """Peak device memory of one training step of ``config`` under ``setup`` (as it is arranged)."""
    if config.family == "swin":
        member = replace(config, ensemble_size=1) if setup.member_turns and config.ensemble_size > 1 else config
        return _arranged(swin_memory(member, replace(setup, batch_size=setup.micro)), setup, config.resolution)
    return member_memory(_arch(config), config.tokens_kept, setup)


def member_memory(a: _Arch, T: int, setup: StepSetup) -> MemoryEstimate:
    """:func:`memory` from an architecture's numbers and its token count (no config built)."""
    if setup.member_turns:
        a = a._replace(K=1)
    return _arranged(_memory(a, T, setup.micro, setup.precision, setup.optimizer, setup.attention), setup, a.R)


def _arranged(estimate: MemoryEstimate, setup: StepSetup, resolution: int) -> MemoryEstimate:
    """A micro-batch's estimate as one of several: gradients accumulate, and the batch's other
    images (fp32, as the loop cuts them from the augmented batch) stay alive."""
    if not setup.accumulates:
        return estimate
    rest = (setup.batch_size - setup.micro) * _FP32 * 3 * resolution * resolution
    return replace(estimate, accumulating=True, batch_held=rest)
