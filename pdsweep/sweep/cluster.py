"""Where trials run: joining Ray, probing the dataset where trials will read it, and sizing
each trial's resources (CPUs, or a GPU share from its predicted memory)."""

from __future__ import annotations

import logging
import math
import os
import re
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdsweep.cost import estimate
from pdsweep.errors import PdsweepError
from pdsweep.space import SearchSpace
from pdsweep.sweep.settings import DataProbe
from pdsweep.sweep.spec import TrialSpec
from pdsweep.sweep.store import SweepStore

if TYPE_CHECKING:
    from pdsweep.sweep.settings import SweepSettings

Print = Callable[[str], None]



def probe_dataset(settings: SweepSettings, space: SearchSpace) -> DataProbe:
    """Load the dataset once on the driver (builds the cache): classes and training images."""
    from pdsweep.objective import check_scorable
    from pdsweep.training.data import DatasetSpec, load_dataset

    spec = DatasetSpec.parse(settings.dataset)
    resolution = min(int(r) for r in space.axes["resolution"].values())
    dataset = load_dataset(spec, resolution, seed=space.training.seed,
                           cache_dir=Path(settings.cache_dir) if settings.cache_dir else None)
    check_scorable(dataset, space.training.metric, space.training.eval_groups)
    return DataProbe(dataset.num_classes, len(dataset.train), train_groups=dataset.train.num_groups)


PROBE_TIMEOUT_S = 900  # an autoscaling cluster may have to start its first worker for the probe


def probe_on_cluster(settings: SweepSettings, space: SearchSpace) -> DataProbe:
    """:func:`probe_dataset` as a Ray task placed like a trial: on a GPU node when the cluster
    has GPUs, else where a trial's CPUs are free (a head started with no CPUs never qualifies, so
    an autoscaler starts a worker). The path is resolved where the trials will read it, and that
    node's GPU memory sizes the trials' GPU shares (the pretrained weights are checked on every
    node: :func:`pdsweep.sweep.watch.check_nodes`)."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    options = {"num_cpus": 0, "num_gpus": 0.01} if gpus else {"num_cpus": settings.cpus_per_trial}
    task = ray.remote(**options)(_probe_worker).remote(settings, space)
    try:
        return ray.get(task, timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(task, force=True)
        needs = "a GPU" if gpus else f"{settings.cpus_per_trial} CPU(s)"
        raise PdsweepError(
            f"no node of the cluster could run a trial ({needs}) within {PROBE_TIMEOUT_S // 60} minutes; "
            "are its workers up (`ray status`)?"
        ) from None
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, PdsweepError):
            raise PdsweepError(f"on the cluster: {error.cause}") from None
        raise


def _probe_worker(settings: SweepSettings, space: SearchSpace) -> DataProbe:
    memory = local_gpu_memory_gb()
    return replace(probe_dataset(settings, space), worker_gpu_memory_gb=memory or None)


def warn_if_not_shared(store: SweepStore, err: Print) -> None:
    """A local runs dir works on one machine; say so when the cluster has several."""
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    hosts = {node.get("NodeManagerAddress") for node in nodes}
    if not store.remote and len(nodes) > 1:
        where = "machines" if len(hosts) > 1 else "nodes"
        err(f"  note: --runs-dir {store.runs_dir} is a local folder and the cluster has {len(nodes)} {where}; "
            "trials elsewhere save checkpoints there only if every node mounts it at the same path. "
            "Otherwise give a URI (s3://, gs://) or a shared filesystem.")


def connect(address: str | None, verbose: bool) -> None:
    """Join the Ray at ``address`` (fail fast and clearly), or start a local one."""

    import ray

    check_address(address)
    if ray.is_initialized():  # already connected (a test session, a notebook)
        return
    local = not address and not os.environ.get("RAY_ADDRESS")  # inside a Ray job, Ray says where it is
    if local:  # Ray's note that the Ray it starts uses token authentication (the secure default) is no news
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_QUIET_AUTH)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=verbose,
                 **({"include_dashboard": False} if local else {}))
    except ConnectionError as error:
        raise PdsweepError(f"cannot connect to Ray at {address or 'a local instance'} ({error}).") from None


class _QuietTokenNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


_QUIET_AUTH = _QuietTokenNote()


def check_address(address: str | None) -> None:
    """A Ray address must answer on its port (within seconds), or the sweep does not start."""
    if not address or address == "auto":
        return
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        raise PdsweepError(
            f"cannot reach Ray at {address}; start a cluster there with `ray start --head` "
            "(its GCS listens on port 6379), or drop --address to use a local Ray."
        ) from None


def _host_port(address: str) -> tuple[str, int]:
    match = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address)
    if not match:
        raise PdsweepError(f"--address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}.")
    return match.group(1), int(match.group(2))




def check_capacity(settings: SweepSettings, err: Print, fix: str | None = None) -> None:
    """Some node of the Ray this process joined can hold one trial: the trial's CPUs, and on a
    cluster with GPUs a GPU share on the same node. Where none can and no autoscaler may add one
    (a local Ray, a fixed cluster), one line says what a trial takes and what the nodes have, so
    the sweep stops before anything is written instead of waiting forever; with an autoscaler, a
    warning (the sweep waits for a node). ``fix``: what to do instead of the flag ``run`` has
    (``resume`` has none); a Ray joined through ``ray://`` may autoscale unseen, so it is warned of."""
    import ray

    from pdsweep._compat import autoscaling_cluster

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    gpu = ray.cluster_resources().get("GPU", 0) > 0
    eligible = [r for r in nodes if not gpu or r.get("GPU", 0) >= 0.125]  # a GPU trial holds at least an eighth
    cpus = settings.cpus_per_trial
    if any(r.get("CPU", 0) >= cpus for r in eligible):
        return
    most = max((r.get("CPU", 0) for r in eligible), default=0)
    node = "GPU node" if gpu else "node"
    fix = fix or ((f"lower --cpus-per-trial to {int(most)}" if most >= 1 else f"give a {node} CPUs")
                  + f" or add a {node} with {cpus}")
    line = (f"no {node} of the Ray cluster can hold one trial: a trial takes {cpus} CPU(s)"
            f"{' and a GPU share' if gpu else ''}, and the largest of its {len(eligible)} {node}(s) has {most:g}; {fix}.")
    if autoscaling_cluster() or (settings.address or "").startswith("ray://"):
        err(f"  warning: {line} The cluster may autoscale: the sweep waits for such a node, up to "
            f"--resource-timeout ({settings.resource_timeout_s / 60:g} minutes) with no trial running.")
        return
    raise PdsweepError(line)


def resources_for(settings: SweepSettings, space: SearchSpace,
                   worker_gpu_memory_gb: float | None = None) -> Callable[[dict[str, Any]], dict[str, float]]:
    """CPUs on CPU-only Ray; on GPU nodes a GPU share sized from the predicted memory and the
    GPU's memory (``--gpu-memory-gb``, else what the cluster probe saw on a GPU node, else this
    machine's GPU)."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    gpu_memory = settings.gpu_memory_gb or worker_gpu_memory_gb or (local_gpu_memory_gb() if gpus else None)

    def resources(trial: dict[str, Any]) -> dict[str, float]:
        if not gpus:
            return {"cpu": settings.cpus_per_trial}
        if gpu_memory is None:
            return {"cpu": settings.cpus_per_trial, "gpu": 1}
        spec = TrialSpec.from_dict(trial)
        needed = estimate(spec.config, spec.settings.step, gpu_memory).memory_gb  # as arranged to fit the GPU
        share = min(1.0, math.ceil(needed / gpu_memory * 8) / 8)  # in eighths: several small trials share a GPU
        return {"cpu": settings.cpus_per_trial, "gpu": max(share, 0.125)}

    return resources


def slots(settings: SweepSettings) -> int:
    import ray

    resources = ray.cluster_resources()
    if resources.get("GPU", 0):
        return max(1, int(resources["GPU"] * 8))  # at most eight trials per GPU; Ray packs by memory share
    return max(1, int(resources.get("CPU", 1) // settings.cpus_per_trial))


def local_gpu_memory_gb() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 1e9
    except Exception:  # a broken CUDA install must not stop a CPU sweep
        return None
    return None
