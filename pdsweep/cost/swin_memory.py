"""Peak training memory of one step of a Swin Transformer, in closed form.

The same accounting as :mod:`pdsweep.cost.memory` (the ViT's; read it first): fp32 weights,
gradients and optimizer state for every member, one member's activations saved for backward,
and the peak of three phases (:class:`~pdsweep.cost.memory.MemoryEstimate`). What differs is
the shape of the network. Every stage runs on the reduced grid that window-structured
PatchDropout leaves (:mod:`pdsweep.cost.swin`): with n = ``config.window_keeps[-1]`` rows and
columns kept per 7 x 7 window, stage s has h_0 = G/7 n and h_s = ceil(h_{s-1}/2) rows, T_s = h_s^2
tokens (T~_s padded to whole windows), windows of A_s = min(n, h_s)^2 tokens, width C_s = E 2^s,
MLP width M_s and H_s heads. Saved for backward per image, in bytes (f = 4 for fp32, a = 4 or 2
for the activation dtype)::

    each block       2 f T (C + 2)                       LayerNorm inputs (the fp32 residual), mean, rstd
                   + a (2 T~ C + T C + 2 T M)            qkv and proj inputs, fc1 input, GELU in and out
                   + a T~ C q_s                          q, k and v as the attention keeps them (below)
                   + f T~ H A                            the attention probabilities (fp32)
    patch merging    (f + a) 4 C_{s-1} T_s + 2 f T_s     its LayerNorm's input, output, mean, rstd (s >= 1)
    patch embedding  f G^2 (E + 2) + f 3 R^2             its LayerNorm's input, mean, rstd; the images

plus the final norm, the pooled head input and the loss, and per batch the int64 indices (the
gather's, and each block's relative position index). Under autocast the bf16 copies of the
images and of every conv and linear weight are kept too.

``fused`` attention keeps the probabilities as well, on a CPU. timm's Swin hands
``scaled_dot_product_attention`` a float ``attn_mask`` (the relative position bias, plus the
shift mask on shifted blocks), and torch 2.14 on a CPU then runs the math path (``_safe_softmax``
among the dispatched ops: measured, not assumed). It keeps the (B nW, H, A, A) softmax output
just as timm's eager path does, and scaled copies of both q and k. So q_s is 3 (q, k, v) with
several heads; with one head v (and in eager k) stays a view of the qkv output, whose whole
3 T~ C storage is then kept: q_s is 5 for fused, 4 for eager. A GPU may run another kernel for
the same call (the memory-efficient one keeps a logsumexp, not the probabilities); there the
fused figure would be high by the f T~ H A term, under a tenth of a block at head width 32.
That is reasoned, not measured: every figure here was checked on a CPU.

Parameters sit mostly in the late stages and activations in the early ones, so unlike a ViT's
the backward need not peak as it starts: past the last stage it has made most of the gradients
and freed few activations. ``backward_transient`` is the largest excess over the saved
activations anywhere in the backward, walking the blocks from the last: gradients made so far,
less activations freed so far, plus what the block holds in flight through its MLP (the residual
gradient, a gradient of the hidden layer, fc2's weight gradient). The embedding phase holds every
gradient, four fp32 copies of the full (B, G, G, E) patch grid and the images; the optimizer step
one fp32 temporary per parameter, and the batch.

Checked against the profiler's peak of a real step on a CPU in fp32, within 1% from 28 to 224 px
(``tests/test_swin_memory.py``). The bf16-mixed terms follow the reasoning :mod:`pdsweep.cost.memory`
checked on a GPU for the ViT (linear inputs and outputs in bf16; LayerNorm inputs and the residual
stream in fp32; bf16 weight copies); for a Swin they are not measured. No torch import here: the
planner calls this often.
"""

from __future__ import annotations

from pdsweep.config import Config
from pdsweep.cost.memory_estimate import _ACTIVATION_BYTES, _FP32, _INT64, _OPTIMIZER_STATES, MemoryEstimate
from pdsweep.cost.setup import StepSetup
from pdsweep.cost.swin import Stage as _Stage
from pdsweep.cost.swin import _shape, param_count, stages as _stages


def _qkv_copies(st: _Stage, attention: str) -> int:
    """How many T~ x C tensors of q, k and v the attention keeps for backward (module docstring)."""
    if st.heads == 1:
        return 5 if attention == "fused" else 4
    return 3


def _probabilities_bytes(st: _Stage, precision: str, attention: str) -> int:
    """Per image, one block's (B nW, H, A, A) attention probabilities as kept for backward.

    Eager: the softmax runs in fp32 (autocast's fp32 list; timm adds the fp32 bias first) and
    under bf16 ``attn @ v`` keeps a bf16 copy too. Fused (the math path): autocast casts every
    input of the attention call, so the probabilities are in the activation dtype alone.
    """
    act = _ACTIVATION_BYTES[precision]
    per_element = act if attention == "fused" else _FP32 + (act if act != _FP32 else 0)
    return per_element * st.padded * st.heads * st.window_area


def _block_bytes(st: _Stage, precision: str, attention: str) -> int:
    """Per image, what one block saves for backward (the module docstring's ``each block``)."""
    act = _ACTIVATION_BYTES[precision]
    T, Tp, C, M = st.tokens, st.padded, st.width, st.hidden
    norms = 2 * _FP32 * T * (C + 2)
    linears = act * (2 * Tp * C + T * C + 2 * T * M)
    qkv = act * Tp * C * _qkv_copies(st, attention)
    return norms + linears + qkv + _probabilities_bytes(st, precision, attention)


def _merging_bytes(st: _Stage, precision: str) -> int:
    """Per image, what patch merging saves: its LayerNorm's fp32 input and stats, and the
    reduction's input (the norm's output; a bf16 copy of it under autocast)."""
    act = _ACTIVATION_BYTES[precision]
    return (_FP32 + act) * 4 * st.merged_width * st.tokens + 2 * _FP32 * st.tokens


def _head_bytes(config: Config, last: _Stage, precision: str) -> int:
    """Per image, what the final norm (fp32 input, mean, rstd), the head (the pooled features)
    and the loss (log-probabilities, label) save."""
    act = _ACTIVATION_BYTES[precision]
    return _FP32 * last.tokens * (last.width + 2) + act * last.width + _FP32 * config.num_classes + _INT64


def _image_bytes(config: Config, precision: str) -> int:
    """Per image: the fp32 batch, and under autocast the bf16 copy the convolution keeps."""
    act = _ACTIVATION_BYTES[precision]
    return (_FP32 + (act if act != _FP32 else 0)) * 3 * config.resolution**2


def _index_bytes(config: Config, stages: list[_Stage]) -> int:
    """Per batch: each block's int64 relative position index, and the gather's row and column
    indices. (With rows dropped, a stage's blocks share one index per shift; counting one per
    block is kilobytes over.)"""
    W, n = _shape(config).window, config.window_keeps[-1]
    gather = 2 * _INT64 * (config.grid_size // W * n) if n < W else 0
    return sum(st.blocks * _INT64 * st.window_area**2 for st in stages) + gather


def _weight_matrix_params(config: Config, stages: list[_Stage]) -> int:
    """Conv and linear weights of a member: what autocast copies to bf16 and keeps for backward."""
    shape = _shape(config)
    conv = 3 * shape.patch_size**2 * shape.embed_dim
    return conv + sum(st.weight_matrix_params for st in stages) + stages[-1].width * config.num_classes


def _activation_bytes(config: Config, stages: list[_Stage], batch_size: int, precision: str,
                      attention: str) -> int:
    """Bytes autograd saves for backward in one member's forward on a batch, the batch included."""
    act = _ACTIVATION_BYTES[precision]
    embedding = _FP32 * config.grid_size**2 * (_shape(config).embed_dim + 2)  # its LayerNorm's input, mean, rstd
    per_image = (
        _image_bytes(config, precision) + embedding
        + sum(st.blocks * _block_bytes(st, precision, attention) + _merging_bytes(st, precision) for st in stages)
        + _head_bytes(config, stages[-1], precision)
    )
    weight_copies = act * _weight_matrix_params(config, stages) if act != _FP32 else 0
    return batch_size * per_image + _index_bytes(config, stages) + weight_copies


def _mlp_in_flight(st: _Stage, batch_size: int, precision: str) -> int:
    """What a block's backward holds beyond its saved activations as fc2's backward runs: the
    residual gradient, the gradient of the hidden layer and fc2's weight gradient (under autocast
    a bf16 one too, before its cast into the fp32 ``.grad``). The GELU's backward, once fc2 has
    freed its input, holds as much.

    The softmax's backward holds less (two gradients of the probabilities against the MLP's
    inputs, freed by then): a window caps A at 49, and a head is 32 wide.
    """
    act = _ACTIVATION_BYTES[precision]
    T, C, M = st.tokens, st.width, st.hidden
    weight_grad = (_FP32 + (act if act != _FP32 else 0)) * C * M + _FP32 * C
    return batch_size * T * (_FP32 * C + act * M) + weight_grad


def _backward_transient(config: Config, stages: list[_Stage], batch_size: int, precision: str,
                        attention: str) -> int:
    """The largest excess over the saved activations anywhere in one member's backward: walking
    the blocks from the last, the gradients made so far, less the activations freed so far, plus
    what the block has in flight."""
    last = stages[-1]
    made = _FP32 * (2 * last.width + last.width * config.num_classes + config.num_classes)  # final norm, head
    freed = batch_size * _head_bytes(config, last, precision)
    peak = 0
    for st in reversed(stages):
        in_flight = _mlp_in_flight(st, batch_size, precision)
        for _ in range(st.blocks):
            peak = max(peak, made - freed + in_flight)
            made += _FP32 * st.block_params
            freed += batch_size * _block_bytes(st, precision, attention)
        made += _FP32 * st.merging_params
        freed += batch_size * _merging_bytes(st, precision)
    return peak


def _embedding_transient(config: Config, batch_size: int, precision: str) -> int:
    """The backward through the patch embedding's LayerNorm: four fp32 copies of the full
    (B, G, G, E) grid (the norm's saved input, a channels-last view of the convolution's output,
    and the contiguous copy its backward makes of it; the gradient scattered back through the
    gather; the gradient of the norm's input), and the images."""
    grid = config.grid_size**2 * _shape(config).embed_dim
    return batch_size * (4 * _FP32 * grid + _image_bytes(config, precision))


def swin_memory(config: Config, setup: StepSetup) -> MemoryEstimate:
    """Peak memory of one training step of the Swin ``config`` under ``setup`` (module docstring)."""
    stages = _stages(config)
    params = param_count(config)
    batch_size, precision, attention = setup.batch_size, setup.precision, setup.attention
    return MemoryEstimate(
        params=_FP32 * params,
        grads=_FP32 * params,
        optimizer_state=_FP32 * _OPTIMIZER_STATES[setup.optimizer] * params,
        activations=_activation_bytes(config, stages, batch_size, precision, attention),
        backward_transient=_backward_transient(config, stages, batch_size, precision, attention),
        embedding_transient=_embedding_transient(config, batch_size, precision),
        # foreach SGD (weight decay) and AdamW (sqrt of the second moment) each make one fp32
        # temporary per parameter; the training loop still holds the batch.
        step_transient=_FP32 * params + batch_size * _FP32 * 3 * config.resolution**2,
        ensemble_size=config.ensemble_size,
    )
