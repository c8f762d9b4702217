"""What a sweep optimises, declared once, and how every metric is computed.

``training.metric`` (``--metric``) names the objective: ``accuracy`` (the default),
``balanced_accuracy`` (the mean recall over classes), ``auc`` (ROC AUC; for more than two
classes the macro mean of each class against the rest), ``macro_f1``, or ``loss`` (the
cross-entropy of the predicted probabilities, minimised). The searcher, the schedulers, each
tier's best, the repeats, the verdicts, the Pareto front, the paper layout, MLflow and the report
all read it from one :class:`Objective`. Every trial records every metric, so a finished sweep can
be read under another one (``pdsweep report --metric``).

Scores are computed here from the members' mean probabilities, with numpy only (the driver and
the report import this without torch). With ``training.eval_groups: mean`` each group (a
patient, an exam) is scored by the mean of its images' probabilities (:func:`group_mean`), as the
study scored exams.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from pdsweep.errors import PdsweepError

MetricName = Literal["accuracy", "balanced_accuracy", "auc", "macro_f1", "loss"]
METRICS: tuple[MetricName, ...] = get_args(MetricName)
EvalGroups = Literal["image", "mean"]
EVAL_GROUPS: tuple[str, ...] = get_args(EvalGroups)
BOOTSTRAP_SAMPLES = 1000
_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "auc": "AUC", "macro_f1": "macro F1",
           "loss": "loss"}
_RATES = ("accuracy", "balanced_accuracy")  # shown as percentages; AUC, F1 and loss as numbers


@dataclass(frozen=True)
class Objective:
    """The metric a sweep ranks by, and which way is better."""

    metric: MetricName = "accuracy"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise PdsweepError(f"metric {self.metric!r} is not one pdsweep knows; choose one of {', '.join(METRICS)}.")

    @property
    def minimised(self) -> bool:
        return self.metric == "loss"

    @property
    def mode(self) -> Literal["max", "min"]:
        """Ray Tune's mode."""
        return "min" if self.minimised else "max"

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """Optuna's direction."""
        return "minimize" if self.minimised else "maximize"

    @property
    def val_key(self) -> str:
        """The per-epoch result key (what Tune, the schedulers and the searcher watch)."""
        return f"val_{self.metric}"

    @property
    def best_key(self) -> str:
        """The row column of the trial's best epoch (what a report ranks by)."""
        return f"best_val_{self.metric}"

    @property
    def test_key(self) -> str:
        return f"test_{self.metric}"

    @property
    def label(self) -> str:
        """As a sentence says it: ``AUC``, ``balanced accuracy``."""
        return _LABELS[self.metric]

    def score(self, value: float) -> float:
        """Higher is better, whatever the metric: the loss negated."""
        return -value if self.minimised else value

    def best(self, values: Iterable[float | None]) -> float | None:
        """The best of ``values`` (the finite ones), or None."""
        finite = [v for v in values if v is not None and math.isfinite(v)]
        return (min if self.minimised else max)(finite) if finite else None

    def format(self, value: float | None, spread: float | None = None) -> str:
        """``90.5%`` (``± 1.2%``) for a rate; ``0.912`` (``± 0.010``) for AUC, F1 and loss."""
        if value is None or not math.isfinite(value):
            return "-"
        if self.metric in _RATES:
            text = f"{value:.1%}"
            return text + (f" ± {spread:.1%}" if spread is not None else "")
        return f"{value:.3f}" + (f" ± {spread:.3f}" if spread is not None else "")

    def difference(self, delta: float) -> str:
        """A difference of two values: ``+1.2%`` (points) or ``+0.013``."""
        return f"{delta:+.1%}" if self.metric in _RATES else f"{delta:+.3f}"


# ---- scores ---------------------------------------------------------------------------------


def scores(proba: np.ndarray, labels: np.ndarray, class_weights: np.ndarray | None = None) -> dict[str, float | None]:
    """Every metric of ``proba`` (n, C) against ``labels`` (n,); None where a metric is undefined
    (AUC needs two classes present). ``class_weights`` weigh the loss as training did (None: plain)."""
    proba, labels = np.asarray(proba, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if not len(labels):
        return {name: None for name in METRICS}
    predicted = proba.argmax(axis=1)
    recall = class_recall(proba, labels)
    present = [r for r in recall if r is not None]
    return {
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(np.mean(present)),
        "auc": auc(proba, labels),
        "macro_f1": _macro_f1(predicted, labels, proba.shape[1]),
        "loss": _loss(proba, labels, class_weights),
    }


def class_recall(proba: np.ndarray, labels: np.ndarray) -> tuple[float | None, ...]:
    """Each class's recall (the share of its images predicted as it); None for a class absent."""
    predicted = np.asarray(proba).argmax(axis=1)
    labels = np.asarray(labels)
    return tuple(float((predicted[labels == k] == k).mean()) if (labels == k).any() else None
                 for k in range(np.asarray(proba).shape[1]))


def auc(proba: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC: two classes, of class 1's probability; more, the macro mean of one-vs-rest AUCs
    over the classes present (with at least one other class present). None with one class."""
    proba, labels = np.asarray(proba, dtype=np.float64), np.asarray(labels)
    if proba.shape[1] == 2:
        return binary_auc(proba[:, 1], labels == 1)
    each = [binary_auc(proba[:, k], labels == k) for k in range(proba.shape[1])]
    defined = [a for a in each if a is not None]
    return float(np.mean(defined)) if defined else None


def binary_auc(scores_: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties given their mean rank."""
    positive = np.asarray(positive, dtype=bool)
    positives = int(positive.sum())
    negatives = len(positive) - positives
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(np.asarray(scores_, dtype=np.float64), return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # 1-based rank of each distinct score
    mean_rank = first_rank + (counts - 1) / 2
    rank_sum = float(mean_rank[inverse][positive].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _macro_f1(predicted: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """The mean F1 over the classes that occur among the labels or the predictions."""
    f1 = []
    for k in range(classes):
        true, guessed = labels == k, predicted == k
        if not true.any() and not guessed.any():
            continue
        hits = int((true & guessed).sum())
        f1.append(2 * hits / (int(true.sum()) + int(guessed.sum())))
    return float(np.mean(f1))


def _loss(proba: np.ndarray, labels: np.ndarray, class_weights: np.ndarray | None) -> float:
    picked = -np.log(np.clip(proba[np.arange(len(labels)), labels], 1e-12, None))
    if class_weights is None:
        return float(picked.mean())
    weights = np.asarray(class_weights, dtype=np.float64)[labels]
    return float((picked * weights).sum() / weights.sum())  # torch's cross_entropy(weight=...) mean


def balanced_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """Loss weights inverse to class frequency (``training.class_weights: balanced``), as
    scikit-learn's ``compute_class_weight('balanced')``: n / (classes x count); 0 for a class with
    no images (it contributes no loss anyway)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def group_mean(proba: np.ndarray, labels: np.ndarray, groups: np.ndarray,
               names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One row per group: the mean of its images' probabilities, and its label (every image of
    a group must share it: a group of two labels is an error naming it, by ``names[id]`` if given)."""
    groups = np.asarray(groups)
    names_, inverse = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(names_), proba.shape[1]))
    np.add.at(sums, inverse, np.asarray(proba, dtype=np.float64))
    mean = sums / np.bincount(inverse, minlength=len(names_))[:, None]
    group_labels = np.full(len(names_), -1, dtype=np.int64)
    group_labels[inverse] = labels
    mixed = np.flatnonzero(np.bincount(inverse, weights=(group_labels[inverse] != labels), minlength=len(names_)))
    if len(mixed):
        group = names_[mixed[0]].item()
        raise PdsweepError(f"group {(names[group] if names else group)!r} has images of more than one label; training.eval_groups: mean "
                           "scores a group by one label: give each group one label, or set eval_groups: image.")
    return mean, group_labels


# ---- uncertainty ----------------------------------------------------------------------------


def bootstrap_intervals(proba: np.ndarray, labels: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                        class_weights: np.ndarray | None = None) -> dict[str, tuple[float, float] | None]:
    """A 95% percentile-bootstrap interval of every metric over the rows (images, or groups),
    resampled with replacement ``samples`` times (seeded). None for a metric with fewer than 20
    defined resamples (AUC of a resample with one class is undefined and left out).

    A resample is scored as :func:`scores` scores its rows, by the times each row was drawn
    (:class:`_Resamples`): the sorting AUC needs is done once, not per resample."""
    proba, labels = np.asarray(proba, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if len(labels) < 2:
        return {name: None for name in METRICS}
    rng = np.random.default_rng(seed)
    resamples = _Resamples(proba, labels, class_weights)
    drawn: dict[str, list[float]] = {name: [] for name in METRICS}
    for _ in range(samples):
        counts = np.bincount(rng.integers(0, len(labels), len(labels)), minlength=len(labels)).astype(np.float64)
        for name, value in resamples.scores(counts).items():
            if value is not None:
                drawn[name].append(value)
    return {name: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if len(v) >= 20 else None
            for name, v in drawn.items()}


class _Resamples:
    """:func:`scores` of the rows drawn ``counts[i]`` times each, without copying them."""

    def __init__(self, proba: np.ndarray, labels: np.ndarray, class_weights: np.ndarray | None) -> None:
        self.labels, self.classes = labels, proba.shape[1]
        self.predicted = proba.argmax(axis=1)
        self.correct = (self.predicted == labels).astype(np.float64)
        self.nll = -np.log(np.clip(proba[np.arange(len(labels)), labels], 1e-12, None))
        self.loss_weight = np.ones(len(labels)) if class_weights is None else np.asarray(class_weights, np.float64)[labels]
        columns = [1] if self.classes == 2 else range(self.classes)  # binary: class 1's probability
        self.ranked = []  # per column: each row's distinct-score index, whether it is positive, how many distinct
        for column in columns:
            _, inverse = np.unique(proba[:, column], return_inverse=True)
            self.ranked.append((inverse, (labels == column).astype(np.float64), int(inverse.max()) + 1))

    def scores(self, counts: np.ndarray) -> dict[str, float | None]:
        k = self.classes
        in_class = np.bincount(self.labels, counts, minlength=k)
        hits = np.bincount(self.labels, counts * self.correct, minlength=k)
        guessed = np.bincount(self.predicted, counts, minlength=k)
        present = in_class > 0
        either = present | (guessed > 0)
        aucs = [a for a in (self._auc(counts, *ranked) for ranked in self.ranked) if a is not None]
        return {
            "accuracy": float(hits.sum() / counts.sum()),
            "balanced_accuracy": float(np.mean(hits[present] / in_class[present])),
            "auc": float(np.mean(aucs)) if aucs else None,
            "macro_f1": float(np.mean(2 * hits[either] / (in_class[either] + guessed[either]))),
            "loss": float((counts * self.loss_weight * self.nll).sum() / (counts * self.loss_weight).sum()),
        }

    @staticmethod
    def _auc(counts: np.ndarray, inverse: np.ndarray, positive: np.ndarray, distinct: int) -> float | None:
        """The Mann-Whitney AUC of the drawn rows: per distinct score, the drawn positives times
        the drawn negatives below it (and half those level with it)."""
        pos = np.bincount(inverse, counts * positive, minlength=distinct)
        neg = np.bincount(inverse, counts * (1 - positive), minlength=distinct)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return None
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


def result_keys(prefix: str, values: Mapping[str, float | None]) -> dict[str, float]:
    """``{prefix}{metric}: value`` for every defined metric (``val_auc``, ``test_macro_f1``)."""
    return {f"{prefix}{name}": float(value) for name, value in values.items() if value is not None}


def check_scorable(dataset: Any, metric: str, eval_groups: str) -> None:
    """``metric`` can be computed on ``dataset``'s validation and test splits (a
    :class:`pdsweep.training.data.Dataset`): groups for ``eval_groups: mean``, one label each;
    two classes in each for an AUC. Checked before a sweep writes anything or a run trains."""
    for name, split in (("val", dataset.val), ("test", dataset.test)):
        labels = np.asarray(split.labels)
        if eval_groups == "mean":
            if split.groups is None:
                raise PdsweepError(f"training.eval_groups: mean scores groups, and dataset {dataset.name} has none; give "
                                   "a dataset with groups (csv:PATH with a group column, parquet:PATH?group=COL) or "
                                   "set eval_groups: image.")
            labels = group_mean(np.zeros((len(labels), 1)), labels, split.groups, getattr(dataset, "group_names", None))[1]
        present = len(np.unique(labels))
        if metric == "auc" and present < 2:
            raise PdsweepError(f"--metric auc needs two classes in the {name} split, and dataset {dataset.name}'s has "
                               f"{present}; add images of another class there, or choose --metric accuracy.")
