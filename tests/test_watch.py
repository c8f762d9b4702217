"""The driver's cluster watch (:mod:`pdsweep.sweep.watch`) on the tests' real local Ray: the
pretrained weights checked on every node by a task pinned to it, a node without them named, and
a sweep whose trials wait for CPUs no one frees giving up after ``--resource-timeout`` in one
line, then resumed, from weights moved to another cache (``resume --weights-cache``)."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import assert_one_line_error, wait_for_free_cpus
from pdsweep.errors import PdsweepError
from pdsweep.results import rows as results
from pdsweep.space import load_space
from pdsweep.training.weights import inspect_space
from pdsweep.sweep import SweepSettings
from pdsweep.sweep.watch import POLL_S, ClusterWatch, check_nodes
from test_sweep import PRETRAINED_SPACE
from weights_cache import micro_state, write_hub_weights

REPO = "pdsweep-test/vit_micro_watch"
# The sweep test's pretrained space, pretrained trials only, one epoch, its own hub name.
SPACE = (PRETRAINED_SPACE.replace("init: [pretrained, random]", "init: pretrained").replace("epochs: 2", "epochs: 1")
         .replace("pdsweep-test/vit_micro_synthetic", REPO))


@pytest.fixture
def pretrained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The space file, and a Hugging Face cache holding its weights (offline)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    write_hub_weights(cache, REPO, micro_state(), model_args={"num_heads": 2})
    space = tmp_path / "pretrained.yaml"
    space.write_text(SPACE)
    return space, cache


def test_the_weights_are_checked_on_each_node_and_a_node_without_them_is_named(ray_session, tmp_path: Path,
                                                                             pretrained: tuple[Path, Path]) -> None:
    space, cache = pretrained
    weights = inspect_space(load_space(str(space)), str(cache))
    here = {node["NodeID"] for node in ray_session.nodes() if node["Alive"]}
    settings = SweepSettings(name="w", space=str(space), weights_cache=str(cache))
    assert check_nodes(settings, weights) == here  # a task on each node found them
    empty = tmp_path / "empty"
    empty.mkdir()
    elsewhere = SweepSettings(name="w", space=str(space), weights_cache=str(empty))
    with pytest.raises(PdsweepError) as refused:
        check_nodes(elsewhere, weights)
    line = str(refused.value)
    assert re.match(r"node \S+ \([0-9a-f]{8}\), which may run trials, lacks the sweep's pretrained weights: vit_micro: "
                    r"weights pdsweep-test/vit_micro_watch@[0-9a-f]+ are not in the Hugging Face cache '\S+empty'", line), line
    assert "\n" not in line
    # A node the sweep has not checked yet (one that joined after it started) is checked by the
    # watch while trials run; here it lacks them, and the watch stops the sweep once, saying why.
    clock, stops = [0.0], []
    watch = ClusterWatch(elsewhere, weights, checked=set(), clock=lambda: clock[0], stop=lambda: stops.append(1))
    running = [SimpleNamespace(status="RUNNING")]
    for _ in range(240):  # the check task's worker starts, hashes the file, answers: seconds
        watch.step(running)
        if watch.reason is not None:
            break
        clock[0] += POLL_S
        ray_session.wait([ray_session.put(None)], timeout=0.5)  # let the task run
    assert watch.reason is not None and watch.reason.startswith("node ") and "lacks the sweep's pretrained" in watch.reason
    assert not watch.reason.endswith(".")  # the stop's line goes on after it
    watch.step(running)
    assert stops == [1]
    # The node with the weights passes the same watch, which then stops nothing.
    fine = ClusterWatch(settings, weights, checked=set(), clock=lambda: clock[0], stop=lambda: stops.append(2))
    for _ in range(240):
        fine.step(running)
        if fine.checked == here:
            break
        clock[0] += POLL_S
        ray_session.wait([ray_session.put(None)], timeout=0.5)
    assert fine.checked == here and fine.reason is None and stops == [1]


def test_waiting_alone_counts_toward_the_resource_timeout(ray_session) -> None:
    settings = SweepSettings(name="w", resource_timeout_s=60)
    clock, stops = [0.0], []
    watch = ClusterWatch(settings, {}, clock=lambda: clock[0], stop=lambda: stops.append(1))
    pending, running = SimpleNamespace(status="PENDING"), SimpleNamespace(status="RUNNING")
    for states, advance in [([pending], 50), ([pending, running], 50), ([pending], 55), ([], 60), ([pending], 55)]:
        watch.step(states)  # a running trial, or none waiting, starts the count again
        clock[0] += advance
    assert watch.reason is None and stops == []
    watch.step([pending])
    assert stops == [] and watch.reason is None  # 55 s of waiting so far
    clock[0] += 5
    watch.step([pending, SimpleNamespace(status="TERMINATED")])
    assert stops == [1] and watch.reason.startswith("no trial could start for 60 s: a trial takes 1 CPU(s)")


@pytest.mark.parametrize("minutes", ["0", "-1", "nan", "soon"])
def test_a_bad_resource_timeout_is_refused(cli, minutes: str) -> None:
    assert_one_line_error(cli("run", "--space", "quickstart", "--budget-gflops", "0.01", "--resource-timeout", minutes),
                          "--resource-timeout")


@pytest.mark.slow
def test_trials_that_wait_past_the_resource_timeout_stop_the_sweep_and_resume_takes_a_new_weights_cache(
        ray_session, cli, tmp_path: Path, pretrained: tuple[Path, Path]) -> None:
    space, cache = pretrained
    runs = tmp_path / "runs"

    @ray_session.remote(num_cpus=ray_session.cluster_resources()["CPU"])
    class Holder:  # another job that holds every CPU of the cluster
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    try:
        ray_session.get(holder.ready.remote(), timeout=120)
        result = cli("run", "--space", space, "--budget-gflops", "1", "--search", "grid", "--scheduler", "none",
                     "--dataset", "synthetic:200", "--cache-dir", tmp_path / "cache", "--runs-dir", runs, "--name", "w",
                     "--weights-cache", cache, "--resource-timeout", "0.05", "--no-estimate")
    finally:
        ray_session.kill(holder)
    wait_for_free_cpus(ray_session)
    assert result.code == 2 and result.out == "" and "Traceback" not in result.err, result
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("pdsweep: error: no trial could start for 3 s: a trial takes 1 CPU(s), and the cluster has "
                           "0 of 2 CPU free"), last
    assert last.endswith(f"the sweep is saved: `pdsweep resume w --runs-dir {runs}`.")
    assert not any(r.status == "completed" for r in results.read_rows(runs / "w" / results.RESULTS_FILE))
    # The weights move to another cache: resume refuses to guess, and takes the new one when told.
    moved = tmp_path / "moved-hub"
    shutil.move(cache, moved)
    assert_one_line_error(cli("resume", "w", "--runs-dir", runs), "vit_micro: ")
    done = cli("resume", "w", "--runs-dir", runs, "--weights-cache", moved, "--resource-timeout", "10")
    assert done.code == 0, done.err
    rows = results.read_rows(runs / "w" / results.RESULTS_FILE)
    digest = hashlib.sha256(next(moved.rglob("model.safetensors")).read_bytes()).hexdigest()
    assert sorted(r.config.keep_rate for r in rows) == [0.5, 1.0]
    assert all(r.status == "completed" and r.weights_sha256 == digest and r.pretrained_blocks == 2 for r in rows)
    assert f'"weights_cache": "{moved}"' in (runs / "w" / "sweep.json").read_text()  # the next resume reads it there too


@pytest.mark.slow
def test_a_trial_on_a_node_without_the_weights_is_retried_uncounted_and_the_sweep_stops_resumable(
        ray_session, cli, tmp_path: Path, pretrained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The weights change on the node after the driver checked them (as on a node that joins
    between two polls of the watch): the trial that finds them changed is not an error, even with
    --max-failures 0, and the sweep stops at once naming the node; resumed once they are back,
    every trial completes."""
    import pdsweep.sweep.run as run_module

    space, cache = pretrained
    runs = tmp_path / "runs"
    weights_file = next(cache.rglob("model.safetensors"))
    original = weights_file.read_bytes()

    class ChangedAfterTheCheck(ClusterWatch):
        def __init__(self, *args, **kwargs) -> None:  # the driver's checks are done; no trial has started
            super().__init__(*args, **kwargs)
            weights_file.write_bytes(original + b" ")

    monkeypatch.setattr(run_module, "ClusterWatch", ChangedAfterTheCheck)
    result = cli("run", "--space", space, "--budget-gflops", "1", "--search", "grid", "--scheduler", "none",
                 "--concurrency", "1", "--max-failures", "0", "--dataset", "synthetic:200", "--cache-dir",
                 tmp_path / "cache", "--runs-dir", runs, "--name", "n", "--weights-cache", cache, "--no-estimate")
    wait_for_free_cpus(ray_session)
    assert result.code == 2 and result.out == "" and "Traceback" not in result.err, result
    last = result.err.strip().splitlines()[-1]
    assert re.match(r"pdsweep: error: node \S+ \([0-9a-f]{8}\), which may run trials, lacks the sweep's pretrained "
                    r"weights: weights pdsweep-test/vit_micro_watch at \S+ are not the ones checked before the "
                    r"run .*; the sweep is saved: `pdsweep resume n --runs-dir \S+`\.$", last), last
    assert "NodeWithoutWeights" not in caplog.text  # no traceback of the trial that found it
    table = runs / "n" / results.RESULTS_FILE
    assert not [r for r in (results.read_rows(table) if table.is_file() else []) if r.status == "error"]
    monkeypatch.undo()
    weights_file.write_bytes(original)
    done = cli("resume", "n", "--runs-dir", runs)
    assert done.code == 0, done.err
    rows = results.read_rows(table)
    assert sorted(r.config.keep_rate for r in rows) == [0.5, 1.0] and all(r.status == "completed" for r in rows)


def test_on_an_autoscaling_cluster_a_trial_no_node_holds_is_waited_for_then_given_up(
        ray_session, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """What KubeRay sets in its pods says the cluster may autoscale: a trial of 1,000 CPUs is
    warned of and waited for, up to --resource-timeout, then the sweep stops, resumable."""
    monkeypatch.setenv("RAY_USAGE_STATS_KUBERAY_IN_USE", "1")
    runs = tmp_path / "runs"
    result = cli("run", "--space", "quickstart", "--budget-gflops", "0.01", "--trials", "2", "--cpus-per-trial", "1000",
                 "--dataset", "synthetic:40", "--cache-dir", tmp_path / "cache", "--runs-dir", runs, "--name", "a",
                 "--resource-timeout", "0.05", "--no-estimate")
    assert result.code == 2 and "Traceback" not in result.err, result
    lines = result.err.strip().splitlines()
    assert any(line.strip().startswith("warning: no node of the Ray cluster can hold one trial: a trial takes 1000 CPU(s)")
               and "waits for such a node, up to --resource-timeout (0.05 minutes)" in line for line in lines), lines
    assert lines[-1].startswith("pdsweep: error: no trial could start for 3 s: a trial takes 1000 CPU(s), and the "
                                "cluster has 2 of 2 CPU free"), lines[-1]
    assert (runs / "a" / "sweep.json").is_file()  # resumable: `pdsweep resume a` on a cluster with such a node
    # Tune's end warns of each trial that never reported (it looks for its result.json): not here.
    assert not [r.getMessage() for r in caplog.records if "Failed to fetch metrics" in r.getMessage()]
    wait_for_free_cpus(ray_session)
