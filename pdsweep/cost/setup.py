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
    """

    batch_size: int = 64
    precision: Precision = "bf16-mixed"
    optimizer: OptimizerName = "adamw"
    attention: Attention = "fused"

    def __post_init__(self) -> None:
        if not is_positive_int(self.batch_size):
            raise PdsweepError(f"`batch_size >= 1` must hold, but got batch_size={self.batch_size!r}.")
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("attention", self.attention, ATTENTIONS)
