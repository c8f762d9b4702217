"""How every trial of a space trains: the ``training`` section of a space file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pdsweep._compat import restore_with_defaults
from pdsweep.cost import ATTENTIONS, OPTIMIZERS, PRECISIONS, Attention, OptimizerName, Precision, StepSetup
from pdsweep.errors import PdsweepError
from pdsweep.objective import EVAL_GROUPS, METRICS, EvalGroups, MetricName, Objective
from pdsweep.validate import describe_value, is_number, is_positive_int, is_rate

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
    "attention": (f"one of {', '.join(ATTENTIONS)}", lambda v: isinstance(v, str) and v in ATTENTIONS),
    "metric": (f"one of {', '.join(METRICS)}", lambda v: isinstance(v, str) and v in METRICS),
    "eval_groups": (f"one of {', '.join(EVAL_GROUPS)}", lambda v: isinstance(v, str) and v in EVAL_GROUPS),
    "class_weights": ("balanced, or null for none", lambda v: v is None or v == "balanced"),
    "micro_batch_size": ("a positive integer, or null to cut the batch only as memory needs",
                         lambda v: v is None or is_positive_int(v)),
    "member_turns": ("true, false, or null to take turns only as memory needs", lambda v: v is None or isinstance(v, bool)),
    "seed": ("an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "test_keep_rates": ("a non-empty list of distinct numbers in (0, 1], e.g. [1, 0.5, 0.25]",
                        lambda v: isinstance(v, list | tuple) and bool(v) and all(is_rate(r) for r in v)
                        and len({f"{r:g}" for r in v}) == len(v)),  # distinct as results name them (robustness_0.5)
}
# The test-time keep rates of the robustness curve (test accuracy with PatchDropout left on).
DEFAULT_TEST_KEEP_RATES = (1.0, 0.75, 0.5, 0.25)


@dataclass(frozen=True)
class TrainingSettings:
    """How every trial of a space trains. ``momentum`` is fixed at 0.9 for SGD.

    AdamW is the default because ViTs trained from scratch (pdsweep's default: nothing is
    downloaded) barely move under SGD; SGD suits fine-tuning from ``--pretrained`` weights.

    ``precision: bf16-mixed`` is bf16 autocast on a GPU; a CPU trains in fp32. ``augment``
    turns on random resized crops, flips, small rotations and colour jitter. ``attention``: the
    kernel (:class:`pdsweep.cost.StepSetup`; ``eager`` keeps T x T matrices). ``test_keep_rates``:
    the robustness curve, test accuracy with only that share of the patches kept at test time
    (1, the plain test accuracy, is always among them).

    ``metric``: what the sweep optimises (:mod:`pdsweep.objective`); every metric is recorded
    whatever it is. ``eval_groups: mean`` scores each group of a grouped dataset (a patient, an
    exam) by the mean of its images' probabilities; ``image`` scores images. ``class_weights:
    balanced`` weighs the training loss inverse to class frequency.

    ``micro_batch_size`` and ``member_turns`` fix how a step is arranged on the device (micro-
    batches whose gradients accumulate; an ensemble's members one at a time); null (the default)
    leaves it to the memory cap (:func:`pdsweep.cost.arrange`). Neither changes the results.
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
    attention: Attention = StepSetup.attention
    test_keep_rates: tuple[float, ...] = DEFAULT_TEST_KEEP_RATES
    metric: MetricName = "accuracy"
    eval_groups: EvalGroups = "image"
    class_weights: str | None = None
    micro_batch_size: int | None = None
    member_turns: bool | None = None

    def __post_init__(self) -> None:
        for name, (what, ok) in _TRAINING_RULES.items():
            value = getattr(self, name)
            if not ok(value):
                raise PdsweepError(f"training.{name}: must be {what}, got {describe_value(value)}.")
        rates = tuple(sorted({1.0, *(float(r) for r in self.test_keep_rates)}, reverse=True))
        object.__setattr__(self, "test_keep_rates", rates)  # a YAML list, normalised: 1 first, descending

    def __setstate__(self, state: dict[str, Any]) -> None:  # pickled by an older pdsweep: new fields default
        restore_with_defaults(self, state)

    @staticmethod
    def of(init: str, training: TrainingSettings, finetune: TrainingSettings | None) -> TrainingSettings:
        """How a trial of ``init`` trains: pretrained ones by ``finetune`` where a space gives it."""
        return finetune if init == "pretrained" and finetune is not None else training

    @property
    def objective(self) -> Objective:
        return Objective(self.metric)

    @property
    def step(self) -> StepSetup:
        """What the cost model needs of these settings: batch size, precision, optimizer, attention,
        and the step's arrangement as far as it is fixed."""
        return StepSetup(self.batch_size, self.precision, self.optimizer, self.attention, self.micro_batch_size,
                         self.member_turns)

    def arranged(self, setup: StepSetup) -> TrainingSettings:
        """These settings with the arrangement of ``setup`` (:func:`pdsweep.cost.arrange`'s)."""
        return replace(self, micro_batch_size=setup.micro, member_turns=setup.member_turns)
