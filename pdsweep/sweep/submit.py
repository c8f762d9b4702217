"""``pdsweep submit``, ``jobs`` and ``logs``: a sweep as a Ray Job on a cluster, from a laptop.

The sweep's driver runs on the cluster (``python -m pdsweep run ...`` as the job's entrypoint),
so it survives the laptop closing; ``submit`` follows its logs and returns its exit status.
Ray 2.60 protects the dashboard and the Jobs API with a token: ``submit`` sends it the way Ray's
own clients do (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, with
``RAY_AUTH_MODE=token``), and a refusal is reported as the authentication failure it is.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pdsweep.errors import PdsweepError
from pdsweep.yamlfile import read_yaml

EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 130}


def _check_reachable(address: str) -> None:
    """Nothing listening is an error within seconds, not after the SDK's retries."""
    parsed = urlparse(address)
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:  # a port that is not a number, or out of range
        port = None
    if parsed.scheme not in ("http", "https") or not parsed.hostname or port is None:
        raise PdsweepError(f"--address must be the dashboard's URL, e.g. http://HEAD:8265, got {address!r}.")
    try:
        socket.create_connection((parsed.hostname, port), timeout=3).close()
    except OSError:
        raise PdsweepError(
            f"nothing answers at {address}; is the cluster up, and its dashboard on port {port} "
            "(`ray start --head --dashboard-host=0.0.0.0`, or `kubectl port-forward ... 8265:8265`)?"
        ) from None


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).is_file()


def client(address: str) -> Any:
    """A Ray Jobs client for ``address``, sending the cluster's token when there is one."""
    _check_reachable(address)
    if "RAY_AUTH_MODE" not in os.environ and _token_available():
        os.environ["RAY_AUTH_MODE"] = "token"  # what Ray's CLI does when a token is present
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as error:  # ConnectionError, AuthenticationError, RuntimeError...
        raise _explain(error, address) from None


def _is_auth_failure(error: Exception) -> bool:
    """Ray's HTTP clients raise AuthenticationError on 401/403; its log websocket, aiohttp's
    handshake error with the status."""
    from ray.exceptions import AuthenticationError

    return isinstance(error, AuthenticationError) or getattr(error, "status", None) in (401, 403)


def _explain(error: Exception, address: str, job_id: str | None = None) -> PdsweepError:
    text = str(error)
    if _is_auth_failure(error):
        rejected = getattr(error, "status", None) == 403 or "403" in text or "Forbidden" in text
        refused = "rejected the token" if rejected else "requires a token"
        return PdsweepError(
            f"the Ray cluster at {address} {refused}: authentication failed; put the cluster's token in "
            "RAY_AUTH_TOKEN or ~/.ray/auth_token (cluster/README.md says where to find it)."
        )
    first = text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__
    about = f" (job {job_id} goes on: `pdsweep logs {job_id} --address {address} --follow`)" if job_id else ""
    return PdsweepError(f"the Ray Jobs API at {address} failed: {first}{about}")


def submit(address: str, args: list[str], *, working_dir: str | None = None, runtime_env: str | None = None,
           wait: bool = True, out: Any = print) -> int:
    """Submit ``pdsweep ARGS`` as a Ray Job; follow it to the end unless ``wait`` is False."""
    if not args:
        raise PdsweepError("give the pdsweep command to run after --, e.g. `pdsweep submit --address URL -- run --budget-gflops 17.6`.")
    env = _runtime_env(working_dir, runtime_env)
    jobs = client(address)
    entrypoint = "python -m pdsweep " + shlex.join(args)
    try:
        job_id = jobs.submit_job(entrypoint=entrypoint, runtime_env=env or None)
    except Exception as error:
        raise _explain(error, address) from None
    out(f"submitted job {job_id}: {entrypoint}")
    if not wait:
        out(f"follow it with `pdsweep logs {job_id} --address {address} --follow`")
        return 0
    try:
        asyncio.run(_follow(jobs, job_id))
        return finish(jobs, job_id, out)
    except KeyboardInterrupt:
        out(f"stopped following; the job goes on. `pdsweep logs {job_id} --address {address}`; "
            f"stop it with `ray job stop {job_id} --address {address}`.")
        return 130
    except Exception as error:  # the log stream or the status request broke; the job is unharmed
        raise _explain(error, address, job_id) from None


async def _follow(jobs: Any, job_id: str) -> None:
    async for lines in jobs.tail_job_logs(job_id):
        sys.stdout.write(lines)
        sys.stdout.flush()


def finish(jobs: Any, job_id: str, out: Any) -> int:
    """The job's exit code once it has ended (the log stream can end a moment before).

    A failed job returns its entrypoint's exit code (2 for bad input, as on a laptop), else 1.
    """
    for _ in range(60):
        info = jobs.get_job_info(job_id)
        status = str(getattr(info.status, "value", info.status))
        if status in EXIT_CODES:
            why = (info.message or "").strip().splitlines()[:1]  # the rest repeats the logs just shown
            out(f"job {job_id} {status.lower()}" + (f": {why[0].rstrip(':,')}" if status != "SUCCEEDED" and why else ""))
            code = getattr(info, "driver_exit_code", None)
            return code if status == "FAILED" and isinstance(code, int) and code > 0 else EXIT_CODES[status]
        time.sleep(1)
    out(f"job {job_id} is still {status.lower()}.")
    return 1


def _runtime_env(working_dir: str | None, runtime_env: str | None) -> dict[str, Any]:
    env: dict[str, Any] = {}
    if runtime_env:
        path = Path(runtime_env)
        if not path.is_file():
            raise PdsweepError(f"--runtime-env {runtime_env!r} not found; give a YAML or JSON file of a Ray runtime env.")
        env = read_yaml(path, "a runtime env (YAML or JSON)") or {}
        if not isinstance(env, dict):
            raise PdsweepError(f"--runtime-env {runtime_env}: must be a mapping (pip, env_vars, working_dir, ...).")
    if working_dir:
        if not Path(working_dir).is_dir():
            raise PdsweepError(f"--working-dir {working_dir!r} is not a folder.")
        env["working_dir"] = working_dir
    return env


def list_jobs(address: str) -> list[dict[str, Any]]:
    jobs = client(address)
    try:
        found = jobs.list_jobs()
    except Exception as error:
        raise _explain(error, address) from None
    return [
        {"id": j.submission_id or j.job_id, "status": str(getattr(j.status, "value", j.status)),
         "entrypoint": j.entrypoint, "start_time": j.start_time}
        for j in sorted(found, key=lambda j: j.start_time or 0)
    ]


def show_logs(address: str, job_id: str, *, follow: bool = False) -> int:
    jobs = client(address)
    try:
        if follow:
            jobs.get_job_info(job_id)  # an unknown id fails here, before the stream
            asyncio.run(_follow(jobs, job_id))
            return finish(jobs, job_id, print)
        sys.stdout.write(jobs.get_job_logs(job_id))
    except PdsweepError:
        raise
    except Exception as error:
        if "does not exist" in str(error) or "not found" in str(error).lower():
            raise PdsweepError(f"no job {job_id!r} at {address}; `pdsweep jobs --address {address}` lists them.") from None
        raise _explain(error, address, job_id if follow else None) from None
    return 0
