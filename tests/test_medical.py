"""The medical path end to end, as a hospital group would run it: a CSV manifest of 16-bit
X-ray-like PNGs, several per patient, imbalanced classes, swept on a real local Ray with real
training under ``--metric auc``, each patient scored by the mean of its images' probabilities,
balanced class weights; the rows, the report and MLflow say what was scored and how sure it is."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient
from PIL import Image

from pdsweep.results import rows as results

SPACE = """\
axes:
  model: vit_micro
  resolution: 32
  patch_size: 8
  depth: [1, 2]
  keep_rate: 1.0
training:
  epochs: 3
  warmup_epochs: 0
  batch_size: 16
  precision: fp32
  augment: false
  eval_groups: mean
  class_weights: balanced
"""


def _manifest(root: Path, patients: int = 36) -> Path:
    """Patients of 2-3 images each, one in three malignant: a 12-bit background near 1000 and,
    for a malignant patient, a bright 12 px square (value 3000): every value above 255."""
    rng = np.random.default_rng(0)
    rows = [("path", "label", "group")]
    for patient in range(patients):
        label = "malignant" if patient % 3 == 0 else "benign"
        for view in range(2 + patient % 2):
            image = rng.integers(900, 1100, (32, 32)).astype(np.uint16)
            if label == "malignant":
                x, y = rng.integers(0, 20, 2)
                image[y : y + 12, x : x + 12] = 3000
            path = root / "images" / f"p{patient:03d}-{view}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            rows.append((f"images/{path.name}", label, f"patient-{patient:03d}"))
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return manifest


def test_a_grouped_16bit_manifest_sweeps_under_auc_by_patient(ray_session, cli, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "data")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    runs = tmp_path / "runs"
    result = cli("run", "--space", str(space), "--budget-gflops", "1", "--trials", "2", "--metric", "auc",
                 "--dataset", f"csv:{manifest}", "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "cache"),
                 "--concurrency", "2", "--no-estimate", "--name", "xray", "--json")
    assert result.code == 0, result.err
    rows = results.read_rows(runs / "xray" / "results.parquet")
    assert len(rows) == 2 and all(r.status == "completed" for r in rows)
    for row in rows:
        assert row.metric == "auc" and row.scored_by == "mean"
        counts = {c.split: (c.images, c.groups) for c in row.split_counts or ()}
        assert sum(images for images, _ in counts.values()) == 90 and sum(g for _, g in counts.values()) == 36
        assert all(row.best_val(m) is not None and row.test(m) is not None for m in ("accuracy", "auc", "loss"))
        low, high = row.interval("auc")  # type: ignore[misc]
        assert low <= row.test_auc <= high  # type: ignore[operator]
        assert [c.name for c in row.class_recall or ()] == ["benign", "malignant"]
        assert row.history and all(point.val_auc is not None for point in row.history)

    report = result.json()
    best = report["tiers"][0]["best"]
    assert report["metric"] == "auc" and report["scored_by"] == "mean"
    assert report["splits"]["test"]["groups"] == counts["test"][1]
    assert best["test"] > 0.9  # the signal lies above 255 and the patients' images agree
    assert set(best["class_recall"]) == {"benign", "malignant"}

    # MLflow: every metric of the best trial, the interval and the per-class recall.
    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    [parent] = client.search_runs([client.get_experiment_by_name("space").experiment_id],
                                  filter_string="tags.`pdsweep.sweep` = 'xray'")
    assert parent.data.params["metric"] == "auc" and parent.data.params["eval_groups"] == "mean"
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2
    for child in children:
        logged = child.data.metrics
        assert {"best_val_auc", "test_auc", "test_auc_ci_low", "test_auc_ci_high", "test_recall_malignant",
                "best_val_loss", "test_balanced_accuracy"} <= set(logged)
        assert child.data.params["metric"] == "auc"
        epochs = {m.step for m in client.get_metric_history(child.info.run_id, "val_balanced_accuracy")}
        assert epochs == {1, 2, 3}  # each epoch's, at its step
