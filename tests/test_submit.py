"""``pdsweep submit`` through the Ray Jobs API of a real two-node Ray cluster on 127.0.0.1, and
the pretrained weights checked on each of its nodes before a sweep's first trial.

The cluster is two ``ray start`` processes (a head with the dashboard, a worker node with its own
CPU), each on loopback addresses and its own ports so it never meets the tests' shared local Ray,
and every process they start is stopped at the end, also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_one_line_error
from pdsweep.results import rows as results
from pdsweep.results.tracking import TRIAL_TAG
from test_sweep import TINY_SPACE
from test_watch import REPO
from test_watch import SPACE as WATCH_SPACE
from weights_cache import micro_state, write_hub_weights

BIN = Path(sys.executable).parent
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "two-node-cluster"
PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
              "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port")
NODE_PORTS = len(PORT_FLAGS) + 24  # the components', then 24 for worker processes


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held together while chosen, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Cluster:
    dashboard: str  # http://127.0.0.1:PORT, what `pdsweep submit --address` takes
    gcs: str
    env: dict[str, str]
    root: Path
    homes: Path | None = None  # the nodes' HF_HOME folders: head/, worker/


def _node_flags(ports: list[int]) -> list[str]:
    flags = [f"{flag}={port}" for flag, port in zip(PORT_FLAGS, ports)]
    return [*flags, "--worker-port-list=" + ",".join(map(str, ports[len(PORT_FLAGS):]))]


def _alive_nodes(cluster: Cluster) -> int:
    status = subprocess.run([str(BIN / "ray"), "status", f"--address={cluster.gcs}"], env=cluster.env,
                            capture_output=True, text=True, timeout=60)
    active = status.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return active.count("node_")


def _processes_of(root: Path) -> list[int]:
    """Every process started for the cluster (each names the cluster's temp dir on its command
    line), read from /proc so no process tool needs to be installed."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(root).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile
                pass
    return found


def _stop(processes: list[subprocess.Popen], root: Path) -> str:
    """SIGTERM each `ray start` process group, then SIGKILL whatever of the cluster still runs.
    Returns what survived (nothing, normally)."""
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5  # a `ray start --block` stops its node in seconds, or is killed below
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for _ in range(30):  # raylets and workers outlive their `ray start --block` parent
        left = _processes_of(root)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    survivors = []
    for pid in _processes_of(root):
        try:
            survivors.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200].decode())
        except OSError:
            pass
    return "\n".join(survivors)


def _start(root: Path, env: dict[str, str], processes: list[subprocess.Popen],
           worker_env: dict[str, str] | None = None) -> Cluster:
    """A head with the dashboard and a worker node, one CPU each (the worker's processes with
    ``worker_env``, else ``env``); raises if either fails to come up."""
    gcs_port, dashboard_port, client_port, *ports = _free_ports(3 + 2 * NODE_PORTS)
    head = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={client_port}",
            "--num-cpus=1", f"--temp-dir={root / 'ray'}", "--disable-usage-stats", *_node_flags(ports[:NODE_PORTS])]
    worker = [str(BIN / "ray"), "start", "--block", f"--address=127.0.0.1:{gcs_port}", "--node-ip-address=127.0.0.1",
              "--num-cpus=1", *_node_flags(ports[NODE_PORTS:])]
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    cluster = Cluster(f"http://127.0.0.1:{dashboard_port}", f"127.0.0.1:{gcs_port}", env, root)
    deadline = time.monotonic() + 120
    processes.append(subprocess.Popen(head, env=env, cwd=root, start_new_session=True,
                                      stdout=open(logs / "head.log", "w"), stderr=subprocess.STDOUT))
    while not _dashboard_up(dashboard_port):
        if processes[0].poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the head did not start:\n" + (logs / "head.log").read_text()[-3000:])
        time.sleep(1)
    processes.append(subprocess.Popen(worker, env=worker_env or env, cwd=root, start_new_session=True,
                                      stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT))
    while _alive_nodes(cluster) < 2:
        if processes[1].poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the worker node did not join:\n" + (logs / "worker.log").read_text()[-3000:])
        time.sleep(2)
    return cluster


@contextlib.contextmanager
def two_nodes(head_env: dict[str, str] | None = None, worker_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A head and a worker node on 127.0.0.1 with their own token (``head_env``, ``worker_env``:
    variables each node's processes get besides the cluster's; the head's are the drivers' too),
    stopped at the end whatever happens."""
    root = Path(tempfile.mkdtemp(prefix="pdc", dir="/tmp"))  # short: Ray's socket paths have a limit
    token = root / "auth_token"  # the cluster's own token, as `ray get-auth-token --generate` makes one
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    worker = {**env, **worker_env} if worker_env else None
    env.update(head_env or {})
    processes: list[subprocess.Popen] = []
    try:
        try:
            found = _start(root, env, processes, worker)
        except RuntimeError:  # a port taken between choosing and binding it: once more, on new ports
            _stop(processes, root)
            processes.clear()
            found = _start(root, env, processes, worker)
        yield found
    finally:
        left = _stop(processes, root)
        shutil.rmtree(ARTIFACTS, ignore_errors=True)  # the nodes' logs, for a failure's post-mortem
        if (root / "logs").is_dir():
            shutil.copytree(root / "logs", ARTIFACTS, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"cluster processes still running:\n{left}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """The two nodes, each with its own Hugging Face cache, empty (the weights test fills the
    head's: the worker node is then a node that never fetched them)."""
    homes = Path(tempfile.mkdtemp(prefix="pdh", dir="/tmp"))
    hf = {name: {"HF_HOME": str(homes / name), "HF_HUB_CACHE": "", "HF_HUB_OFFLINE": "1"} for name in ("head", "worker")}
    for name in hf:
        (homes / name / "hub").mkdir(parents=True)
    try:
        with two_nodes(head_env=hf["head"], worker_env=hf["worker"]) as found:
            found.homes = homes
            yield found
    finally:
        shutil.rmtree(homes, ignore_errors=True)


def _dashboard_up(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _pdsweep(cluster: Cluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "pdsweep"), *args], env=cluster.env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_submitted_sweep_runs_on_both_nodes(cluster: Cluster) -> None:
    space = cluster.root / "tiny.yaml"
    space.write_text(TINY_SPACE)
    runs = cluster.root / "runs"
    done = _pdsweep(cluster, "submit", "--address", cluster.dashboard, "--",
                    # Keep policy search: four trials over the two architectures, no config twice.
                    "run", "--space", str(space), "--budget-gflops", "0.0008", "--trials", "4", "--concurrency", "2",
                    "--keep-policy", "search",
                    "--scheduler", "none", "--no-estimate", "--dataset", "synthetic:200", "--runs-dir", str(runs),
                    "--cache-dir", str(cluster.root / "cache"), "--name", "c",
                    # A trial this short can end before the other node's actor has started, and Tune
                    # then hands the next trial the finished trial's cached actor instead: with fresh
                    # actors, two trials at a time need both nodes.
                    "--fresh-actors")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.startswith("submitted job ")
    assert "succeeded" in done.stdout.splitlines()[-1]
    assert "best vit_micro" in done.stdout  # the job's own log, followed to the end
    assert "is a local folder and the cluster has 2 nodes" in done.stdout  # said on a multi-node cluster
    rows = results.read(runs / "c" / "results.parquet").to_pylist()
    assert len(rows) == 4 and all(r["status"] == "completed" and r["test_accuracy"] is not None for r in rows)
    nodes = {r["node_id"] for r in rows}
    assert len(nodes) == 2 and None not in nodes, nodes  # one CPU per node and two at a time: both nodes
    assert json.loads((runs / "c" / "sweep.json").read_text())["settings"]["reuse_actors"] is False  # kept for resume
    store = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    runs_in_mlflow = store.search_runs([store.get_experiment_by_name("tiny").experiment_id])
    parents = [r for r in runs_in_mlflow if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs_in_mlflow if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    by_trial = {c.data.tags[TRIAL_TAG]: c for c in children}
    for row in rows:
        logged = by_trial[row["trial_id"]].data
        assert logged.params["resolution"] == str(row["resolution"])
        assert logged.metrics["best_val_accuracy"] == pytest.approx(row["best_val_accuracy"])
    listed = _pdsweep(cluster, "jobs", "--address", cluster.dashboard, timeout=60)
    assert listed.returncode == 0 and "SUCCEEDED" in listed.stdout
    job_id = done.stdout.split()[2].rstrip(":")
    logs = _pdsweep(cluster, "logs", job_id, "--address", cluster.dashboard, timeout=60)
    assert logs.returncode == 0 and "best vit_micro" in logs.stdout


def test_a_failing_job_returns_its_exit_status(cluster: Cluster) -> None:
    space = cluster.root / "tiny.yaml"
    space.write_text(TINY_SPACE)
    done = _pdsweep(cluster, "submit", "--address", cluster.dashboard, "--", "run", "--space", str(space),
                    "--budget-gflops", "1", "--dataset", "folder:/no/such/images", "--runs-dir", str(cluster.root / "bad"),
                    timeout=180)
    assert done.returncode == 2, done.stdout + done.stderr  # the entrypoint's own exit code: bad input
    last = done.stdout.strip().splitlines()[-1]
    assert " failed: " in last and "exit code 2" in last, done.stdout
    # The dataset path was looked up by a task on the cluster, and the job's one-line error was followed.
    assert done.stdout.count("pdsweep: error: on the cluster: ") == 1 and "/no/such/images" in done.stdout, done.stdout
    assert not (cluster.root / "bad").exists()  # nothing half-written


def test_logs_of_an_unknown_job(cluster: Cluster) -> None:
    result = _pdsweep(cluster, "logs", "raysubmit_nope", "--address", cluster.dashboard, timeout=60)
    assert result.returncode == 2 and "no job 'raysubmit_nope'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_submit_without_the_token_is_an_auth_error(cluster: Cluster, tmp_path: Path) -> None:
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token here either
    result = subprocess.run([str(BIN / "pdsweep"), "jobs", "--address", cluster.dashboard], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert "authentication failed" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_token_file_alone_is_enough(cluster: Cluster) -> None:
    """Without RAY_AUTH_MODE set, submit finds the token (here RAY_AUTH_TOKEN_PATH) and sends it."""
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}
    result = subprocess.run([str(BIN / "pdsweep"), "jobs", "--address", cluster.dashboard, "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)


def test_submit_where_nothing_listens(cli) -> None:
    (port,) = _free_ports(1)
    started = time.monotonic()
    result = cli("submit", "--address", f"http://127.0.0.1:{port}", "--", "run", "--budget-gflops", "1")
    assert_one_line_error(result, f"nothing answers at http://127.0.0.1:{port}")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--address", "127.0.0.1:8265", "--", "run"), "must be the dashboard's URL"),
        (("--address", "http://127.0.0.1:1"), "give the pdsweep command to run after --"),
        (("--address", "http://127.0.0.1:1", "--runtime-env", "/no/env.yaml", "--", "run"), "--runtime-env '/no/env.yaml' not found"),
    ],
)
def test_submit_bad_input(cli, args, fragment) -> None:
    assert_one_line_error(cli("submit", *args), fragment)


@pytest.mark.slow
def test_a_node_without_the_weights_stops_the_sweep_before_it_starts(cluster: Cluster, tmp_path: Path) -> None:
    """The weights are checked on every node before the first trial: the head's Hugging Face
    cache (the driver's) holds them, the worker node's does not, so ``run`` is refused in one line
    naming the worker node; with one ``--weights-cache`` both nodes read, every check passes."""
    head_home = cluster.homes / "head"
    write_hub_weights(head_home / "hub", REPO, micro_state(), model_args={"num_heads": 2})
    space = tmp_path / "pretrained.yaml"
    space.write_text(WATCH_SPACE)
    env = cluster.env  # the driver's, as the head's
    nodes = subprocess.run(  # the worker node's id: the node without the head's resource
        [sys.executable, "-c", "import json, ray; ray.init(log_to_driver=False); print(json.dumps("
         "[n['NodeID'] for n in ray.nodes() if n['Alive'] and 'node:__internal_head__' not in n['Resources']]))"],
        env={**env, "RAY_ADDRESS": cluster.gcs}, capture_output=True, text=True, timeout=120)
    assert nodes.returncode == 0, nodes.stderr[-2000:]
    [worker] = json.loads(nodes.stdout.strip().splitlines()[-1])
    runs = tmp_path / "runs"
    flags = ["run", "--space", str(space), "--budget-gflops", "1", "--search", "grid", "--scheduler", "none",
             "--address", cluster.gcs, "--dataset", "synthetic:200", "--cache-dir", str(tmp_path / "cache"),
             "--runs-dir", str(runs), "--name", "w", "--no-estimate"]
    refused = subprocess.run([str(BIN / "pdsweep"), *flags], env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("pdsweep: error: node ") and "which may run trials, lacks the sweep's pretrained " \
        f"weights: vit_micro: weights {REPO}@" in line and str(cluster.homes / "worker" / "hub") in line, line
    assert line.split("(", 1)[1][:8] == worker[:8]  # the worker node is named
    assert "Traceback" not in refused.stderr and not runs.exists()
    # One cache both nodes read (one machine here; a shared filesystem on a real cluster).
    passed = subprocess.run([str(BIN / "pdsweep"), *flags, "--weights-cache", str(head_home / "hub"), "--dry-run"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert passed.returncode == 0, passed.stderr[-3000:]
    assert "every check passed" in passed.stderr and not runs.exists()
