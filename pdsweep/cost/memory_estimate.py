"""What a step's memory is made of (:class:`MemoryEstimate`) and the sizes both memory models
count in: :mod:`pdsweep.cost.memory` (a ViT) and :mod:`pdsweep.cost.swin_memory` (a Swin)
build one from their own architecture. No torch import here."""

from __future__ import annotations

from dataclasses import dataclass

from pdsweep.cost.flops import GIGA

_FP32 = 4
_INT64 = 8
_ACTIVATION_BYTES: dict[str, int] = {"fp32": 4, "bf16-mixed": 2}
_OPTIMIZER_STATES: dict[str, int] = {"sgd": 1, "adamw": 2}  # fp32 tensors per parameter


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

    Micro-batches (``accumulating``) hold, in every backward after the first, the gradients
    made so far, and the rest of the batch they were cut from (``batch_held``); members that take
    turns leave one member's state on the device (``ensemble_size`` 1).
    """

    params: int
    grads: int  # every member's
    optimizer_state: int
    activations: int  # one member's, saved for backward; the input batch included
    backward_transient: int  # gradients in flight through the last MLP
    embedding_transient: int  # gradients of the token tensor before PatchDropout, and the batch
    step_transient: int  # the optimizer's temporaries
    ensemble_size: int = 1  # members on the device (one when they take turns)
    accumulating: bool = False  # micro-batches: every gradient on the device is alive in each backward
    batch_held: int = 0  # the rest of the batch, held while one micro-batch runs

    @property
    def states(self) -> int:
        """Parameters, gradients and optimizer state: the part that does not scale with batch."""
        return self.params + self.grads + self.optimizer_state

    @property
    def peak_phases(self) -> dict[str, int]:
        others = self.grads if self.accumulating else self.grads * (self.ensemble_size - 1) // self.ensemble_size
        return {
            "backward": self.params + self.optimizer_state + others + self.activations
            + self.backward_transient + self.batch_held,
            "embedding": self.states + self.embedding_transient + self.batch_held,
            "step": self.states + self.step_transient,
        }

    @property
    def total(self) -> int:
        """The peak of a training step."""
        return max(self.peak_phases.values())

    @property
    def gb(self) -> float:
        return self.total / GIGA
