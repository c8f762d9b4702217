"""The driver's watch over the cluster while trials run.

- **Nodes and weights.** Every node that may run a trial must hold the sweep's pretrained
  weights, unchanged, in its own cache. :func:`check_nodes` checks every such node before the
  first trial (a Ray task pinned to each node); :class:`ClusterWatch` checks a node that joins
  later as soon as the driver sees it, and stops the sweep (resumable) if it lacks them. A trial
  Ray placed on such a node before its check fails with :class:`NodeWithoutWeights`, which Tune
  retries without counting it, and the watch stops the sweep at once.
- **Trials that cannot start.** On a cluster that may autoscale, a trial no node can hold waits
  for one; if no trial runs and some wait for ``--resource-timeout``, the sweep stops (resumable)
  in one line that says what a trial takes and what the cluster has free.

A stop goes the way Ctrl-C goes (Ray Tune's graceful stop: the experiment state is saved and
running trials are recorded as interrupted), and :attr:`ClusterWatch.reason` says why.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pdsweep.errors import PdsweepError
from pdsweep.training.weights import WeightFile

if TYPE_CHECKING:
    from pdsweep.sweep.settings import SweepSettings

POLL_S = 5.0  # how often the driver looks at the trials and the nodes (4 times a shorter --resource-timeout)
NODE_CHECK_TIMEOUT_S = 300  # a node's worker start and the weights' SHA-256


def trial_nodes(cpus_per_trial: int) -> dict[str, str]:
    """The alive nodes a trial may run on (node id -> address): with GPUs when the cluster has
    any, else with the trial's CPUs."""
    import ray

    gpu = ray.cluster_resources().get("GPU", 0) > 0
    return {node["NodeID"]: node.get("NodeManagerAddress", "?") for node in ray.nodes()
            if node.get("Alive") and ((node.get("Resources", {}).get("GPU", 0) > 0) if gpu
                                      else node.get("Resources", {}).get("CPU", 0) >= cpus_per_trial)}


def start_check(node_id: str, weights: Mapping[str, WeightFile], cache: str | None) -> Any:
    """A task on node ``node_id`` that checks ``weights`` in its cache (``cache``, else the
    Hugging Face default there); its result is None, or the problem in one line."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    pinned = NodeAffinitySchedulingStrategy(node_id, soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=pinned, max_retries=0)(_check_here).remote(dict(weights), cache)


def _check_here(weights: Mapping[str, WeightFile], cache: str | None) -> str | None:
    from pdsweep.training.weights import check_unchanged

    try:
        check_unchanged(weights, cache)
    except PdsweepError as error:
        return str(error)
    return None


class NodeWithoutWeights(PdsweepError):
    """A trial found its node without the sweep's weights (the node joined between two polls of
    the watch, or its cache changed): Ray Tune retries the trial without counting the failure
    (:func:`pdsweep._compat.retry_uncounted`), and the watch stops the sweep."""


def node_without_weights(error: BaseException) -> bool:
    """Whether a trial's failure, as Ray Tune sees it, is :class:`NodeWithoutWeights`."""
    return isinstance(error, NodeWithoutWeights) or NodeWithoutWeights.__name__ in f"{type(error).__name__}: {error}"


def missing_line(address: str, node_id: str, problem: str) -> str:
    """``problem`` (what the weights check said, with its fix) on a node that may run trials."""
    return f"node {address} ({node_id[:8]}), which may run trials, lacks the sweep's pretrained weights: {problem}"


def check_nodes(settings: SweepSettings, weights: Mapping[str, WeightFile]) -> set[str]:
    """Every node a trial may run on holds ``weights`` unchanged; returns their ids. Raises in
    one line naming the first node that does not."""
    import ray

    if not weights:
        return set()
    nodes = trial_nodes(settings.cpus_per_trial)
    checks = {node_id: start_check(node_id, weights, settings.weights_cache) for node_id in nodes}
    for node_id, task in checks.items():
        try:
            problem = ray.get(task, timeout=NODE_CHECK_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            problem = f"its check did not finish within {NODE_CHECK_TIMEOUT_S} s (is the node busy or stuck?)."
        except ray.exceptions.RayError as error:  # the node left meanwhile: it runs no trial
            if node_id in trial_nodes(settings.cpus_per_trial):
                raise PdsweepError(f"cannot check the weights on node {nodes[node_id]}: {error}".splitlines()[0]) from None
            continue
        if problem is not None:
            raise PdsweepError(missing_line(nodes[node_id], node_id, problem))
    return set(nodes)


class ClusterWatch:
    """Called by the sweep's Tune callback at each step of Tune's loop (see the module docstring).

    ``checked``: the nodes already known to hold the weights; ``clock``: seconds; ``stop``: how
    the sweep is stopped (Ray Tune's graceful stop on Ctrl-C)."""

    def __init__(self, settings: SweepSettings, weights: Mapping[str, WeightFile], checked: set[str] | None = None,
                 clock: Callable[[], float] = time.monotonic, stop: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.weights = dict(weights)
        self.checked = set(checked or ())
        self.clock = clock
        self.stop = stop or (lambda: signal.raise_signal(signal.SIGINT))  # the sweep stays resumable
        self.reason: str | None = None  # why the watch stopped the sweep
        self._checking: dict[str, Any] = {}  # node id -> its check task
        self._waiting_since: float | None = None
        self._polled = float("-inf")
        self._poll_s = min(POLL_S, settings.resource_timeout_s / 4)

    def step(self, trials: list[Any]) -> None:
        if self.reason is not None:
            return
        now = self.clock()
        if now - self._polled < self._poll_s:
            return
        self._polled = now
        self._watch_waiting(trials, now)
        if self.weights and self.reason is None:
            self._watch_nodes()
        if self.reason is not None:
            self.stop()

    def trial_failed(self, error_text: str) -> None:
        """A trial failed on its worker (Ray's error for it, ``error_text``): if its node lacked the
        weights, the sweep stops now, with the trial's own line."""
        line = next((line for line in reversed(error_text.splitlines()) if NodeWithoutWeights.__name__ in line), None)
        if line is None or self.reason is not None:
            return
        self.reason = line.split(f"{NodeWithoutWeights.__name__}: ", 1)[-1].strip().rstrip(".")
        self.stop()

    def _watch_waiting(self, trials: list[Any], now: float) -> None:
        if any(t.status == "RUNNING" for t in trials) or not any(t.status == "PENDING" for t in trials):
            self._waiting_since = None
            return
        if self._waiting_since is None:
            self._waiting_since = now
        if now - self._waiting_since >= self.settings.resource_timeout_s:
            self.reason = self._waiting_line(self.settings.resource_timeout_s)

    def _waiting_line(self, waited: float) -> str:
        import ray

        total, free = ray.cluster_resources(), ray.available_resources()
        gpu = total.get("GPU", 0) > 0
        takes = f"{self.settings.cpus_per_trial} CPU(s)" + (" and a GPU share" if gpu else "")
        has = ", ".join(f"{free.get(k, 0):g} of {total[k]:g} {k}" for k in ("CPU", "GPU") if k in total)
        return (f"no trial could start for {_duration(waited)}: a trial takes {takes}, and the cluster has {has} "
                "free (`ray status` says what it waits for). Continue once a node can hold one, or wait longer "
                "with `--resource-timeout MINUTES`")

    def _watch_nodes(self) -> None:
        import ray

        nodes = trial_nodes(self.settings.cpus_per_trial)
        for node_id in nodes.keys() - self.checked - self._checking.keys():
            self._checking[node_id] = start_check(node_id, self.weights, self.settings.weights_cache)
        if not self._checking:
            return
        done, _ = ray.wait(list(self._checking.values()), num_returns=len(self._checking), timeout=0)
        for node_id, task in list(self._checking.items()):
            if task not in done:
                continue
            del self._checking[node_id]
            try:
                problem = ray.get(task)
            except ray.exceptions.RayError:  # the node left before its check ran: checked again if it returns
                continue
            if problem is None:
                self.checked.add(node_id)
            elif self.reason is None:
                self.reason = missing_line(nodes.get(node_id, "?"), node_id, problem).rstrip(".")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.3g} minutes" if seconds >= 120 else f"{seconds:.0f} s"
