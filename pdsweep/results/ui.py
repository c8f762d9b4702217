"""``pdsweep ui``: the MLflow UI on 127.0.0.1 for the sweeps' tracking store."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

from pdsweep.errors import PdsweepError
from pdsweep.interrupts import sigterm_as_ctrl_c
from pdsweep.objective import METRICS, Objective
from pdsweep.paths import local_root
from pdsweep.results.tracking import default_uri

STARTUP_SECONDS = 120  # MLflow's server takes ~25 s to answer here


def store_uri(runs_dir: str, mlflow_uri: str | None) -> str:
    """The tracking store ``pdsweep run`` used for ``runs_dir`` (unless another is given)."""
    if mlflow_uri:
        return mlflow_uri
    root = local_root(runs_dir)
    uri = default_uri(root)
    if not (root / "mlflow.db").is_file():
        raise PdsweepError(f"no MLflow store at {root / 'mlflow.db'}; run a sweep first (`pdsweep run ... --runs-dir {runs_dir}`).")
    return uri


def check_port_free(port: int) -> None:
    if not 1 <= port <= 65535:
        raise PdsweepError(f"`1 <= --port <= 65535` must hold, got {port}.")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is free
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise PdsweepError(f"port {port} on 127.0.0.1 is in use; choose another with --port.") from None


def start(runs_dir: str, port: int, mlflow_uri: str | None = None) -> subprocess.Popen:
    """Start the server; returns once it answers (or raises, with its last output)."""
    uri = store_uri(runs_dir, mlflow_uri)
    check_port_free(port)
    # Artifacts of experiments created through the server go beside the sweeps, not into
    # whatever folder the command was started from (MLflow's default, ./mlartifacts).
    artifacts = local_root(runs_dir) / "mlartifacts"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--artifacts-destination", artifacts.as_uri(),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = tempfile.NamedTemporaryFile(prefix="pdsweep-mlflow-ui-", suffix=".log", delete=False)
    # Its own process group: MLflow's server forks workers, and stopping must stop them too.
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                output = Path(log.name).read_text(errors="replace").strip().splitlines()
                raise PdsweepError(f"the MLflow server stopped at start ({output[-1] if output else 'no output'}).")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return server
            except OSError:
                time.sleep(0.5)
    except BaseException:  # Ctrl-C or SIGTERM while it starts: it must not outlive this command
        stop(server)
        raise
    stop(server)
    raise PdsweepError(f"the MLflow server did not answer on port {port} within {STARTUP_SECONDS} s.")


def stop(server: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop the server and every worker it forked (its process group): SIGTERM, then SIGKILL
    for whatever is left after ``grace_s`` seconds."""
    group = server.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        server.poll()  # reap the leader
        try:
            os.killpg(group, 0)  # anyone left in the group?
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=5)


def _objective(metric: str | None) -> Objective:
    """The objective a parent run records (its ``metric`` param); accuracy before it was."""
    return Objective(metric) if metric in METRICS else Objective()  # type: ignore[arg-type]


def sweep_links(uri: str, base: str, limit: int = 5) -> list[str]:
    """For the latest sweeps: their runs page (sorted by the sweep's objective) and a compare page of trials."""
    from mlflow.tracking import MlflowClient

    from pdsweep.results.tracking import PARENT_TAG

    client = MlflowClient(tracking_uri=uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return []
    parents = client.search_runs(list(experiments), filter_string=f"tags.`{PARENT_TAG}` LIKE '%'",
                                 order_by=["attributes.start_time DESC"], max_results=limit)
    lines = []
    for parent in parents:
        experiment = parent.info.experiment_id
        objective = _objective(parent.data.params.get("metric"))
        order = quote(f"metrics.`{objective.best_key}`")
        lines.append(f"  sweep {parent.data.tags[PARENT_TAG]!r} (experiment {experiments[experiment]!r}): "
                     f"{base}/#/experiments/{experiment}/runs?orderByKey={order}&orderByAsc={str(objective.minimised).lower()}")
        children = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                      max_results=100)
        if children:
            runs = json.dumps([child.info.run_id for child in children]).replace(" ", "")
            lines.append(f"    compare its {len(children)} trials: {base}/#/compare-runs?runs={runs}&experiments=[\"{experiment}\"]")
    return lines


def serve(runs_dir: str, port: int, mlflow_uri: str | None = None) -> int:
    """Run the UI until Ctrl-C or SIGTERM; either stops the server and all its workers."""
    with sigterm_as_ctrl_c():
        try:
            server = start(runs_dir, port, mlflow_uri)
        except KeyboardInterrupt:
            print("pdsweep: interrupted; the MLflow UI was stopped.", file=sys.stderr, flush=True)
            return 130
        where = mlflow_uri or str(Path(runs_dir).expanduser().resolve())
        base = f"http://127.0.0.1:{port}"
        try:
            print(f"MLflow UI for {where}: {base}  (Ctrl-C to stop)", flush=True)
            for line in sweep_links(store_uri(runs_dir, mlflow_uri), base):
                print(line, flush=True)
            server.wait()
        except KeyboardInterrupt:
            print("pdsweep: stopped the MLflow UI.", file=sys.stderr, flush=True)
        finally:
            stop(server)
    return 0
