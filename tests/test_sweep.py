"""Real sweeps on a real local Ray: tiny models, the synthetic dataset, seconds per trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from conftest import assert_one_line_error, spawn, wait_for_free_cpus
from pdsweep.config import Config
from pdsweep.cost import train_gflops
from pdsweep.errors import PdsweepError
from pdsweep.results import rows as results
from pdsweep.sweep import SweepSettings, resume_sweep, run_sweep

TINY_SPACE = """\
axes:
  model: vit_micro
  resolution: [16, 32]
  patch_size: 8
  depth: 1
  keep_rate: {low: 0.25, high: 1.0}
training:
  epochs: 2
  batch_size: 16
  precision: fp32
  augment: false
"""
# One resolution, four configs of one cost (a tier trains each config once), six epochs.
SLOW_SPACE = TINY_SPACE.replace("epochs: 2", "epochs: 6").replace("resolution: [16, 32]", "resolution: 32").replace(
    "depth: 1", "depth: 1\n  sampling: [random, structured, block, grid]")
TIERS = (0.0003, 0.0008)  # the first admits only 16 px; the second both resolutions


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


def _settings(tmp_path: Path, space_file: Path, **overrides) -> SweepSettings:
    values = dict(name="s", space=str(space_file), budgets=TIERS, trials=2, dataset="synthetic:40",
                  runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), concurrency=2,
                  estimate=False)  # the measured estimate has its own test (tests/test_ledger.py)
    return SweepSettings(**{**values, **overrides})


@pytest.mark.slow
def test_sweep_with_two_tiers_and_repeats(ray_session, tmp_path: Path, space_file: Path) -> None:
    lines: list[str] = []
    outcome = run_sweep(_settings(tmp_path, space_file, repeats=2, top_k=2), out=lines.append, err=lines.append)
    table = results.read(Path(outcome.results_path))
    rows = table.to_pylist()
    search = [r for r in rows if r["phase"] == "search"]
    repeats = [r for r in rows if r["phase"] == "repeat"]
    # The first tier has one config that fits: it is trained once in the search, not twice.
    assert Counter(r["budget_gflops"] for r in search) == {0.0003: 1, 0.0008: 2}
    assert all(len({r["resolution"] for r in search if r["budget_gflops"] == tier}) == n for tier, n in ((0.0003, 1), (0.0008, 2)))
    assert len({r["trial_id"] for r in rows}) == len(rows)
    for r in rows:
        config = Config(model=r["model"], resolution=r["resolution"], patch_size=r["patch_size"],
                        keep_rate=r["keep_rate"], depth=r["depth"], num_classes=r["num_classes"])
        assert train_gflops(config) <= r["budget_gflops"]  # recomputed, not read back
        assert r["status"] in ("completed", "stopped") and r["error"] is None
        assert 1 <= r["epochs_run"] <= r["epochs_planned"] == 2
        assert r["num_classes"] == 4 and r["best_val_accuracy"] is not None
        # Clocks from the worker: the run began before training and ended after it.
        assert (r["ended_at"] - r["started_at"]).total_seconds() >= (r["train_seconds"] or 0) - 0.002
    assert all(r["resolution"] == 16 for r in rows if r["budget_gflops"] == 0.0003)
    for tier in outcome.report.tiers:  # each of the top configs ends with --repeats seeds that ran to the end
        tops = {(s.config.resolution, s.config.keep_rate) for s in tier.top}
        assert len(tier.top) == min(2, len({r["resolution"] for r in rows if r["budget_gflops"] == tier.budget_gflops}))
        for top in tier.top:
            key = (top.config.resolution, top.config.keep_rate)
            same = [r for r in rows if r["budget_gflops"] == tier.budget_gflops and (r["resolution"], r["keep_rate"]) == key]
            completed = [r for r in same if r["status"] == "completed"]
            assert len({r["seed"] for r in completed}) == top.seeds == 2
            assert len({r["seed"] for r in same}) == len(same)  # never the same seed twice
        assert all((r["resolution"], r["keep_rate"]) in tops and r["status"] == "completed"
                   for r in repeats if r["budget_gflops"] == tier.budget_gflops)
    # Pre-flight, one line per finished trial, and a summary per tier.
    assert any("estimated compute" in line for line in lines)
    assert sum(line.startswith("[") for line in lines) == len(rows)
    assert any(line.startswith("  tier 0.0008 GFLOPs: best vit_micro") for line in lines)
    # Every search trial reached its tier's Optuna study, with its outcome.
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs" / "s" / "optuna.journal")))
    for tier, count in (("tier-0.0003", 1), ("tier-0.0008", 2)):
        told = [t for t in optuna.load_study(study_name=tier, storage=storage).trials if "config" in t.user_attrs]
        assert len(told) == count and all(t.state.name in ("COMPLETE", "PRUNED") for t in told)


def test_grid_search_runs_every_feasible_config_once(ray_session, tmp_path: Path, space_file: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # A 1.5 MB memory cap: the 32 px config (2.0 MB as it is) fits only as micro-batches.
    lines: list[str] = []
    outcome = run_sweep(_settings(tmp_path, space_file, search="grid", budgets=(0.0008,), scheduler="none",
                                  memory_gb=0.0015), out=lines.append, err=lines.append)
    assert sorted(r.config.resolution for r in outcome.rows) == [16, 32]
    assert all(r.status == "completed" and r.test_accuracy is not None for r in outcome.rows)
    # Each row records how its trial trained, and the trial trained so: within the cap.
    arranged = {r.config.resolution: r for r in outcome.rows}
    assert arranged[16].micro_batch_size == 16 and arranged[32].micro_batch_size < 16
    assert not any(r.member_turns for r in outcome.rows)
    assert all(r.predicted_memory_gb <= 0.0015 for r in outcome.rows)
    assert any("to fit 0.0015 GB: 1 in micro-batches" in line for line in lines)
    # Tune's logger of TensorBoard files says nothing of the list values it skips (a line a trial).
    assert not [r.getMessage() for r in caplog.records if "TBXLoggerCallback" in r.getMessage()]


PRETRAINED_SPACE = """\
axes:
  model: vit_micro
  resolution: 32
  patch_size: 4
  depth: 2
  keep_rate: [1.0, 0.5]
  init: [pretrained, random]
weights:
  vit_micro: pdsweep-test/vit_micro_synthetic
training:
  epochs: 2
  batch_size: 16
  precision: fp32
  augment: false
finetune:
  optimizer: sgd
  lr: 0.01
  warmup_epochs: 0
"""


@pytest.mark.slow
def test_a_sweep_over_init_starts_pretrained_trials_from_hub_weights(ray_session, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pdsweep.space import TrainingSettings
    from pdsweep.training.data import load_dataset
    from pdsweep.training.loop import train
    from pdsweep.training.weights import read_state
    from weights_cache import write_hub_weights

    # Weights pretrained on the data the sweep trains on, put in a Hugging Face cache as a hub name.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dataset = load_dataset("synthetic:600", 32, cache_dir=tmp_path / "cache")
    pretrain = Config("vit_micro", 32, 4, depth=2, num_classes=dataset.num_classes)
    train(pretrain, dataset, TrainingSettings(epochs=6, batch_size=32, precision="fp32", augment=False, lr=2e-3),
          save_weights_to=tmp_path / "pretrained.safetensors")
    hub = tmp_path / "hub"
    written = write_hub_weights(hub, "pdsweep-test/vit_micro_synthetic", read_state(tmp_path / "pretrained.safetensors", "")[0],
                                model_args={"num_heads": 2})
    space = tmp_path / "pretrained.yaml"
    space.write_text(PRETRAINED_SPACE)
    lines: list[str] = []
    outcome = run_sweep(_settings(tmp_path, space, search="grid", budgets=(1.0,), scheduler="none",
                                  dataset="synthetic:600", weights_cache=str(hub)), out=lines.append, err=lines.append)
    assert any("pretrained trials train with: sgd lr 0.01" in line for line in lines)  # the pre-flight shows both
    assert any("random trials train with: adamw lr 0.001" in line for line in lines)
    rows = outcome.rows
    assert sorted((r.config.keep_rate, r.config.init) for r in rows) == [
        (0.5, "pretrained"), (0.5, "random"), (1.0, "pretrained"), (1.0, "random")]  # one row per config and init
    import hashlib

    digest = hashlib.sha256(written.read_bytes()).hexdigest()
    for r in rows:
        assert r.status == "completed", r.error
        pretrained = r.config.init == "pretrained"
        assert (r.weights_source, r.weights_sha256, r.pretrained_blocks) == (
            ("pdsweep-test/vit_micro_synthetic", digest, 2) if pretrained else (None, None, None))
    first_epoch = {(r.config.keep_rate, r.config.init): r.history[0].val_accuracy for r in rows}
    for keep in (1.0, 0.5):  # the pretrained trials start from the weights: ahead after one epoch
        assert first_epoch[keep, "pretrained"] > first_epoch[keep, "random"] + 0.15, first_epoch
    text = (Path(outcome.results_path).parent / "report" / "report.md").read_text()
    assert "pretrained vs random at equal cost" in text
    # Weights changed after the sweep checked them: resume refuses, before anything runs.
    from safetensors.torch import save_file

    save_file(read_state(tmp_path / "pretrained.safetensors", "")[0] | {"norm.weight": torch.zeros(64)}, str(written))
    with pytest.raises(PdsweepError, match=r"vit_micro: weights pdsweep-test/vit_micro_synthetic at .* are not the ones "
                                           r"checked before the run"):
        resume_sweep("s", str(tmp_path / "runs"), err=lambda _: None, out=lambda _: None)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(budgets=(0.00001,)), r"no config of space 'tiny' fits a budget of 1e-05 GFLOPs: the cheapest is vit_micro-16px"),
        (dict(dataset="folder:/nope"), r"dataset path '/nope' does not exist"),
        (dict(address="127.0.0.1:1"), r"cannot reach Ray at 127.0.0.1:1; start a cluster there with `ray start --head`"),
        (dict(address="not an address"), r"--address must be HOST:PORT, ray://HOST:PORT or auto"),
        (dict(name="../escape"), r"sweep name '../escape' must be letters, digits"),
        (dict(trials=0), r"`--trials` must be a positive integer"),
        (dict(budgets=()), r"space 'tiny' searches axes, so it needs a budget; give --budget-gflops"),  # the Python API's default too
        (dict(space="paper/keep_rate", budgets=(), search="grid", top_k=2),
         r"lists its configs, to compare them as listed: --repeats re-trains every one of its \d+ configs, not the best few; drop --top-k"),
    ],
)
def test_bad_input_writes_nothing(tmp_path: Path, space_file: Path, overrides: dict, match: str) -> None:
    with pytest.raises(PdsweepError, match=match):
        run_sweep(_settings(tmp_path, space_file, **overrides), out=lambda _: None, err=lambda _: None)
    assert not (tmp_path / "runs").exists()


def test_existing_name_and_unknown_resume(tmp_path: Path, space_file: Path) -> None:
    (tmp_path / "runs" / "s").mkdir(parents=True)
    with pytest.raises(PdsweepError, match=r"sweep 's' exists in .*; continue it with `pdsweep resume s`"):
        run_sweep(_settings(tmp_path, space_file), out=lambda _: None, err=lambda _: None)
    (tmp_path / "runs" / "old").mkdir()
    (tmp_path / "runs" / "old" / "sweep.json").write_text("{}")
    with pytest.raises(PdsweepError, match=r"no sweep named 'nope' in .*; known sweeps: old"):
        resume_sweep("nope", str(tmp_path / "runs"))


def test_cli_run_bad_input_is_one_line(cli, tmp_path: Path, space_file: Path) -> None:
    base = ["run", "--space", space_file, "--dataset", "synthetic:40", "--runs-dir", tmp_path / "runs",
            "--cache-dir", tmp_path / "cache"]
    assert_one_line_error(cli(*base, "--budget-gflops", "0.0008", "--address", "127.0.0.1:1"), "cannot reach Ray at 127.0.0.1:1")
    assert_one_line_error(cli(*base, "--budget-gflops", "0.00001"), "no config of space 'tiny' fits")
    assert_one_line_error(cli("resume", "ghost", "--runs-dir", tmp_path / "runs"), "no sweep named 'ghost'")


def test_a_trial_no_node_can_hold_is_refused_before_anything_is_written(ray_session, cli, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The test Ray has 2 CPUs and no autoscaler: a trial of 1,000 CPUs would wait forever."""
    monkeypatch.chdir(tmp_path)  # the default runs dir and MLflow store, as a user's first command makes them
    started = time.monotonic()
    result = cli("run", "--space", "quickstart", "--budget-gflops", "0.01", "--cpus-per-trial", "1000",
                 "--dataset", "synthetic:40", "--cache-dir", tmp_path / "cache")
    assert_one_line_error(result, "no node of the Ray cluster can hold one trial: a trial takes 1000 CPU(s)",
                          "the largest of its 1 node(s) has 2", "lower --cpus-per-trial to 2")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "pdsweep-runs").exists()
    # Two CPUs a trial fit: the same check lets the sweep through (a dry run, so nothing is written).
    result = cli("run", "--space", "quickstart", "--budget-gflops", "0.01", "--cpus-per-trial", "2",
                 "--dataset", "synthetic:40", "--cache-dir", tmp_path / "cache", "--dry-run", "--no-estimate")
    assert result.code == 0, result.err


@pytest.mark.slow
def test_a_worker_rays_memory_monitor_kills_is_oom_at_once(tmp_path: Path) -> None:
    """A Ray whose memory monitor kills every worker (a threshold of 1% of this machine's
    memory): the trial ends as oom after one attempt although --max-failures allows three, and
    its Optuna trial is pruned with the oom constraint (its predicted memory)."""
    (tmp_path / "tiny.yaml").write_text(TINY_SPACE.replace("resolution: [16, 32]", "resolution: 16")
                                        .replace("keep_rate: {low: 0.25, high: 1.0}", "keep_rate: 1.0"))
    env = {**os.environ, "RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "50"}
    done = subprocess.run([_pdsweep(), "run", "--space", str(tmp_path / "tiny.yaml"), "--budget-gflops", "1",
                           "--trials", "1", "--max-failures", "3", "--no-estimate", "--dataset", "synthetic:40",
                           "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs"), "--name", "oom"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # every trial failed
    [row] = results.read_rows(tmp_path / "runs" / "oom" / "results.parquet")
    assert row.status == "oom" and "low on memory" in (row.error or "") and "exceeded threshold" in (row.error or "")
    [error_file] = (tmp_path / "runs" / "oom" / "search").rglob("error.txt")
    assert error_file.read_text().count("Failure #") == 1  # no retry
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs" / "oom" / "optuna.journal")))
    [told] = [t for t in optuna.load_study(study_name="tier-1", storage=storage).trials if "config" in t.user_attrs]
    assert told.state.name == "PRUNED" and told.constraints == {"oom": pytest.approx(row.predicted_memory_gb)}


def _pdsweep() -> str:
    return str(Path(sys.executable).parent / "pdsweep")


def _slow_driver(tmp_path: Path, name: str, address: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """`pdsweep run` of four SLOW_SPACE trials, one at a time, on the Ray at ``address`` (the
    session's: the driver and its resume each skip starting a Ray), in its own session (to be killed)."""
    space = tmp_path / "slow.yaml"
    space.write_text(SLOW_SPACE)
    run = [_pdsweep(), "run", "--space", str(space), "--budget-gflops", "0.0008", "--trials", "4", "--concurrency", "1",
           "--scheduler", "none", "--no-estimate", "--dataset", "synthetic:1000", "--cache-dir", str(tmp_path / "cache"), "--name", name,
           "--runs-dir", str(tmp_path / "runs"), "--address", address, *extra]
    return spawn(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


@pytest.mark.slow
def test_killed_driver_resumes_moved_and_runs_each_trial_once(ray_session, ray_address: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    driver = _slow_driver(tmp_path, "k", ray_address)
    table = runs / "k" / results.RESULTS_FILE
    deadline = time.monotonic() + 900
    while not (table.is_file() and len(results.read_rows(table)) >= 1):
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.2)
    # A second driver while the first is alive: refused, in seconds, naming the holder.
    asked = time.monotonic()
    second = subprocess.run([_pdsweep(), "resume", "k", "--runs-dir", str(runs)], capture_output=True, text=True, timeout=60)
    assert second.returncode == 2 and time.monotonic() - asked < 30, second.stderr  # at once, not when the trials end
    assert second.stderr.count("\n") == 1 and f"being driven by pid {driver.pid} on " in second.stderr
    os.killpg(driver.pid, signal.SIGKILL)  # the driver, mid-trial
    driver.wait()
    wait_for_free_cpus(ray_session)  # Ray ended its trial too: nothing more is written where the sweep was
    finished_before = {r.trial_id: r for r in results.read_rows(table)}
    assert 1 <= len(finished_before) < 4
    moved = tmp_path / "elsewhere" / "runs"
    moved.parent.mkdir()
    runs.rename(moved)  # `mv`: the sweep folder and its SQLite store together
    table = moved / "k" / results.RESULTS_FILE

    resumed = subprocess.run([_pdsweep(), "resume", "k", "--runs-dir", str(moved)], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"taking over the lock of sweep 'k' from pid {driver.pid}" in resumed.stderr
    assert "resuming sweep 'k'" in resumed.stderr
    assert not runs.exists()  # nothing written where the sweep was
    rows = results.read_rows(table)
    assert len(rows) == 4 and len({r.trial_id for r in rows}) == 4
    assert all(r.status == "completed" for r in rows)
    for trial_id, before in finished_before.items():  # kept as they were, not trained again
        assert next(r for r in rows if r.trial_id == trial_id) == before
    lines = [line.split() for line in (moved / "k" / "starts.log").read_text().splitlines()]
    starts = Counter(trial_id for trial_id, *_ in lines)
    # (A trial started after Tune's last save of its state and running at the kill is lost, and
    # another takes its place.)
    assert set(starts) >= {r.trial_id for r in rows}
    # A finished trial never starts afresh again. (If the kill fell between its row and Tune's own
    # save of its end, Tune restarts it once from its last checkpoint: the row above is still the first.)
    fresh = Counter(trial_id for trial_id, how, *_ in lines if how == "fresh")
    assert all(fresh[trial_id] == 1 and starts[trial_id] <= 2 for trial_id in finished_before)
    # Optuna heard of each trial once: four complete, anything else closed as failed.
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(moved / "k" / "optuna.journal")))
    states = Counter(t.state.name for t in optuna.load_study(study_name="tier-0.0008", storage=storage).trials)
    assert states["COMPLETE"] == 4 and set(states) <= {"COMPLETE", "FAIL"}
    # MLflow, moved with the folder: one finished child run per row under a finished parent. The
    # trial killed mid-run goes on under its own id if Tune's state had saved it; else it was lost
    # and its child run is closed and tagged so.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{moved / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name("slow").experiment_id])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    kept = [c for c in children if c.data.tags["pdsweep.status"] != "lost"]
    lost = [c for c in children if c.data.tags["pdsweep.status"] == "lost"]
    assert Counter(c.data.tags["pdsweep.trial_id"] for c in kept) == Counter(r.trial_id for r in rows)
    assert all(c.info.status == "FINISHED" for c in kept) and [p.info.status for p in parents] == ["FINISHED"]
    assert len(lost) <= 1 and all(c.info.status == "KILLED" for c in lost)
    assert not {c.data.tags["pdsweep.trial_id"] for c in lost} & {r.trial_id for r in rows}


@pytest.mark.slow
def test_a_driver_killed_long_after_tunes_last_save_loses_and_repeats_nothing(ray_session, ray_address: str,
                                                                             tmp_path: Path) -> None:
    # Tune saves its state on a period (and at trial checkpoints). Here it saves once, at its first
    # step, knowing only the first trial: the kill comes after two trials ended and a third began.
    runs = tmp_path / "runs"
    common = ["--runs-dir", str(runs)]
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "3600"}
    driver = _slow_driver(tmp_path, "p", ray_address, "--checkpoint-every-s", "3600", env=env)
    table, starts_log = runs / "p" / results.RESULTS_FILE, runs / "p" / "starts.log"
    deadline = time.monotonic() + 900
    while not (table.is_file() and len(results.read_rows(table)) >= 2 and len(starts_log.read_text().splitlines()) >= 3):
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "two trials did not finish in time"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    wait_for_free_cpus(ray_session)  # its third trial, killed with it
    finished_before = {r.trial_id: r for r in results.read_rows(table)}
    assert len(finished_before) == 2
    saved = json.loads(next((runs / "p" / "search").glob("experiment_state-*.json")).read_text())
    assert len(saved["trial_data"]) == 1  # Tune's state knows one trial of the three

    resumed = subprocess.run([_pdsweep(), "resume", "p", *common], capture_output=True, text=True, timeout=900, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = results.read_rows(table)
    # Four trials, as asked, each a different config (a tier trains each once), none trained twice.
    assert len(rows) == 4 and len({r.trial_id for r in rows}) == 4 and all(r.status == "completed" for r in rows)
    assert len({r.config.name for r in rows}) == 4
    for trial_id, before in finished_before.items():
        assert next(r for r in rows if r.trial_id == trial_id) == before
    starts = Counter(line.split()[0] for line in starts_log.read_text().splitlines())
    assert all(starts[trial_id] == 1 for trial_id in finished_before)  # the one Tune restored was not run again
    assert "had ended before the interruption" in resumed.stderr
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(runs / "p" / "optuna.journal")))
    trials = optuna.load_study(study_name="tier-0.0008", storage=storage).trials
    assert Counter(t.state.name for t in trials)["COMPLETE"] == 4
    lost = [t for t in trials if t.user_attrs.get("lost")]
    assert len(lost) == 1 and lost[0].state.name == "FAIL"  # the third trial's run, killed with its driver
    assert lost[0].user_attrs["ray_trial_id"] not in {r.trial_id for r in rows}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    children = client.search_runs([client.get_experiment_by_name("slow").experiment_id], "tags.`mlflow.parentRunId` != ''")
    status = {r.data.tags["pdsweep.trial_id"]: r.info.status for r in children}
    assert {status[r.trial_id] for r in rows} == {"FINISHED"}
    tags = {r.data.tags["pdsweep.trial_id"]: r.data.tags["pdsweep.status"] for r in children}
    # The lost run is closed, not left running, and says it was lost.
    assert (status.get(lost[0].user_attrs["ray_trial_id"], "KILLED"), tags.get(lost[0].user_attrs["ray_trial_id"], "lost")) == ("KILLED", "lost")


@pytest.mark.slow
def test_killed_sweep_on_a_uri_resumes_from_another_machine(ray_session, ray_address: str, tmp_path: Path) -> None:
    space = tmp_path / "slow.yaml"
    space.write_text(TINY_SPACE.replace("epochs: 2", "epochs: 6").replace("resolution: [16, 32]", "resolution: 32"))
    remote = f"file://{tmp_path / 'remote'}"
    # Random search, whose drawn-but-not-issued trials must survive the kill too (TPE is the test
    # above), and ASHA, which Tune restores from the pickle it made when the sweep started.
    run = [_pdsweep(), "run", "--space", str(space), "--budget-gflops", "0.0008", "--trials", "3", "--concurrency", "1",
           "--scheduler", "asha", "--grace-period", "1", "--search", "random", "--keep-policy", "search",
           "--no-estimate", "--dataset", "synthetic:1000", "--cache-dir", str(tmp_path / "cache"), "--name", "u", "--runs-dir", remote,
           "--address", ray_address]  # the session's Ray: neither driver starts its own
    first_machine = {**os.environ, "PDSWEEP_CACHE": str(tmp_path / "machine-a")}
    driver = spawn(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=first_machine)
    table = tmp_path / "remote" / "u" / results.RESULTS_FILE  # as published to the runs dir
    deadline = time.monotonic() + 900
    while not (table.is_file() and len(results.read_rows(table)) >= 1):
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    wait_for_free_cpus(ray_session)
    assert len(results.read_rows(table)) < 3
    other_machine = {**os.environ, "PDSWEEP_CACHE": str(tmp_path / "machine-b")}  # an empty mirror
    resumed = subprocess.run([_pdsweep(), "resume", "u", "--runs-dir", remote], capture_output=True, text=True,
                             timeout=900, env=other_machine)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = results.read_rows(table)
    assert len(rows) == 3 and len({r.trial_id for r in rows}) == 3
    assert all(r.status in ("completed", "stopped") for r in rows)  # ASHA may stop some
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "remote" / "u" / "optuna.journal")))
    trials = optuna.load_study(study_name="tier-0.0008", storage=storage).trials
    ended = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(ended) == 3 and {t.user_attrs["ray_trial_id"] for t in ended} == {r.trial_id for r in rows}
    # The drawn queue outlived the kill: the only trials closed are runs the kill lost, each drawn again.
    # (Draws of a config the tier had tried are closed as failed too, marked as such.)
    lost = [t for t in trials if t not in ended and "duplicate_of" not in t.user_attrs]
    assert all(t.state.name == "FAIL" and t.user_attrs.get("config") in {e.user_attrs["config"] for e in ended} for t in lost)


def test_sweep_on_a_storage_uri_publishes_and_resumes(ray_session, tmp_path: Path, space_file: Path, monkeypatch) -> None:
    monkeypatch.setenv("PDSWEEP_CACHE", str(tmp_path / "driver-cache"))  # where the driver mirrors its files
    remote = f"file://{tmp_path / 'remote'}"
    settings = _settings(tmp_path, space_file, runs_dir=remote, budgets=(0.0008,), name="u")
    outcome = run_sweep(settings, out=lambda _: None, err=lambda _: None)
    published = tmp_path / "remote" / "u"
    assert outcome.results_path == f"{remote}/u/results.parquet"
    assert len(results.read_rows(published / results.RESULTS_FILE)) == 2
    assert (published / "sweep.json").is_file() and (published / "optuna.journal").is_file()
    assert (published / "search").is_dir()  # Ray Tune's experiment, written by Ray to the URI
    assert (published / "report" / "report.png").is_file()
    # Another machine (an empty mirror) resumes a finished sweep from the URI alone.
    monkeypatch.setenv("PDSWEEP_CACHE", str(tmp_path / "other-machine"))
    again = resume_sweep("u", remote, out=lambda _: None, err=lambda _: None)
    assert [r.trial_id for r in again.rows] == [r.trial_id for r in outcome.rows]
    with pytest.raises(PdsweepError, match=r"sweep 'u' exists in file://"):
        run_sweep(settings, out=lambda _: None, err=lambda _: None)


def test_the_cluster_probe_loads_the_dataset_where_trials_run(tmp_path: Path, space_file: Path) -> None:
    """The probe task (on a worker of a real cluster; here called as that worker would) loads the
    dataset; the weights are checked on every node apart (tests/test_watch.py)."""
    from pdsweep.space import load_space
    from pdsweep.sweep.cluster import _probe_worker

    settings, space = _settings(tmp_path, space_file), load_space(space_file)
    probe = _probe_worker(settings, space)
    assert probe.num_classes == 4 and probe.train_images > 0
