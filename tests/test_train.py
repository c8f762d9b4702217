from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pdsweep.config import Config
from pdsweep.training.data import Dataset, Split, load_dataset
from pdsweep.errors import PdsweepError
from pdsweep.space import TrainingSettings
from pdsweep.objective import METRICS
from pdsweep.training.loop import CHECKPOINT_FILE, train, warmup_cosine

FAST = TrainingSettings(epochs=2, batch_size=16, optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=1, precision="fp32", augment=False)


def _corner_dataset(classes: int = 4, n: int = 400, seed: int = 0) -> Dataset:
    """Noise images whose class is written into one corner patch: learnable in seconds."""
    rng = np.random.default_rng(seed)

    def split(count: int) -> Split:
        labels = rng.integers(0, classes, count)
        images = rng.integers(0, 255, (count, 32, 32, 3)).astype(np.uint8)
        images[:, :8, :8, :] = (labels * (255 // (classes - 1)))[:, None, None, None]
        return Split(images, labels.astype(np.int64))

    return Dataset("corner", 32, tuple(map(str, range(classes))), split(n), split(100), split(100))


def test_training_learns_and_reports_every_metric() -> None:
    dataset = _corner_dataset()
    config = Config("vit_micro", 32, 8, keep_rate=0.75, depth=2, num_classes=4)
    seen = []
    result = train(config, dataset, replace(FAST, epochs=8), device="cpu", on_epoch_end=lambda m, d: seen.append(m))
    assert [m.epoch for m in result.history] == list(range(1, 9)) and seen == list(result.history)
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.test_accuracy > 0.6  # chance is 0.25
    assert set(result.robustness) == {1.0, 0.75, 0.5, 0.25} and result.robustness[1.0] == result.test_accuracy
    first = result.history[0]
    assert first.images_per_second > 0 and first.peak_memory_gb is None
    assert all(first.val(m) is not None for m in METRICS)  # four classes: AUC is the macro one-vs-rest
    assert set(result.test_scores) == set(METRICS) and result.test_scores["accuracy"] == result.test_accuracy
    for metric, (low, high) in result.test_intervals.items():  # type: ignore[misc]
        assert low <= result.test_scores[metric] <= high, metric
    recall = result.class_recall
    assert len(recall) == 4 and result.test_scores["balanced_accuracy"] == pytest.approx(sum(recall) / 4)  # type: ignore[arg-type]
    assert result.best_val("loss") == min(m.val_loss for m in result.history)  # type: ignore[type-var]
    assert result.to_dict()["num_classes"] == 4


@pytest.mark.slow
def test_synthetic_default_dataset_beats_chance(tmp_path: Path) -> None:
    # The built-in dataset at the quickstart's scale, half its default size: a tiny ViT, five
    # epochs, about 25 CPU seconds with the rendering (it reached 0.71 here).
    dataset = load_dataset("synthetic:2000", 64, cache_dir=tmp_path)
    config = Config("vit_micro", 64, 8, keep_rate=0.5, num_classes=dataset.num_classes)
    result = train(config, dataset, replace(TrainingSettings(), epochs=5, precision="fp32"), device="cpu")
    assert result.test_accuracy > 0.4  # chance is 0.25


def test_binary_task_reports_auc() -> None:
    dataset = _corner_dataset(classes=2)
    result = train(Config("vit_micro", 32, 8, depth=1, num_classes=2), dataset, FAST, device="cpu")
    assert result.test_auc is not None and 0 <= result.test_auc <= 1
    assert all(m.val_auc is not None for m in result.history)


class _Crash(Exception):
    pass


def test_checkpoint_round_trip_resumes_the_same_loss_curve(tmp_path: Path) -> None:
    dataset = _corner_dataset(n=96)
    config = Config("vit_micro", 32, 8, keep_rate=0.5, depth=1, ensemble_size=2, num_classes=4)
    settings = replace(FAST, epochs=3, warmup_epochs=2)  # the schedule spans the interruption
    straight = train(config, dataset, settings, device="cpu")

    def crash_after_first(metrics, checkpoint_dir) -> None:
        if metrics.epoch == 1:
            raise _Crash  # the process dies right after epoch 1's checkpoint

    with pytest.raises(_Crash):
        train(config, dataset, settings, device="cpu", checkpoint_dir=tmp_path, on_epoch_end=crash_after_first)
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    resumed = train(config, dataset, settings, device="cpu", checkpoint_dir=tmp_path)
    assert resumed.resumed_from_epoch == 1
    assert [m.train_loss for m in resumed.history] == [m.train_loss for m in straight.history]
    assert [m.lr for m in resumed.history] == [m.lr for m in straight.history]
    assert [m.val_accuracy for m in resumed.history] == [m.val_accuracy for m in straight.history]
    assert resumed.test_accuracy == straight.test_accuracy
    with pytest.raises(PdsweepError, match=r"was trained with other settings \(epochs\); resume with the same ones"):
        train(config, dataset, replace(settings, epochs=5), device="cpu", checkpoint_dir=tmp_path)
    # Another objective changes no step (every metric is recorded); class weights change the loss.
    assert train(config, dataset, replace(settings, metric="loss"), device="cpu", checkpoint_dir=tmp_path).epochs == 3
    with pytest.raises(PdsweepError, match=r"was trained with other settings \(class_weights\)"):
        train(config, dataset, replace(settings, class_weights="balanced"), device="cpu", checkpoint_dir=tmp_path)


def test_checkpoints_are_saved_once_their_interval_has_passed(tmp_path: Path) -> None:
    dataset = _corner_dataset(n=32)
    config = Config("vit_micro", 32, 8, depth=1, num_classes=4)
    for every, folder in ((0.0, tmp_path / "every"), (3600.0, tmp_path / "hourly")):
        folder.mkdir()
        handed = []
        train(config, dataset, replace(FAST, epochs=3), device="cpu", checkpoint_dir=folder,
              on_epoch_end=lambda m, d: handed.append(d), checkpoint_every_s=every)
        if every == 0:
            assert handed == [folder] * 3 and (folder / CHECKPOINT_FILE).is_file()
        else:  # three short epochs in an hour's interval: none is due
            assert handed == [None] * 3 and not (folder / CHECKPOINT_FILE).exists()


def test_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    dataset = _corner_dataset(n=32)
    train(Config("vit_micro", 32, 8, depth=1, num_classes=4), dataset, replace(FAST, epochs=1), device="cpu", checkpoint_dir=tmp_path)
    with pytest.raises(PdsweepError, match=r"checkpoint '.*' is for vit_micro-32px-p8-d1-k1-x1, not vit_micro-32px-p8-d2"):
        train(Config("vit_micro", 32, 8, depth=2, num_classes=4), dataset, FAST, device="cpu", checkpoint_dir=tmp_path)


def test_every_sampling_strategy_and_uniform_mode_train() -> None:
    dataset = _corner_dataset(n=32)
    for sampling in ("random", "structured", "block", "grid"):
        config = Config("vit_micro", 32, 8, keep_rate=0.5, depth=1, sampling=sampling, num_classes=4)
        assert train(config, dataset, replace(FAST, epochs=1), device="cpu").epochs == 1
    uniform = Config("vit_micro", 32, 8, keep_rate=1.0, keep_mode="uniform", keep_range_low=0.5, depth=1, num_classes=4)
    assert train(uniform, dataset, replace(FAST, epochs=1), device="cpu").epochs == 1


def test_ensemble_that_cannot_fit_in_memory_is_refused_before_training() -> None:
    # Over 200 GB even one member at a time, one image at a time: no arrangement fits any host.
    huge = Config("deit_large", 2048, 8, depth=48, ensemble_size=4, num_classes=4)
    dataset = Dataset("tiny", 2048, ("a", "b", "c", "d"), *[Split(np.zeros((1, 2048, 2048, 3), np.uint8), np.zeros(1, np.int64))] * 3)
    with pytest.raises(PdsweepError, match=r"needs about \d+\.\d+ GB at batch 64 \(fp32, arranged as member turns, "
                                           r"micro-batch 1\), more than the .* GB free on cpu; lower --batch-size"):
        train(huge, dataset, replace(FAST, batch_size=64), device="cpu")


def test_config_and_dataset_must_agree() -> None:
    with pytest.raises(PdsweepError, match=r"the config has 10 classes but dataset corner has 4"):
        train(Config("vit_micro", 32, 8, depth=1), _corner_dataset(n=16), FAST, device="cpu")


def test_warmup_then_cosine() -> None:
    factor = warmup_cosine(warmup_steps=10, total_steps=110)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5) and factor(110) == pytest.approx(0.0)
    assert [factor(s) for s in range(10, 110)] == sorted([factor(s) for s in range(10, 110)], reverse=True)


@pytest.mark.parametrize(("attention", "kernel"), [("fused", "flash (CPU)"), ("eager", "eager")])
def test_the_attention_kernel_is_the_one_asked_and_recorded(attention: str, kernel: str) -> None:
    """timm's fused path calls SDPA (on a CPU its flash kernel), the eager one never does; the
    result names the kernel that ran, and test-time keep rates follow training.test_keep_rates."""
    config = Config("vit_micro", 32, 8, keep_rate=0.5, depth=1, num_classes=4)
    settings = replace(FAST, epochs=1, attention=attention, test_keep_rates=[0.3, 1, 0.6])  # type: ignore[arg-type]
    result = train(config, _corner_dataset(n=64), settings, device="cpu")
    assert result.attention_backend == kernel
    assert list(result.robustness) == [1.0, 0.6, 0.3]
