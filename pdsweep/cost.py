"""Closed-form training cost of a config: FLOPs per image and peak training memory.

FLOPs follow fvcore's convention (one fused multiply-add is one FLOP; matmuls, convolutions
and norms count, element-wise ops do not) and count timm's ViT exactly, attention matmuls
included. Per member and image, with T = tokens through the blocks (kept patches + class token),
N = all patches, D = width, M = MLP width (4D), L = blocks, p = patch size, C = classes:

    patch embedding   3 p^2 N D                 (a conv over every patch: dropout comes after it)
    each block        T D (3D + D + 2M)         (qkv, out projection, fc1, fc2)
                    + 2 T^2 D                   (Q K^T and A V)
                    + 10 T D                    (two LayerNorms; fvcore counts 5 per element)
    final norm        5 T D
    head              D C

Eq. 1 of Liu et al. (PatchDropout, WACV 2023) approximates a forward as 2 L N^2 d + 4 L N d^2.
Its attention term is ours (2 L T^2 D); its linear term counts the four D x D projections but
not the MLP (8 L T D^2 at ratio 4), and it drops norms, patch embedding and head. Those are small
for large models at full length and large once most tokens are dropped (the patch embedding
does not shrink with the keep rate), which is exactly where a budget is decided.
:func:`eq1_flops` is kept for comparison; ``bench/cost.py`` prints both.

Memory is the peak of one training step (parameters, gradients, optimizer state, activations
saved for backward, the largest transient; see :class:`MemoryEstimate`) for timm's ViT trained
by pdsweep's training step:
fused attention (no T x T matrix is stored), fp32 weights, and either fp32 or bf16 autocast.
An ensemble trains its members on the same batch one backward at a time with one optimizer,
so it holds every member's weights, gradients and state but one member's activations.

No torch import here: the planner and the sampler call this thousands of times a second.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

from pdsweep.config import (
    OPTIMIZERS,
    PRECISIONS,
    Config,
    OptimizerName,
    Precision,
    strategy_count,
)
from pdsweep.errors import PdsweepError
from pdsweep.validate import check_choice, is_number, is_positive_int

GIGA = 1e9
_FP32 = 4
_INT64 = 8
_ACTIVATION_BYTES: dict[str, int] = {"fp32": 4, "bf16-mixed": 2}
_OPTIMIZER_STATES: dict[str, int] = {"sgd": 1, "adamw": 2}  # fp32 tensors per parameter


class _Arch(NamedTuple):
    """The numbers of one ensemble member that every formula here needs."""

    D: int  # embed dim
    H: int  # heads
    M: int  # MLP hidden dim
    L: int  # blocks
    N: int  # patches
    p: int  # patch size
    R: int  # resolution
    C: int  # classes
    K: int  # ensemble members


def _arch(config: Config) -> _Arch:
    preset = config.preset
    return _Arch(
        D=preset.embed_dim,
        H=preset.num_heads,
        M=preset.mlp_hidden_dim,
        L=config.blocks,
        N=config.num_patches,
        p=config.patch_size,
        R=config.resolution,
        C=config.num_classes,
        K=config.ensemble_size,
    )


def _member_flops(a: _Arch, T: float, T2: float | None = None) -> float:
    """Forward FLOPs of one member on one image with T tokens through the blocks.

    ``T2`` is the mean of T^2 when the token count varies between iterations (keep mode
    uniform); with integers in, the count is an exact integer.
    """
    T2 = T * T if T2 is None else T2
    block = T * a.D * (4 * a.D + 2 * a.M) + 2 * T2 * a.D + 10 * T * a.D
    return 3 * a.p * a.p * a.N * a.D + a.L * block + 5 * T * a.D + a.D * a.C


@functools.lru_cache(maxsize=65536)
def _token_moments(grid: int, low: int, high: int, sampling: str) -> tuple[float, float]:
    """Mean of T and of T^2 when the requested count is uniform on [low, high]."""
    tokens = [strategy_count(grid, c, sampling) + 1 for c in range(low, high + 1)]
    return sum(tokens) / len(tokens), sum(t * t for t in tokens) / len(tokens)


def _train_member_flops(a: _Arch, config: Config, top: int) -> float:
    """Mean train FLOPs of a member whose strategy is asked for ``top`` patches (at most)."""
    counts = config.requested_counts
    if len(counts) == 1 or counts[0] >= top:
        return _member_flops(a, strategy_count(config.grid_size, top, config.sampling) + 1)
    return _member_flops(a, *_token_moments(config.grid_size, counts[0], top, config.sampling))


def train_flops(config: Config) -> float:
    """Forward FLOPs per image at the training keep rate, summed over the ensemble.

    Under keep mode uniform, the mean over the iterations' token counts.
    """
    a = _arch(config)
    return a.K * _train_member_flops(a, config, config.requested_counts[-1])


def inference_flops(config: Config) -> int:
    """Forward FLOPs per image with every patch (keep rate 1), summed over the ensemble."""
    a = _arch(config)
    return a.K * int(_member_flops(a, a.N + 1))


def train_gflops(config: Config) -> float:
    return train_flops(config) / GIGA


def inference_gflops(config: Config) -> float:
    return inference_flops(config) / GIGA


def eq1_flops(config: Config) -> int:
    """The paper's Eq. 1, ``2 L N^2 d + 4 L N d^2``, with N the tokens kept, for comparison."""
    a = _arch(config)
    T = config.tokens_kept
    return a.K * (2 * a.L * T * T * a.D + 4 * a.L * T * a.D * a.D)


def param_count(config: Config) -> int:
    """Parameters of the whole ensemble, as timm's ViT has them (qkv bias, class token)."""
    a = _arch(config)
    return a.K * _member_params(a)


def _member_params(a: _Arch) -> int:
    D, M = a.D, a.M
    patch_embed = 3 * a.p * a.p * D + D
    tokens = D + (a.N + 1) * D  # class token, position embedding
    block = 4 * D * D + 2 * D * M + 9 * D + M  # norms, qkv, proj, fc1, fc2 with biases
    return patch_embed + tokens + a.L * block + 2 * D + D * a.C + a.C


def _weight_matrix_params(a: _Arch) -> int:
    """Parameters that autocast copies to bf16 and keeps for backward: conv and linear weights."""
    return 3 * a.p * a.p * a.D + a.L * (4 * a.D * a.D + 2 * a.D * a.M) + a.D * a.C


def _activation_bytes(a: _Arch, T: int, batch_size: int, precision: str) -> int:
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
        + _FP32 * a.H * T  # attention logsumexp
    )
    image = _FP32 * 3 * a.R * a.R + (act * 3 * a.R * a.R if act != _FP32 else 0)
    dropout_index = _INT64 * (n + 1) if n < N else 0
    final_norm = _FP32 * T * D + 2 * _FP32 * T
    head_input = _FP32 * T * D if act == _FP32 else act * D  # fp32: a view into the norm output
    loss = _FP32 * a.C + _INT64
    per_image = a.L * per_block + image + dropout_index + final_norm + head_input + loss
    weight_copies = act * _weight_matrix_params(a) if act != _FP32 else 0
    return batch_size * per_image + weight_copies


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted training memory of one step, in bytes, by component, and its peak.

    Gradients and activations do not peak together: the backward frees a member's activations
    as it allocates that member's gradients. A step peaks in one of three places:

    - as the last member's backward starts: its activations, the other members' gradients,
      and the gradients in flight through the last MLP;
    - as that backward reaches the patch embedding: every gradient, and the gradient of the
      full (B, N + 1, D) token tensor from before PatchDropout (large at low keep rates);
    - at the optimizer step: every gradient and the optimizer's temporaries.
    """

    params: int
    grads: int  # every member's
    optimizer_state: int
    activations: int  # one member's, saved for backward; the input batch included
    backward_transient: int  # gradients in flight through the last MLP
    embedding_transient: int  # gradients of the token tensor before PatchDropout, and the batch
    step_transient: int  # the optimizer's temporaries
    ensemble_size: int = 1

    @property
    def states(self) -> int:
        """Parameters, gradients and optimizer state: the part that does not scale with batch."""
        return self.params + self.grads + self.optimizer_state

    @property
    def peak_phases(self) -> dict[str, int]:
        others = self.grads * (self.ensemble_size - 1) // self.ensemble_size
        return {
            "backward": self.params + self.optimizer_state + others + self.activations
            + self.backward_transient,
            "embedding": self.states + self.embedding_transient,
            "step": self.states + self.step_transient,
        }

    @property
    def total(self) -> int:
        """The peak of a training step."""
        return max(self.peak_phases.values())

    @property
    def gb(self) -> float:
        return self.total / GIGA


def _memory(a: _Arch, T: int, batch_size: int, precision: str, optimizer: str) -> MemoryEstimate:
    params = a.K * _member_params(a)
    act = _ACTIVATION_BYTES[precision]
    return MemoryEstimate(
        params=_FP32 * params,
        grads=_FP32 * params,
        optimizer_state=_FP32 * _OPTIMIZER_STATES[optimizer] * params,
        activations=_activation_bytes(a, T, batch_size, precision),
        # The gradient of the GELU output and of the residual stream; under autocast also a
        # bf16 weight gradient before its cast into the fp32 .grad.
        backward_transient=batch_size * T * (act * a.M + _FP32 * a.D)
        + (act * a.D * a.M if act != _FP32 else 0),
        # The gradient of the (B, N + 1, D) tokens, the zeros PatchDropout's backward scatters
        # into, the gradient of the patch embedding's output, and the input batch, still held.
        embedding_transient=batch_size
        * (2 * _FP32 * (a.N + 1) * a.D + act * a.N * a.D + _FP32 * 3 * a.R * a.R),
        # foreach SGD (weight decay) and AdamW (sqrt of the second moment) each make one fp32
        # temporary per parameter.
        step_transient=_FP32 * params,
        ensemble_size=a.K,
    )


def memory(
    config: Config,
    *,
    batch_size: int,
    precision: Precision = "bf16-mixed",
    optimizer: OptimizerName = "sgd",
) -> MemoryEstimate:
    """Peak memory of one training step of ``config`` at ``batch_size`` images."""
    _check_setup(batch_size, precision, optimizer)
    return _memory(_arch(config), config.tokens_kept, batch_size, precision, optimizer)


def _check_setup(batch_size: int, precision: str, optimizer: str) -> None:
    if not is_positive_int(batch_size):
        raise PdsweepError(f"`batch_size >= 1` must hold, but got {batch_size=}.")
    check_choice("precision", precision, PRECISIONS)
    check_choice("optimizer", optimizer, OPTIMIZERS)


@dataclass(frozen=True)
class Cost:
    """What one config costs to train: the numbers the budget caps and the planner prints."""

    config: Config
    train_gflops: float
    inference_gflops: float
    memory: MemoryEstimate

    @property
    def memory_gb(self) -> float:
        return self.memory.gb


def estimate(
    config: Config,
    *,
    batch_size: int,
    precision: Precision = "bf16-mixed",
    optimizer: OptimizerName = "sgd",
) -> Cost:
    """Train and inference GFLOPs and peak memory of ``config``."""
    return Cost(
        config=config,
        train_gflops=train_gflops(config),
        inference_gflops=inference_gflops(config),
        memory=memory(config, batch_size=batch_size, precision=precision, optimizer=optimizer),
    )


@dataclass(frozen=True)
class Budget:
    """A cap on train GFLOPs per image and, optionally, on peak training memory in GB."""

    gflops: float
    memory_gb: float | None = None

    def __post_init__(self) -> None:
        if not (is_number(self.gflops) and self.gflops > 0):
            raise PdsweepError(f"`budget gflops > 0` (and finite) must hold, but got {self.gflops!r}.")
        if self.memory_gb is not None and not (is_number(self.memory_gb) and self.memory_gb > 0):
            raise PdsweepError(f"`budget memory_gb > 0` (and finite) must hold, but got {self.memory_gb!r}.")

    def admits(self, cost: Cost) -> bool:
        return cost.train_gflops <= self.gflops and (
            self.memory_gb is None or cost.memory_gb <= self.memory_gb
        )

    def __str__(self) -> str:
        memory = f" and {self.memory_gb:g} GB" if self.memory_gb is not None else ""
        return f"{self.gflops:g} GFLOPs{memory}"


def max_keep_count(
    config: Config,
    budget: Budget,
    *,
    low: int,
    high: int,
    batch_size: int,
    precision: Precision = "bf16-mixed",
    optimizer: OptimizerName = "sgd",
) -> int | None:
    """The largest count in ``[low, high]`` to ask of ``config``'s strategy within ``budget``.

    The count is the top of the range under keep mode uniform. Cost rises with it, so a binary
    search is exact: about log2(N) closed-form evaluations, with no config objects built.
    """
    _check_setup(batch_size, precision, optimizer)
    a = _arch(config)

    def fits(count: int) -> bool:
        T = strategy_count(config.grid_size, count, config.sampling) + 1
        # The same comparisons as Budget.admits, so the two never disagree at the boundary.
        if a.K * _train_member_flops(a, config, count) / GIGA > budget.gflops:
            return False
        return budget.memory_gb is None or (
            _memory(a, T, batch_size, precision, optimizer).gb <= budget.memory_gb
        )

    if not 1 <= low <= high <= a.N:
        raise PdsweepError(f"`1 <= low <= high <= {a.N}` must hold, but got {low=}, {high=}.")
    # Cost rises with the count except at N itself (no dropout, no index tensor): test it first.
    if fits(high):
        return high
    if not fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low
