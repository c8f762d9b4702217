"""A Swin and a ViT in one space: planned, swept on Ray, written to the results table and MLflow,
and trained alone by ``pdsweep train``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pdsweep.results import rows as results
from pdsweep.sweep import SweepSettings, run_sweep
from tests.conftest import CliResult

MIXED_SPACE = """\
axes:
  model: [vit_micro, swin_micro]
  resolution: 28
  patch_size: [4, 7]
  depth: 4
  keep_rate: {low: 0.3, high: 1.0}
training:
  epochs: 2
  batch_size: 16
  precision: fp32
  augment: false
"""


def test_a_swin_and_vit_space_plans_and_runs_a_two_trial_sweep(ray_session, tmp_path: Path) -> None:
    space = tmp_path / "mixed.yaml"
    space.write_text(MIXED_SPACE.replace("patch_size: [4, 7]", "patch_size: 7"))
    lines: list[str] = []
    settings = SweepSettings(name="mixed", space=str(space), budgets=(0.004,), trials=2, dataset="synthetic:40",
                             search="grid", scheduler="none", runs_dir=str(tmp_path / "runs"),
                             cache_dir=str(tmp_path / "cache"), concurrency=2, estimate=False)
    outcome = run_sweep(settings, out=lines.append, err=lines.append)
    rows = outcome.rows
    assert sorted(r.config.family for r in rows) == ["swin", "vit"]
    assert all(r.status == "completed" and r.test_accuracy is not None for r in rows)
    swin = next(r for r in rows if r.config.family == "swin")
    assert swin.config.name.startswith("swin_micro-28px-d4-k") and swin.config.patch_size == 4
    assert swin.config.keep_rate in [(n / 7) ** 2 for n in range(1, 8)]
    assert swin.train_gflops <= 0.004 and swin.to_dict()["tokens_kept"] == swin.config.window_keeps[-1] ** 2
    stored = results.read_rows(tmp_path / "runs" / "mixed" / results.RESULTS_FILE)
    assert sorted(r.config.name for r in stored) == sorted(r.config.name for r in rows)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name("mixed").experiment_id])
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["model"] for r in children) == ["swin_micro", "vit_micro"]
    assert {r.info.run_name for r in children} == {r.config.name for r in rows}


def test_train_runs_a_swin_and_names_it(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    result = cli("train", "--model", "swin_micro", "--resolution", "28", "--keep-rate", "0.5102", "--epochs", "1",
                 "--dataset", "synthetic:40", "--batch-size", "16", "--cache-dir", tmp_path, "--json")
    assert result.code == 0, result.err
    out = result.json()
    assert out["config"]["model"] == "swin_micro" and out["config"]["patch_size"] == 4
    assert out["config"]["keep_rate"] == 25 / 49 and out["train_gflops"] < out["inference_gflops"]
    # The robustness curve at the window rates nearest those asked (0.75 -> 36/49, 0.5 -> 25/49, 0.25 -> 9/49).
    assert sorted(map(float, out["robustness"])) == pytest.approx([9 / 49, 25 / 49, 36 / 49, 1.0])


def test_the_report_says_what_a_swin_ignores(ray_session, tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    space = tmp_path / "mixed.yaml"
    space.write_text(MIXED_SPACE.replace("model: [vit_micro, swin_micro]", "model: [swin_micro]").replace(
        "epochs: 2", "epochs: 1"))
    settings = SweepSettings(name="swin", space=str(space), budgets=(0.004,), trials=1, dataset="synthetic:40",
                             search="grid", scheduler="none", runs_dir=str(tmp_path / "runs"),
                             cache_dir=str(tmp_path / "cache"), concurrency=1, estimate=False)
    run_sweep(settings, out=lambda _: None, err=lambda _: None)
    result = cli("report", "swin", "--runs-dir", tmp_path / "runs", "--json")
    assert result.code == 0, result.err
    assert any("swin_micro is a Swin Transformer" in note and "patch_size and sampling do not apply" in note
               for note in result.json()["notes"])


def test_train_fine_tunes_a_swin_from_hub_weights_offline(cli: Callable[..., CliResult], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Swin weights (timm's ``layers.i.blocks.j`` keys, bias tables) written into a hub cache
    layout, found by name offline; trained at 56 px from 224 px weights, one block deeper."""
    import torch

    from pdsweep.config import Config
    from pdsweep.training.models import build_member
    from tests.weights_cache import write_hub_weights

    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    state = build_member(Config("swin_micro", 224, 4)).state_dict()
    write_hub_weights(home / "hub", "pdsweep-test/swin_micro", state, architecture="swin_tiny_patch4_window7_224")
    result = cli("train", "--model", "swin_micro", "--resolution", "56", "--depth", "6", "--keep-rate", "0.5102",
                 "--epochs", "1", "--dataset", "synthetic:40", "--batch-size", "16", "--cache-dir", tmp_path / "data",
                 "--pretrained", "pdsweep-test/swin_micro", "--json")
    assert result.code == 0, result.err
    out = result.json()
    assert out["config"]["init"] == "pretrained" and out["weights"]["family"] == "swin"
    assert out["pretrained_blocks"] == 5  # the sixth (a third-stage block) starts from its initialisation
