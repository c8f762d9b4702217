"""A finished (or running) sweep as ``pdsweep report`` reads it: its rows and its MLflow ids."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pdsweep.errors import PdsweepError
from pdsweep.results.compute import ComputeCap, ComputePlan
from pdsweep.results.rows import RESULTS_FILE, ResultRow, read_rows
from pdsweep.results.tracking import TrackingIds
from pdsweep.space import SearchSpace
from pdsweep.sweep.store import MLFLOW_FILE, SWEEP_FILE, SweepStore


@dataclass(frozen=True)
class SweepFiles:
    """What ``report`` reads of a sweep: its rows and, from its sweep.json, its MLflow ids."""

    name: str
    rows: tuple[ResultRow, ...]
    mlflow: TrackingIds | None
    folder: Path  # local (a mirror when the runs dir is a URI)
    options: dict[str, Any] = field(default_factory=dict)  # for report.build: top_k, the compute plan and caps


def load_sweep(name: str, runs_dir: str) -> SweepFiles:
    store = SweepStore(runs_dir, name)
    store.fetch(SWEEP_FILE, RESULTS_FILE, MLFLOW_FILE)
    state_file = store.require()
    path = store.local_dir / RESULTS_FILE
    if not path.is_file():
        raise PdsweepError(f"sweep {name!r} has no finished trial yet; wait for one, or `pdsweep resume {name}`.")
    try:
        state = json.loads(state_file.read_text())
    except ValueError:
        raise PdsweepError(f"{state_file} is not valid JSON; was it edited by hand?") from None
    ids = TrackingIds.from_dict(state["mlflow"]) if isinstance(state, dict) and state.get("mlflow") else None
    default = isinstance(state, dict) and not (state.get("settings") or {}).get("mlflow_uri")
    if ids is not None and default and (store.tracking_root / MLFLOW_FILE).is_file():
        ids = replace(ids, uri=store.tracking_uri)  # the default store moves with the sweep
    return SweepFiles(name, tuple(read_rows(path)), ids, store.local_dir, _report_options(state))


def sweep_space(name: str, runs_dir: str) -> SearchSpace:
    """The space sweep ``name`` ran: the file's text its sweep.json kept, with its overrides (its
    description says which: the file's own may describe configs they replaced)."""
    from pdsweep.sweep.run import space_of
    from pdsweep.sweep.settings import read_state

    state = read_state(SweepStore(runs_dir, name), shown=runs_dir)
    space = space_of(state)
    if not state.settings.overrides:
        return space
    changes = " ".join(f"--set {change}" for change in state.settings.overrides)
    return replace(space, description=f"{space.description.strip()}\n\nAs run, with {changes}.".strip())


def _report_options(state: Any) -> dict[str, Any]:
    """``top_k``, the compute plan and the caps of a sweep.json (any version: what it has)."""
    if not isinstance(state, dict):
        return {}
    settings = state.get("settings") or {}
    options: dict[str, Any] = {"cap": ComputeCap(settings.get("max_tflop"), settings.get("max_device_hours"))}
    if "top_k" in settings:
        options["top_k"] = settings["top_k"]
    if state.get("compute"):
        options["plan"] = ComputePlan.from_dict(state["compute"])
    return options
