"""Trials that fail end in a true status, once, and the sweep goes on: real Ray, Optuna, torch."""

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
import torch

from conftest import spawn
from pdsweep.config import Config
from pdsweep.results import rows as results
from pdsweep.space import TrainingSettings
from pdsweep.sweep import SweepSettings, run_sweep
from pdsweep.sweep.trainable import memory_cap
from pdsweep.training.data import load_dataset
from pdsweep.training.faults import Diverged, fault_line, fault_status, is_out_of_memory
from pdsweep.training.loop import train

DIVERGING = """\
axes:
  model: vit_micro
  resolution: 16
  patch_size: 8
  depth: 1
  keep_rate: [0.5, 1.0]
training:
  epochs: 3
  batch_size: 8
  lr: 1.0e+6
  warmup_epochs: 0
  grad_clip: null
  precision: fp32
  augment: false
"""

# Two configs: one needs ~0.04 GB to train, the other ~1.5 GB (`pdsweep flops` says so).
OOM_SPACE = """\
axes:
  model: deit_tiny
  resolution: [32, 224]
  patch_size: 4
  depth: 2
  keep_rate: 1.0
training:
  epochs: 1
  batch_size: 16
  precision: fp32
  augment: false
"""


def _study(runs: Path, name: str, tier: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(runs / name / "optuna.journal")))
    return optuna.load_study(study_name=tier, storage=storage)


# ---- in one process --------------------------------------------------------------------------


def test_a_real_allocation_failure_is_out_of_memory() -> None:
    with pytest.raises(RuntimeError) as caught, memory_cap(0.2):
        torch.empty(400_000_000, dtype=torch.uint8)  # 0.4 GB past a 0.2 GB cap
    assert is_out_of_memory(caught.value) and fault_status(caught.value) == "oom"
    assert "can't allocate memory: you tried to allocate 400000000 bytes" in fault_line(caught.value)
    assert torch.empty(400_000_000, dtype=torch.uint8).numel() == 400_000_000  # the cap is lifted after


def test_other_errors_are_errors() -> None:
    assert fault_status(ValueError("bad label")) == "error"
    assert fault_status(Diverged(float("nan"), 1, 2)) == "diverged"
    wrapped = RuntimeError("the step failed")
    wrapped.__cause__ = MemoryError()
    assert fault_status(wrapped) == "oom"


def test_training_stops_at_the_first_non_finite_loss(tmp_path: Path) -> None:
    settings = TrainingSettings(epochs=3, batch_size=8, lr=1e6, warmup_epochs=0, grad_clip=None, augment=False)
    dataset = load_dataset("synthetic:40", 16, cache_dir=tmp_path)
    config = Config(model="vit_micro", resolution=16, patch_size=8, depth=1, num_classes=dataset.num_classes)
    seen: list[int] = []
    with pytest.raises(Diverged) as caught:
        train(config, dataset, settings, on_epoch_end=lambda metrics, _: seen.append(metrics.epoch))
    diverged = caught.value
    assert not torch.isfinite(torch.tensor(diverged.loss))
    assert [m.epoch for m in diverged.history] == seen  # the epochs before it, none after
    assert diverged.epoch == len(seen) + 1 and diverged.epoch < settings.epochs


def test_train_command_on_a_diverging_config_exits_1_with_valid_json(tmp_path: Path) -> None:
    args = [str(Path(sys.executable).parent / "pdsweep"), "train", "--model", "vit_micro", "--resolution", "16",
            "--patch-size", "8", "--depth", "1", "--epochs", "3", "--batch-size", "8", "--lr", "1e6",
            "--warmup-epochs", "0", "--dataset", "synthetic:40", "--cache-dir", str(tmp_path), "--json"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("pdsweep:")]
    assert len(errors) == 1 and "diverged: loss nan" in errors[0] and "Traceback" not in done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "diverged" and result["epochs"] == len(result["history"]) < 3


# ---- sweeps on the shared Ray ----------------------------------------------------------------


def _grid_sweep(tmp_path: Path, name: str, space_text: str, budget: float, **overrides):
    """Every config of ``space_text`` once, no early stopping; returns the outcome and the lines printed."""
    space = tmp_path / f"{name}.yaml"
    space.write_text(space_text)
    lines: list[str] = []
    settings = SweepSettings(name=name, space=str(space), budgets=(budget,), search="grid", dataset="synthetic:40",
                             runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), scheduler="none",
                             estimate=False, **overrides)
    return run_sweep(settings, out=lines.append, err=lines.append), lines


@pytest.mark.slow
def test_diverging_trials_end_at_once_and_are_never_best(ray_session, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    outcome, lines = _grid_sweep(tmp_path, "d", DIVERGING, 1.0, concurrency=2)
    rows = results.read_rows(runs / "d" / results.RESULTS_FILE)
    assert len(rows) == 2 and all(r.status == "diverged" for r in rows)
    for row in rows:  # stopped in the epoch that went bad: nothing after it ran
        assert "loss nan" in row.error or "loss inf" in row.error
        bad_epoch = int(row.error.split(" at epoch ")[1].split(",")[0])
        assert row.epochs_run == bad_epoch - 1 < row.epochs_planned
        assert [p.epoch for p in row.history or ()] == list(range(1, bad_epoch))
        assert row.test_accuracy is None
    assert outcome.report is None and outcome.all_failed  # no tier has a best
    assert sum("diverged: loss" in line for line in lines) == 2
    trials = _study(runs, "d", "tier-1").trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]  # infeasible, as TPE counts it
    assert all(t.constraints.get("diverged", 0) > 0 for t in trials)


@pytest.mark.slow
def test_out_of_memory_is_recorded_once_and_the_sweep_goes_on(ray_session, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    outcome, lines = _grid_sweep(tmp_path, "m", OOM_SPACE, 20.0, concurrency=1, trial_memory_cap_gb=0.5, max_failures=2)
    rows = {r.config.resolution: r for r in results.read_rows(runs / "m" / results.RESULTS_FILE)}
    assert rows[224].status == "oom", rows[224]
    assert "can't allocate memory" in rows[224].error and rows[224].predicted_memory_gb > 0.5
    assert rows[32].status == "completed" and rows[32].predicted_memory_gb < 0.5
    assert outcome.report.tiers[0].best.config.resolution == 32
    assert [r.config.resolution for r in outcome.report.failed] == [224]
    starts = Counter(line.split()[0] for line in (runs / "m" / "starts.log").read_text().splitlines())
    assert starts[rows[224].trial_id] == 1  # not retried
    trials = {t.user_attrs["ray_trial_id"]: t for t in _study(runs, "m", "tier-20").trials}
    oom = trials[rows[224].trial_id]
    assert oom.state.name == "PRUNED" and oom.constraints["oom"] == pytest.approx(rows[224].predicted_memory_gb, rel=0.05)
    assert trials[rows[32].trial_id].state.name == "COMPLETE"
    report = (runs / "m" / "report" / "report.md").read_text()
    assert "## Trials that failed" in report and f"| oom | `{rows[224].config.name}`" in report
    assert any("oom: RuntimeError: DefaultCPUAllocator" in line and "predicted" in line for line in lines)


# ---- a worker lost ---------------------------------------------------------------------------


def _pdsweep() -> str:
    return str(Path(sys.executable).parent / "pdsweep")


def _epochs_logged(runs: Path) -> int:
    """Epochs the driver has logged to MLflow so far (it logs each as Tune hands it the result)."""
    import sqlite3

    if not (runs / "mlflow.db").is_file():
        return 0
    try:
        with sqlite3.connect(runs / "mlflow.db", timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM metrics WHERE key = 'val_accuracy'").fetchone()[0]
    except sqlite3.Error:  # not created yet, or busy
        return 0


@pytest.mark.slow
def test_a_killed_worker_resumes_its_trial_from_the_last_checkpoint(ray_address: str, tmp_path: Path) -> None:
    space = tmp_path / "slow.yaml"
    space.write_text(DIVERGING.replace("lr: 1.0e+6", "lr: 1.0e-3").replace("grad_clip: null", "grad_clip: 1.0")
                     .replace("epochs: 3", "epochs: 4").replace("keep_rate: [0.5, 1.0]", "keep_rate: 1.0"))
    runs = tmp_path / "runs"
    run = [_pdsweep(), "run", "--space", str(space), "--budget-gflops", "1", "--search", "grid", "--scheduler", "none",
           "--dataset", "synthetic:3000", "--cache-dir", str(tmp_path / "cache"), "--name", "w", "--runs-dir", str(runs),
           "--checkpoint-every-s", "0", "--no-estimate",  # a checkpoint every epoch: the retry starts where the kill fell
           "--address", ray_address]  # the session's Ray (a worker of it is killed): no Ray of its own to start
    driver = spawn(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    starts = runs / "w" / "starts.log"
    deadline = time.monotonic() + 900
    # Wait until the driver has two epochs of the trial (Tune registers an epoch's checkpoint
    # after its result, once the worker confirms the save), then kill its worker mid-trial.
    while not (starts.is_file() and _epochs_logged(runs) >= 2):
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no epoch in time"
        time.sleep(0.1)
    trial_id, _, pid = starts.read_text().split()[:3]
    os.kill(int(pid), signal.SIGKILL)
    _, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err.decode()[-3000:]
    rows = results.read_rows(runs / "w" / results.RESULTS_FILE)
    assert [r.trial_id for r in rows] == [trial_id] and rows[0].status == "completed"
    assert [p.epoch for p in rows[0].history] == [1, 2, 3, 4]
    lines = [line.split() for line in starts.read_text().splitlines()]
    assert [how for _, how, _ in lines] == ["fresh", "resumed"]  # retried once, from its checkpoint
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    children = [r for r in client.search_runs([client.get_experiment_by_name("slow").experiment_id])
                if r.data.tags.get("pdsweep.trial_id") == trial_id]
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(children[0].info.run_id, "val_accuracy")]
    assert sorted(steps) == [1, 2, 3, 4]  # each epoch once: the resumed run did not train epoch 1 again


# ---- SIGTERM ---------------------------------------------------------------------------------


def _descendants(root: int) -> set[int]:
    """Every live process below ``root``, from /proc (whatever session or group it is in)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_ui_stopped_with_sigterm_leaves_no_process(tmp_path: Path) -> None:
    from pdsweep.results import tracking

    runs = tmp_path / "runs"
    ids = tracking.start_sweep(f"sqlite:///{runs / 'mlflow.db'}", "e", tracking.artifact_root(runs), "s", {}, files=[])
    tracking.end_sweep(ids)
    ui = subprocess.Popen([_pdsweep(), "ui", "--runs-dir", str(runs), "--port", str(_port())],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert ui.stdout.readline().startswith("MLflow UI for"), ui.stderr.read()
        started = _descendants(ui.pid)
        assert len(started) >= 2  # the server and its workers
        ui.send_signal(signal.SIGTERM)  # as `kill PID`, a container stop or a service manager does
        ui.wait(timeout=60)  # ceilings, not expectations: it stops in about a second when idle
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in started if _alive(pid)]
        assert "stopped the MLflow UI" in ui.stderr.read()
    finally:
        if ui.poll() is None:
            ui.kill()


def _port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---- drivers: one at a time, killed, moved, stopped ------------------------------------------

SLOW = """\
axes:
  model: vit_micro
  resolution: 32
  patch_size: 8
  depth: 1
  sampling: [random, structured, block, grid]  # four configs of one cost: a tier trains each once
  keep_rate: {low: 0.25, high: 1.0}
training:
  epochs: 6
  batch_size: 16
  precision: fp32
  augment: false
"""


def _start_driver(tmp_path: Path, runs: Path, name: str, trials: int = 3) -> subprocess.Popen:
    space = tmp_path / "slow.yaml"
    space.write_text(SLOW)
    run = [_pdsweep(), "run", "--space", str(space), "--budget-gflops", "0.0008", "--trials", str(trials),
           "--concurrency", "1", "--scheduler", "none", "--no-estimate", "--dataset", "synthetic:1000", "--cache-dir",
           str(tmp_path / "cache"), "--name", name, "--runs-dir", str(runs)]
    return spawn(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_rows(driver: subprocess.Popen, table: Path, count: int = 1) -> None:
    deadline = time.monotonic() + 900
    while not (table.is_file() and len(results.read_rows(table)) >= count):
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.2)


def _children(runs: Path, experiment: str = "slow") -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return [r for r in found if "mlflow.parentRunId" in r.data.tags], [r for r in found if "mlflow.parentRunId" not in r.data.tags]


@pytest.mark.slow
def test_a_driver_stopped_with_sigterm_closes_its_runs_and_resumes(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    driver = _start_driver(tmp_path, runs, "t")
    _wait_for_rows(driver, runs / "t" / results.RESULTS_FILE)
    first = results.read_rows(runs / "t" / results.RESULTS_FILE)[0].epochs_run
    deadline = time.monotonic() + 600
    while _epochs_logged(runs) <= first:  # into the next trial: its first epoch reached the driver
        assert driver.poll() is None and time.monotonic() < deadline, "the next trial reported no epoch in time"
        time.sleep(0.1)
    started = _descendants(driver.pid)  # its local Ray
    driver.send_signal(signal.SIGTERM)  # `kill PID`
    _, err = driver.communicate(timeout=300)
    err = err.decode()
    assert driver.returncode == 130, err[-3000:]
    assert f"interrupted; continue with `pdsweep resume t --runs-dir {runs}`" in err
    assert "SIGTERM received" not in err and "*** " not in err  # no C++ failure-signal dump
    deadline = time.monotonic() + 120
    while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if _alive(pid)]  # the local Ray ended with it
    rows = results.read_rows(runs / "t" / results.RESULTS_FILE)
    interrupted = [r for r in rows if r.status == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].epochs_run < interrupted[0].epochs_planned
    children, parents = _children(runs)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert {c.info.status for c in children} == {"FINISHED", "KILLED"} and all(c.info.status != "RUNNING" for c in children)

    resumed = subprocess.run([_pdsweep(), "resume", "t", "--runs-dir", str(runs)], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = results.read_rows(runs / "t" / results.RESULTS_FILE)
    assert len(rows) == 3 and all(r.status == "completed" for r in rows)
    children_after, parents = _children(runs)
    assert [p.info.status for p in parents] == ["FINISHED"]
    # The interrupted trial's child run went on: the same run, now finished, not a second one.
    assert Counter(c.data.tags["pdsweep.trial_id"] for c in children_after) == Counter(r.trial_id for r in rows)
    again = next(c for c in children_after if c.data.tags["pdsweep.trial_id"] == interrupted[0].trial_id)
    assert again.info.run_id in {c.info.run_id for c in children} and again.info.status == "FINISHED"
    # Its start and end are the trial's own (the worker's clocks), not when the driver logged it.
    row = next(r for r in rows if r.trial_id == again.data.tags["pdsweep.trial_id"])
    assert again.info.end_time == int(row.ended_at.timestamp() * 1000)


# ---- storage that fails ----------------------------------------------------------------------


class FullDisk:
    """A pyarrow filesystem handler over the local disk whose writes fail with ENOSPC while
    ``full`` is set, as a full disk or an over-quota bucket answers."""

    def __init__(self) -> None:
        from pyarrow import fs

        self.local = fs.LocalFileSystem()
        self.full = False
        self.refused = 0

    def _check(self) -> None:
        import errno

        if self.full:
            self.refused += 1
            raise OSError(errno.ENOSPC, "No space left on device")

    def handler(self):
        from pyarrow import fs

        outer = self

        class Handler(fs.FileSystemHandler):
            def get_type_name(self): return "full-disk"
            def normalize_path(self, path): return path
            def equals(self, other): return other is self
            def get_file_info(self, paths): return outer.local.get_file_info(paths)
            def get_file_info_selector(self, selector): return outer.local.get_file_info(selector)
            def create_dir(self, path, recursive): outer._check(); outer.local.create_dir(path, recursive=recursive)
            def delete_dir(self, path): outer.local.delete_dir(path)
            def delete_dir_contents(self, path, missing_dir_ok=False): outer.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)
            def delete_root_dir_contents(self): raise OSError("refused")
            def delete_file(self, path): outer.local.delete_file(path)
            def move(self, src, dest): outer._check(); outer.local.move(src, dest)
            def copy_file(self, src, dest): outer._check(); outer.local.copy_file(src, dest)
            def open_input_stream(self, path): return outer.local.open_input_stream(path)
            def open_input_file(self, path): return outer.local.open_input_file(path)
            def open_output_stream(self, path, metadata): outer._check(); return outer.local.open_output_stream(path)
            def open_append_stream(self, path, metadata): outer._check(); return outer.local.open_append_stream(path)

        return fs.PyFileSystem(Handler())


@pytest.mark.slow
def test_a_full_disk_mid_sweep_loses_no_row(ray_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from pdsweep.sweep.store import SweepStore

    disk = FullDisk()
    remote_root = tmp_path / "remote"
    original = SweepStore._fs

    def through_the_full_disk(store):  # the driver's writes to the runs dir; Ray's own go to the same folder
        _, root = original(store)
        return disk.handler(), root

    monkeypatch.setattr(SweepStore, "_fs", through_the_full_disk)
    monkeypatch.setenv("PDSWEEP_CACHE", str(tmp_path / "driver-cache"))
    space = tmp_path / "slow.yaml"
    space.write_text(SLOW.replace("epochs: 6", "epochs: 2"))
    settings = SweepSettings(name="f", space=str(space), budgets=(0.0008,), trials=4, concurrency=1, scheduler="none",
                             dataset="synthetic:600", runs_dir=f"file://{remote_root}", cache_dir=str(tmp_path / "cache"), estimate=False)
    published = remote_root / "f" / results.RESULTS_FILE

    lines: list[str] = []

    def fill_then_free() -> None:
        while not (published.is_file() and results.read_rows(published)):
            time.sleep(0.05)
        disk.full = True  # full after the first trial's row, for the next two trials' ends ...
        while sum(line.startswith("[") for line in lines) < 3:
            time.sleep(0.05)
        disk.full = False  # ... until someone frees space, before the last one

    faults = threading.Thread(target=fill_then_free, daemon=True)
    faults.start()
    outcome = run_sweep(settings, out=lines.append, err=lines.append)
    faults.join(timeout=60)
    assert disk.refused >= 6 and not disk.full
    assert len(outcome.rows) == 4 and all(r.finished for r in outcome.rows)
    assert sorted(r.trial_id for r in results.read_rows(published)) == sorted(r.trial_id for r in outcome.rows)
    assert len([line for line in lines if "cannot write the results" in line and "No space left" in line]) == 1
    leftovers = [p for p in tmp_path.rglob("*") if ".partial" in p.name]
    assert not leftovers


def test_a_memory_kill_is_the_trials_own_only_when_it_was_the_only_one_killed() -> None:
    from pdsweep.training.faults import memory_kill

    line = "{} worker(s) were killed due to the node running low on memory. Memory on the node was 23GB used"
    assert memory_kill(RuntimeError(line.format(1)))
    assert not memory_kill(RuntimeError(line.format(3)))  # some of them bystanders: Tune's retries stand
    assert not memory_kill(RuntimeError("the worker died unexpectedly"))
