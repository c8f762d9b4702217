"""One objective, declared once: a real sweep on a real local Ray ranks, stops and reports by
the metric it is given (the trials are stand-ins that report fixed metrics per config, so what
accuracy and AUC each say is known here)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from conftest import assert_one_line_error, stand_in_trainable
from pdsweep.results import rows as results

# Four configs of one tier. Accuracy and AUC order them differently: `p4-d2` has the best
# accuracy and the worst AUC but one; `p8-d2` the best AUC and the worst accuracy. The cheapest,
# `p8-d1`, runs last (a grid runs the dearest first, one at a time here): its AUC is below every
# other's, its accuracy above the median of theirs.
METRICS_OF = {  # (patch_size, depth): (val accuracy, val AUC)
    (4, 2): (0.90, 0.60),
    (4, 1): (0.85, 0.80),
    (8, 2): (0.80, 0.95),
    (8, 1): (0.88, 0.55),
}
SPACE = """\
axes:
  model: vit_micro
  resolution: 32
  patch_size: [4, 8]
  depth: [1, 2]
  keep_rate: 1
training:
  epochs: 4
  warmup_epochs: 0
  batch_size: 16
  precision: fp32
  augment: false
"""


def _values(spec: Any, epoch: int) -> dict[str, float]:
    accuracy, auc = METRICS_OF[(spec.config.patch_size, spec.config.depth)]
    rise = 0.01 * epoch  # every config improves a little each epoch, in step
    return {"val_accuracy": accuracy + rise, "val_auc": auc + rise, "val_balanced_accuracy": accuracy + rise,
            "val_macro_f1": accuracy + rise, "val_loss": 1.0 - auc - rise}


def stand_in(trial_config: dict[str, Any]) -> None:
    """Reports as ``pdsweep.sweep.trainable.run_trial`` does, with the metrics of :data:`METRICS_OF`."""
    from ray import tune

    from pdsweep.sweep.spec import TrialSpec
    from pdsweep.sweep.trainable import _log_start

    spec = TrialSpec.from_dict(trial_config)
    _log_start(spec.context.starts_log, resumed=False)
    node = {"node_id": "stand-in", "device_kind": "cpu", "devices": 1.0, "started_at": time.time()}
    epochs = spec.context.training.epochs
    for epoch in range(1, epochs + 1):
        time.sleep(0.05)
        tune.report({"epoch": epoch, "train_loss": 1.0 / epoch, **_values(spec, epoch), "done_training": False,
                     "reported_at": time.time(), **node})
    last = _values(spec, epochs)
    tune.report({"epoch": epochs, "train_loss": 1.0 / epochs, **last, "done_training": True,
                 **{f"best_{k}": v for k, v in last.items()}, **{k.replace("val_", "test_"): v for k, v in last.items()},
                 "test_auc_interval": [last["val_auc"] - 0.05, last["val_auc"] + 0.03],
                 "class_recall": [["benign", 0.9], ["malignant", 0.5]], "split_counts": [["train", 40, 12], ["val", 9, 3],
                                                                                     ["test", 9, 3]],
                 "train_seconds": 0.05 * epochs, "reported_at": time.time(), **node})


@pytest.fixture
def stand_in_trials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Trials run :func:`stand_in` instead of training (the rest of the sweep is real)."""
    with stand_in_trainable(monkeypatch, stand_in):
        yield


def test_a_sweep_under_auc_ranks_stops_and_reports_by_auc(ray_session, stand_in_trials, cli, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    runs = str(tmp_path / "runs")
    result = cli("run", "--space", str(space), "--budget-gflops", "1", "--search", "grid", "--metric", "auc",
                 "--dataset", "synthetic:40", "--runs-dir", runs, "--cache-dir", str(tmp_path / "cache"),
                 "--concurrency", "1", "--no-estimate", "--name", "auc", "--json")
    assert result.code == 0, result.err
    rows = {(r.config.patch_size, r.config.depth): r for r in results.read_rows(Path(runs) / "auc" / "results.parquet")}
    assert set(rows) == set(METRICS_OF) and all(r.metric == "auc" for r in rows.values())

    # Stopped by AUC: the last config, judged at the first rung (epoch 1) against the three before it.
    last = rows[(8, 1)]
    assert last.status == "stopped" and last.epochs_run == 1
    peers = [METRICS_OF[key] for key in METRICS_OF if key != (8, 1)]
    median = lambda values: float(np.percentile(values, 50))  # noqa: E731  (the rung's cutoff, reduction factor 2)
    assert METRICS_OF[(8, 1)][1] < median([auc for _, auc in peers])
    assert METRICS_OF[(8, 1)][0] > median([acc for acc, _ in peers])  # under accuracy it would have gone on
    assert all(r.status == "completed" for key, r in rows.items() if key != (8, 1))

    # Ranked by AUC: the tier's best, the Optuna study's values and its direction.
    report = result.json()
    assert report["tiers"][0]["best"]["patch_size"] == 8 and report["tiers"][0]["best"]["depth"] == 2
    assert report["metric"] == "auc" and report["search_metric"] == "auc"
    best = report["tiers"][0]["best"]
    assert best["metric"] == pytest.approx(0.95 + 0.04) and best["test"] == pytest.approx(0.99)
    assert best["test_interval"] == pytest.approx([0.94, 1.02])
    assert best["class_recall"] == {"benign": 0.9, "malignant": 0.5}
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(Path(runs) / "auc" / "optuna.journal")))
    study = optuna.load_study(study_name="tier-1", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    told = {(t.user_attrs["config"]): t.value for t in study.trials if t.state.name == "COMPLETE"}
    assert sorted(told.values()) == pytest.approx(sorted(METRICS_OF[k][1] + 0.04 for k in METRICS_OF if k != (8, 1)))
    text = (Path(runs) / "auc" / "report" / "report.md").read_text()
    assert "Metric: best validation AUC" in text and "Data: train 40 images in 12 groups" in text
    assert "| benign | malignant |" in text and "| 90.0% | 50.0% |" in text

    # The same sweep read under accuracy names the other config, and says what the search ran under.
    again = cli("report", "auc", "--runs-dir", runs, "--metric", "accuracy", "--json")
    assert again.code == 0, again.err
    under_accuracy = again.json()
    assert (under_accuracy["tiers"][0]["best"]["patch_size"], under_accuracy["tiers"][0]["best"]["depth"]) == (4, 2)
    assert under_accuracy["metric"] == "accuracy" and under_accuracy["search_metric"] == "auc"
    assert any("the search ran under AUC" in note for note in under_accuracy["notes"])
    # Written beside the sweep's own report, which is left as it was.
    assert (Path(runs) / "auc" / "report-accuracy" / "report.md").is_file()
    assert (Path(runs) / "auc" / "report" / "report.md").read_text() == text


# ---- what cannot be scored is refused before anything is written --------------------------------


def _one_class_val(root: Path) -> Path:
    """A folder dataset whose val/ split has images of one class only."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes, count in (("train", ("a", "b"), 8), ("val", ("a",), 4), ("test", ("a", "b"), 3)):
        for name in classes:
            for i in range(count):
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(path)
    return root


@pytest.mark.parametrize(("dataset", "extra", "fragments"), [
    ("folder", ("--metric", "auc"), ("--metric auc needs two classes in the val split", "has 1")),
    ("synthetic:40", ("--set", "training.eval_groups=mean"), ("eval_groups: mean scores groups", "has none")),
    ("synthetic:40", ("--metric", "f1"), ("--metric", "invalid choice")),
    ("synthetic:40", ("--set", "training.class_weights=inverse"), ("training.class_weights", "balanced")),
])
def test_a_sweep_that_cannot_be_scored_writes_nothing(cli, tmp_path: Path, dataset: str, extra: tuple[str, ...],
                                                       fragments: tuple[str, ...]) -> None:
    spec = f"folder:{_one_class_val(tmp_path / 'data')}" if dataset == "folder" else dataset
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("resolution: 32", "resolution: 16"))
    result = cli("run", "--space", str(space), "--budget-gflops", "1", "--dataset", spec, "--runs-dir",
                 str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--no-estimate", *extra)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "runs").exists()


def test_train_refuses_an_auc_it_cannot_compute(cli, tmp_path: Path) -> None:
    result = cli("train", "--model", "vit_micro", "--resolution", "16", "--patch-size", "8", "--depth", "1",
                 "--epochs", "1", "--dataset", f"folder:{_one_class_val(tmp_path / 'data')}", "--metric", "auc",
                 "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(result, "--metric auc needs two classes in the val split")


def test_a_finetune_section_cannot_change_the_objective(tmp_path: Path) -> None:
    from pdsweep.errors import PdsweepError
    from pdsweep.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("  augment: false\n", "  augment: false\n  metric: auc\nfinetune:\n  metric: loss\n"))
    with pytest.raises(PdsweepError, match=r"finetune.metric: every trial of a sweep is judged alike"):
        load_space(str(path))
