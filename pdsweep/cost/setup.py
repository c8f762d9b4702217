"""How one training step runs, as far as its cost goes: one value with one set of defaults.

The defaults are those a space's ``training`` section has (:class:`pdsweep.space.TrainingSettings`
takes its ``batch_size``, ``precision`` and ``optimizer`` defaults from here), so a cost priced
without a setup is the cost of the step pdsweep trains by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pdsweep.errors import PdsweepError
from pdsweep.validate import check_choice, is_positive_int

Precision = Literal["fp32", "bf16-mixed"]
OptimizerName = Literal["sgd", "adamw"]
Attention = Literal["fused", "eager"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
ATTENTIONS: tuple[str, ...] = get_args(Attention)


@dataclass(frozen=True)
class StepSetup:
    """Batch size, precision, optimizer and attention kernel of a training step (what the memory
    model needs).

    ``bf16-mixed`` is bf16 autocast on a GPU; a CPU trains in fp32. SGD has momentum 0.9.
    ``attention``: ``fused`` is PyTorch's ``scaled_dot_product_attention`` (no T x T matrix kept
    for backward); ``eager`` is timm's explicit ``softmax(q k^T) v``, the path the PatchDropout
    study's timm ran, which keeps each block's attention matrix. FLOPs are the same.

    How the step is arranged on the device, neither changing what it computes: ``micro_batch_size``
    trains the batch as micro-batches of that many images, their gradients accumulated (the
    activations of one micro-batch alive at once); ``member_turns`` trains an ensemble one member
    at a time, the others' weights and optimizer state on the host. None leaves either to
    :func:`pdsweep.cost.arrange` (as memory needs); the cost model prices None as the batch at
    once and the members together.
    """

    batch_size: int = 64
    precision: Precision = "bf16-mixed"
    optimizer: OptimizerName = "adamw"
    attention: Attention = "fused"
    micro_batch_size: int | None = None
    member_turns: bool | None = None

    def __post_init__(self) -> None:
        if not is_positive_int(self.batch_size):
            raise PdsweepError(f"`batch_size >= 1` must hold, but got batch_size={self.batch_size!r}.")
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("attention", self.attention, ATTENTIONS)
        if self.micro_batch_size is not None and not is_positive_int(self.micro_batch_size):
            raise PdsweepError(f"`micro_batch_size >= 1` must hold, but got micro_batch_size={self.micro_batch_size!r}.")
        if self.member_turns is not None and not isinstance(self.member_turns, bool):
            raise PdsweepError(f"member_turns must be true, false or null, but got {self.member_turns!r}.")

    @property
    def micro(self) -> int:
        """The images one forward and backward take: the batch, or its micro-batches'."""
        return min(self.micro_batch_size or self.batch_size, self.batch_size)

    @property
    def accumulates(self) -> bool:
        """Whether a step accumulates the gradients of several micro-batches."""
        return self.micro < self.batch_size

    @property
    def arranged(self) -> bool:
        """Whether both of how the step is arranged are decided (:func:`pdsweep.cost.arrange`)."""
        return self.micro_batch_size is not None and self.member_turns is not None
