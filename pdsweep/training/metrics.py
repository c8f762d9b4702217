"""What training reports: per-epoch metrics and a trained config's result. No torch here, so
the results layer and the driver read these without loading it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pdsweep.config import Config
from pdsweep.objective import Objective
from pdsweep.space.settings import DEFAULT_TEST_KEEP_RATES
from pdsweep.training.weights import WeightFile

ROBUSTNESS_KEEP_RATES = DEFAULT_TEST_KEEP_RATES  # the robustness curve's test-time keep rates, by default


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch reports (to the progress line, the callback, and Ray Tune)."""

    epoch: int  # 1-based
    train_loss: float
    val_accuracy: float
    val_auc: float | None  # None when the split lacks a second class
    lr: float  # at the end of the epoch
    images_per_second: float  # training throughput, evaluation excluded
    seconds: float  # the whole epoch
    peak_memory_gb: float | None  # CUDA's max_memory_allocated; None on a CPU
    # The other metrics (pdsweep.objective); None in checkpoints written before them.
    val_balanced_accuracy: float | None = None
    val_macro_f1: float | None = None
    val_loss: float | None = None

    def val(self, metric: str) -> float | None:
        """The validation value of ``metric`` (``auc``, ``loss``, ...) this epoch."""
        value = getattr(self, f"val_{metric}")
        return None if value is None else float(value)


EpochCallback = Callable[[EpochMetrics, "Path | None"], None]


@dataclass(frozen=True)
class TrainResult:
    config: Config
    dataset: str
    num_classes: int
    train_gflops: float
    inference_gflops: float
    history: tuple[EpochMetrics, ...]
    test_accuracy: float
    test_auc: float | None
    robustness: dict[float, float]  # test-time keep rate -> test accuracy
    seconds: float
    device: str
    resumed_from_epoch: int = 0
    skipped_images: int = 0
    predicted_memory_gb: float = 0.0
    weights: WeightFile | None = None  # what a pretrained start loaded
    pretrained_blocks: int | None = None  # blocks that started from it (the rest: random)
    saved_weights: tuple[str, ...] = ()  # files --save-weights wrote
    attention_backend: str | None = None  # the attention kernel training ran (an SDPA backend, or eager)
    test_scores: Mapping[str, float | None] = field(default_factory=dict)  # every metric on the test split
    test_intervals: Mapping[str, tuple[float, float] | None] = field(default_factory=dict)  # bootstrap 95%
    class_recall: tuple[float | None, ...] = ()  # on the test split, per class
    scored_by: str = "image"  # what a test score is over: images, or groups (training.eval_groups: mean)
    micro_batch_size: int | None = None  # the images of each forward and backward (the batch: none cut)
    member_turns: bool = False  # an ensemble's members trained in turns

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def val_accuracy(self) -> float:
        return self.history[-1].val_accuracy if self.history else float("nan")

    @property
    def best_val_accuracy(self) -> float:
        return max((m.val_accuracy for m in self.history), default=float("nan"))

    def best_val(self, metric: str) -> float | None:
        """The best epoch's validation value of ``metric`` (the lowest loss, else the highest)."""
        return Objective(metric).best(m.val(metric) for m in self.history)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "dataset": self.dataset,
            "num_classes": self.num_classes,
            "train_gflops": self.train_gflops,
            "inference_gflops": self.inference_gflops,
            "epochs": self.epochs,
            "val_accuracy": self.val_accuracy,
            "best_val_accuracy": self.best_val_accuracy,
            "test_accuracy": self.test_accuracy,
            "attention_backend": self.attention_backend,
            "test_auc": self.test_auc,
            "robustness": {str(rate): acc for rate, acc in self.robustness.items()},
            "seconds": self.seconds,
            "device": self.device,
            "resumed_from_epoch": self.resumed_from_epoch,
            "skipped_images": self.skipped_images,
            "predicted_memory_gb": self.predicted_memory_gb,
            "weights": self.weights.to_dict() if self.weights else None,
            "pretrained_blocks": self.pretrained_blocks,
            "saved_weights": list(self.saved_weights),
            "history": [asdict(m) for m in self.history],
            "test_scores": dict(self.test_scores),
            "test_intervals": {k: list(v) if v else None for k, v in self.test_intervals.items()},
            "class_recall": list(self.class_recall),
            "scored_by": self.scored_by,
            "micro_batch_size": self.micro_batch_size,
            "member_turns": self.member_turns,
        }
