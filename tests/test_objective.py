"""pdsweep.objective: every metric against its definition, computed by hand here."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdsweep.errors import PdsweepError
from pdsweep.objective import (
    METRICS, Objective, auc, balanced_weights, binary_auc, bootstrap_intervals, check_scorable, class_recall,
    group_mean, scores,
)


def _pairwise_auc(scores_: np.ndarray, positive: np.ndarray) -> float:
    """The probability that a positive outranks a negative (ties: half), pair by pair."""
    pos, neg = scores_[positive], scores_[~positive]
    return sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_binary_auc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    values = rng.random(60).round(1)  # with ties
    positive = rng.random(60) > 0.5
    assert binary_auc(values, positive) == pytest.approx(_pairwise_auc(values, positive))
    assert binary_auc(values, np.ones(60, dtype=bool)) is None


def test_multiclass_auc_is_the_macro_mean_of_one_vs_rest() -> None:
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(3), 40)
    labels = rng.integers(0, 3, 40)
    expected = np.mean([_pairwise_auc(proba[:, k], labels == k) for k in range(3)])
    assert auc(proba, labels) == pytest.approx(expected)
    # A class absent from the labels has no one-vs-rest AUC: the mean is over the others.
    labels[labels == 2] = 0
    assert auc(proba, labels) == pytest.approx(np.mean([_pairwise_auc(proba[:, k], labels == k) for k in range(2)]))


def test_scores_on_an_imbalanced_fixture_by_hand() -> None:
    # 8 of class 0, 2 of class 1; the model says 0 for everything but one class-1 image.
    labels = np.array([0] * 8 + [1, 1])
    p1 = np.array([0.1, 0.2, 0.3, 0.1, 0.2, 0.4, 0.1, 0.45, 0.9, 0.3])
    proba = np.stack([1 - p1, p1], axis=1)
    got = scores(proba, labels)
    assert got["accuracy"] == pytest.approx(0.9)  # 9 of 10 right
    assert got["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)  # recall 8/8 and 1/2
    # F1 of class 0: precision 8/9, recall 1 -> 16/17; class 1: precision 1, recall 1/2 -> 2/3.
    assert got["macro_f1"] == pytest.approx((16 / 17 + 2 / 3) / 2)
    assert got["auc"] == pytest.approx(_pairwise_auc(p1, labels == 1))
    assert got["loss"] == pytest.approx(-np.mean(np.log(proba[np.arange(10), labels])))
    assert class_recall(proba, labels) == (1.0, 0.5)
    # A majority-class model: accuracy 80%, balanced accuracy 50%, AUC of constant scores 0.5.
    constant = np.tile([0.8, 0.2], (10, 1))
    majority = scores(constant, labels)
    assert (majority["accuracy"], majority["balanced_accuracy"], majority["auc"]) == pytest.approx((0.8, 0.5, 0.5))


def test_weighted_loss_is_torchs_weighted_cross_entropy() -> None:
    import torch

    rng = np.random.default_rng(2)
    proba = rng.dirichlet(np.ones(3), 30)
    labels = rng.integers(0, 3, 30)
    weights = balanced_weights(labels, 3)
    assert weights @ np.bincount(labels, minlength=3) == pytest.approx(30)  # n / (classes x count) per class
    expected = torch.nn.functional.nll_loss(torch.log(torch.tensor(proba)), torch.tensor(labels), weight=torch.tensor(weights))
    assert scores(proba, labels, weights)["loss"] == pytest.approx(float(expected))


def test_group_level_auc_equals_a_hand_computation() -> None:
    # Three patients of two images each, one of one image; probabilities of class 1 per image.
    groups = np.array([10, 10, 11, 11, 12, 12, 13])
    labels = np.array([0, 0, 1, 1, 0, 0, 1])
    p1 = np.array([0.2, 0.6, 0.5, 0.7, 0.1, 0.3, 0.35])
    proba = np.stack([1 - p1, p1], axis=1)
    mean, group_labels = group_mean(proba, labels, groups)
    # By hand: patient means 0.4, 0.6, 0.2, 0.35 with labels 0, 1, 0, 1. Positives 0.6 and 0.35
    # against negatives 0.4 and 0.2: pairs won 0.6>0.4, 0.6>0.2, 0.35>0.2; lost 0.35<0.4 -> 3/4.
    assert mean[:, 1] == pytest.approx([0.4, 0.6, 0.2, 0.35]) and list(group_labels) == [0, 1, 0, 1]
    assert scores(mean, group_labels)["auc"] == pytest.approx(0.75)
    assert scores(proba, labels)["auc"] != pytest.approx(0.75)  # image by image it is another number


def test_a_group_of_two_labels_is_named() -> None:
    proba = np.full((3, 2), 0.5)
    with pytest.raises(PdsweepError, match=r"group 7 has images of more than one label; .* eval_groups: image"):
        group_mean(proba, np.array([0, 1, 0]), np.array([7, 7, 8]))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_bootstrap_intervals_hold_the_estimate_and_repeat(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * 15)
    proba = rng.dirichlet(np.ones(2), 30)
    point = scores(proba, labels)
    intervals = bootstrap_intervals(proba, labels, samples=200, seed=3)
    assert intervals == bootstrap_intervals(proba, labels, samples=200, seed=3)
    for name in METRICS:
        low, high = intervals[name]  # type: ignore[misc]
        assert low <= high
        assert low - 0.15 <= point[name] <= high + 0.15  # type: ignore[operator]  (a percentile interval may miss its centre a little)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 4), st.booleans())
def test_a_resample_scores_as_its_rows_would(seed: int, classes: int, weighted: bool) -> None:
    """The bootstrap scores a resample by the times each row was drawn; the same numbers as
    :func:`scores` of the rows themselves (ties in the scores included)."""
    from pdsweep.objective import _Resamples

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    proba = rng.dirichlet(np.ones(classes), n).round(1)  # rounded: ties
    proba /= proba.sum(axis=1, keepdims=True)
    labels = rng.integers(0, classes, n)
    weights = rng.random(classes) + 0.1 if weighted else None
    rows = rng.integers(0, n, n)
    expected = scores(proba[rows], labels[rows], weights)
    got = _Resamples(proba, labels, weights).scores(np.bincount(rows, minlength=n).astype(float))
    for name in METRICS:
        assert (got[name] is None) == (expected[name] is None), name
        if expected[name] is not None:
            assert got[name] == pytest.approx(expected[name]), name


def test_an_objective_knows_its_direction_and_keys() -> None:
    loss, auc_ = Objective("loss"), Objective("auc")
    assert (loss.mode, loss.direction, loss.best([0.3, 0.2, None, float("nan")])) == ("min", "minimize", 0.2)
    assert (auc_.mode, auc_.val_key, auc_.best_key, auc_.test_key) == ("max", "val_auc", "best_val_auc", "test_auc")
    assert loss.score(0.2) > loss.score(0.3) and auc_.score(0.9) > auc_.score(0.8)
    assert Objective().format(0.905, 0.012) == "90.5% ± 1.2%" and auc_.format(0.9123) == "0.912"
    with pytest.raises(PdsweepError, match=r"metric 'f1' is not one pdsweep knows; choose one of accuracy"):
        Objective("f1")  # type: ignore[arg-type]


def _dataset(val_labels: list[int], groups: list[int] | None = None) -> SimpleNamespace:
    split = SimpleNamespace(labels=np.array(val_labels), groups=None if groups is None else np.array(groups))
    return SimpleNamespace(name="d", val=split, test=split, num_classes=2)


def test_check_scorable_refuses_what_cannot_be_computed() -> None:
    check_scorable(_dataset([0, 1]), "auc", "image")
    with pytest.raises(PdsweepError, match=r"--metric auc needs two classes in the val split, and dataset d's has 1"):
        check_scorable(_dataset([1, 1]), "auc", "image")
    with pytest.raises(PdsweepError, match=r"eval_groups: mean scores groups, and dataset d has none"):
        check_scorable(_dataset([0, 1]), "accuracy", "mean")
    check_scorable(_dataset([0, 1, 1], [0, 1, 1]), "auc", "mean")
    with pytest.raises(PdsweepError, match=r"group 0 has images of more than one label"):
        check_scorable(_dataset([0, 1], [0, 0]), "accuracy", "mean")
