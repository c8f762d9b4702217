"""Shared test helpers: run the CLI in-process and capture what a user would see."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from pdsweep.cli import main

# Generated cases (tests/test_bad_input.py): a fixed seed in the suite, so a run is repeatable;
# `pytest --hypothesis-profile pdsweep-long` runs ten times as many cases from fresh seeds.
settings.register_profile("pdsweep", derandomize=True, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("pdsweep-long", deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pdsweep")  # --hypothesis-profile, read after this file, overrides it


def cases(n: int) -> int:
    """``n`` generated cases, ten times as many under the ``pdsweep-long`` profile."""
    return n * 10 if settings.get_current_profile_name() == "pdsweep-long" else n


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``cli("plan", "--budget-gflops", "1")`` -> exit code, stdout, stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()  # what fixtures printed is not the command's output
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """Exit 2, one line on stderr naming the problem, nothing on stdout, no traceback."""
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    assert result.out == ""
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that needs one (starting Ray costs ~15 s here)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


_SPAWNED: list[subprocess.Popen] = []


def spawn(args: list[str], **kwargs: Any) -> subprocess.Popen:
    """A ``pdsweep`` driver (or any command) in its own session, stopped with all its children
    when the test ends, passed or failed: a failed test leaves no driver running trials on the
    session Ray for the next test to wait on."""
    process = subprocess.Popen(args, start_new_session=True, **kwargs)
    _SPAWNED.append(process)
    return process


def kill_spawned() -> None:
    while _SPAWNED:
        process = _SPAWNED.pop()
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(autouse=True)
def _no_spawned_process_outlives_its_test() -> Iterator[None]:
    yield
    kill_spawned()


@pytest.fixture
def ray_address(ray_session) -> Iterator[str]:
    """The session Ray's address, for a `pdsweep` driver in a subprocess (``--address``): it joins
    in a second where starting its own Ray costs ~15 s. A killed driver's trials die with it (Ray
    ends a dead driver's actors); the test waits for that before it resumes or moves the sweep, and
    after it every CPU must be free again, so no trial of it holds the next test's CPUs."""
    yield ray_session.get_runtime_context().gcs_address
    kill_spawned()  # a driver its test left running (it failed) holds no CPU of the next test's
    wait_for_free_cpus(ray_session)


def wait_for_free_cpus(ray: Any, ceiling_s: float = 300) -> None:
    """Until every CPU of the session Ray is free (no trial of a driver still runs), or fail."""
    deadline = time.monotonic() + ceiling_s
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, f"a trial still holds a CPU after {ceiling_s} s: {ray.available_resources()}"
        time.sleep(0.2)


@contextlib.contextmanager
def stand_in_trainable(monkeypatch: pytest.MonkeyPatch, function: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Trials of ``run_sweep`` run ``function`` (a test's stand-in for training, which reports as
    ``pdsweep.sweep.trainable.run_trial`` does) instead of training; the rest of the sweep is real."""
    from ray import cloudpickle, tune

    import pdsweep.sweep.run as run_module
    from pdsweep.sweep.cluster import resources_for

    def trainable(settings: Any, space: Any, state: Any) -> Any:
        return tune.with_resources(function, resources_for(settings, space, state.data.worker_gpu_memory_gb))

    monkeypatch.setattr(run_module, "tune_trainable", trainable)
    module = sys.modules[function.__module__]
    cloudpickle.register_pickle_by_value(module)  # Ray's workers cannot import a test module
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)
