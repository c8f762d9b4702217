"""How every trial of a space trains: the ``training`` section of a space file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pdsweep.cost import OPTIMIZERS, PRECISIONS, OptimizerName, Precision, StepSetup
from pdsweep.errors import PdsweepError
from pdsweep.validate import describe_value, is_number, is_positive_int

_TRAINING_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "epochs": ("a positive integer", is_positive_int),
    "batch_size": ("a positive integer", is_positive_int),
    "optimizer": (f"one of {', '.join(OPTIMIZERS)}", lambda v: isinstance(v, str) and v in OPTIMIZERS),
    "lr": ("a positive number", lambda v: is_number(v) and v > 0),
    "weight_decay": ("a number >= 0", lambda v: is_number(v) and v >= 0),
    "warmup_epochs": ("an integer >= 0", lambda v: is_positive_int(v) or (v == 0 and not isinstance(v, bool))),
    "label_smoothing": ("a number in [0, 1)", lambda v: is_number(v) and 0 <= v < 1),
    "grad_clip": ("a positive number, or null for none", lambda v: v is None or (is_number(v) and v > 0)),
    "precision": (f"one of {', '.join(PRECISIONS)}", lambda v: isinstance(v, str) and v in PRECISIONS),
    "augment": ("true or false", lambda v: isinstance(v, bool)),
    "seed": ("an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
}


@dataclass(frozen=True)
class TrainingSettings:
    """How every trial of a space trains. ``momentum`` is fixed at 0.9 for SGD.

    AdamW is the default because ViTs trained from scratch (pdsweep's default: nothing is
    downloaded) barely move under SGD; SGD suits fine-tuning from ``--pretrained`` weights.

    ``precision: bf16-mixed`` is bf16 autocast on a GPU; a CPU trains in fp32. ``augment``
    turns on random resized crops, flips, small rotations and colour jitter.
    """

    epochs: int = 10
    batch_size: int = StepSetup.batch_size
    optimizer: OptimizerName = StepSetup.optimizer
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    precision: Precision = StepSetup.precision
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name, (what, ok) in _TRAINING_RULES.items():
            value = getattr(self, name)
            if not ok(value):
                raise PdsweepError(f"training.{name}: must be {what}, got {describe_value(value)}.")

    @staticmethod
    def of(init: str, training: TrainingSettings, finetune: TrainingSettings | None) -> TrainingSettings:
        """How a trial of ``init`` trains: pretrained ones by ``finetune`` where a space gives it."""
        return finetune if init == "pretrained" and finetune is not None else training

    @property
    def step(self) -> StepSetup:
        """What the cost model needs of these settings: batch size, precision, optimizer."""
        return StepSetup(self.batch_size, self.precision, self.optimizer)
