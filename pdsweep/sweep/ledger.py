"""The compute cap: a Tune searcher that stops issuing trials before the sweep passes its budget.

:class:`LedgerSearcher` sits between Tune's ``ConcurrencyLimiter`` and the searcher that
proposes trials (:class:`~pdsweep.sweep.searcher.BudgetSearcher`, or the repeats' list). It
keeps the sweep's ledger: the compute finished trials spent (``train GFLOPs x 3 x images x
epochs run``, and device-seconds: seconds run x devices held, see
:mod:`pdsweep.results.compute`), and what running trials are committed to at their full epochs.
A proposed trial that would take spent + committed + its own past ``--max-tflop`` or
``--max-device-hours`` is not issued: the proposer is told it failed (so no Optuna trial stays
open) and asked for its next proposal, until one fits or it has none left; then Tune is told the
search is finished, and the running trials finish.

A trial's device-seconds are known only once it ran, so they are predicted: the sweep's own
rate so far (device-seconds per TFLOP of the epochs it has seen), or, before its first epoch,
the pre-flight's measured throughput (:mod:`pdsweep.sweep.estimate`); without either, only
what was seen counts. The ledger is saved with Tune's searcher state, so a resumed sweep goes
on counting from where it stopped, under the caps it started with; what trials that ended after
that save spent is taken from their rows in ``results.parquet``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ray.tune.search import Searcher

from pdsweep.cost import train_gflops
from pdsweep.results.compute import CapName, ComputeCap
from pdsweep.results.rows import RESULTS_FILE, read_rows
from pdsweep.sweep.estimate import Throughput
from pdsweep.sweep.spec import TIME_ATTR, TrialSpec
from pdsweep.sweep.store import SweepStore, relocated, relocated_name

STATE_VERSION = 1

# The cap that stopped each sweep's search in this process, by sweep name (see :func:`stopped_by`).
_STOPPED: dict[str, CapName] = {}


def stopped_by(sweep: str) -> CapName | None:
    """Which cap, if any, a ledger of ``sweep`` stopped at in this process."""
    return _STOPPED.get(sweep)


def forget_stop(sweep: str) -> None:
    """Before a driver runs ``sweep``'s phases (another sweep of that name may have run here)."""
    _STOPPED.pop(sweep, None)


@dataclass(frozen=True)
class Running:
    """An issued trial: what it is committed to, and what it has run so far."""

    tflop_per_epoch: float
    epochs: int  # planned
    epochs_seen: int = 0
    seconds: float = 0.0  # Tune's time_total_s so far
    devices: float | None = None

    @property
    def committed_tflop(self) -> float:
        return self.tflop_per_epoch * self.epochs

    @property
    def seen_tflop(self) -> float:
        return self.tflop_per_epoch * self.epochs_seen

    @property
    def seen_device_s(self) -> float:
        return self.seconds * (self.devices or 0.0)


class LedgerSearcher(Searcher):
    """Issues ``inner``'s trials until the next one would pass ``cap``."""

    def __init__(self, inner: Searcher, cap: ComputeCap, *, sweep: str, spent_tflop: float = 0.0,
                 spent_device_s: float = 0.0, prior: Throughput | None = None, store: SweepStore | None = None,
                 counted: Iterable[str] = ()) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self.store = store  # where the sweep's rows are, for a resume
        self.counted = set(counted)  # the ended trials whose compute ``spent_*`` holds
        self.cap = cap
        self.sweep = sweep
        self.prior = prior
        self.spent_tflop = spent_tflop  # finished trials (of earlier phases too)
        self.spent_device_s = spent_device_s
        self.running: dict[str, Running] = {}
        self.stopped: CapName | None = None
        self.refused: CapName | None = None  # the cap that refused a proposal, if one did

    # ---- the cap ---------------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.stopped:
            return Searcher.FINISHED
        while True:
            point = self.inner.suggest(trial_id)
            if point is None:
                return point
            if point == Searcher.FINISHED:
                if self.refused is not None:  # the proposer has nothing left that fits: the cap ended the search
                    self.stopped = _STOPPED[self.sweep] = self.refused
                return point
            spec = TrialSpec.from_dict(point)
            epochs = spec.context.training.epochs
            proposed = Running(spec.planned_tflop / epochs, epochs)
            passed = self._passes(proposed, spec)
            if passed is None:
                self.running[trial_id] = proposed
                return point
            # Too dear for what is left: the proposer closes what it opened, and is asked for the
            # next one (random and grid propose their dearest first; a cheaper one may still fit).
            self.refused = passed
            self.inner.on_trial_complete(trial_id, error=True)

    def _passes(self, proposed: Running, spec: TrialSpec) -> CapName | None:
        """The cap ``proposed`` would take the sweep past, if any."""
        if self.cap.max_tflop is not None:
            committed = self.spent_tflop + sum(r.committed_tflop for r in self.running.values())
            if committed + proposed.committed_tflop > self.cap.max_tflop:
                return "max_tflop"
        if self.cap.max_device_hours is not None:
            rate = self._rate()
            committed = self.spent_device_s + sum(max(r.seen_device_s, (rate or 0.0) * r.committed_tflop)
                                                  for r in self.running.values())
            if rate is not None:
                next_trial = rate * proposed.committed_tflop
            elif self.prior is not None:
                seconds = self.prior.seconds_per_image(train_gflops(spec.config))
                next_trial = seconds * (spec.context.train_images or 0) * proposed.epochs * self.prior.devices_per_trial
            else:
                next_trial = 0.0
            if committed + next_trial > self.cap.max_device_hours * 3600:
                return "max_device_hours"
        return None

    def _rate(self) -> float | None:
        """Device-seconds per TFLOP over every epoch seen so far; None before the first."""
        tflop = self.spent_tflop + sum(r.seen_tflop for r in self.running.values())
        seconds = self.spent_device_s + sum(r.seen_device_s for r in self.running.values())
        return seconds / tflop if tflop > 0 and seconds > 0 else None

    # ---- what Tune tells a searcher --------------------------------------------------------

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._seen(trial_id, result)
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self._seen(trial_id, result or {})
        ended = self.running.pop(trial_id, None)
        if ended is not None:
            self.spent_tflop += ended.seen_tflop
            self.spent_device_s += ended.seen_device_s
            self.counted.add(trial_id)
        self.inner.on_trial_complete(trial_id, result=result, error=error)

    def _seen(self, trial_id: str, result: dict[str, Any]) -> None:
        running = self.running.get(trial_id)
        if running is None:
            return
        self.running[trial_id] = replace(
            running,
            epochs_seen=max(running.epochs_seen, int(result.get(TIME_ATTR) or 0)),
            seconds=max(running.seconds, float(result.get("time_total_s") or 0.0)),
            devices=result.get("devices", running.devices),
        )

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.inner.set_max_concurrency(max_concurrent)

    def on_pause(self, trial_id: str) -> None:
        self.inner.on_pause(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        self.inner.on_unpause(trial_id)

    # ---- Tune's checkpointing: the ledger and the inner searcher's own state, in one file ---

    def save(self, checkpoint_path: str) -> None:
        # The inner searcher's file is made outside the checkpoint's folder: Tune syncs that
        # folder in a background thread, and a file that vanishes mid-copy fails the sync.
        handle, inner_path = tempfile.mkstemp(prefix="pdsweep-ledger-inner-")
        os.close(handle)
        try:
            self.inner.save(inner_path)
            with open(inner_path, "rb") as inner_file:
                inner = inner_file.read()
        finally:
            os.unlink(inner_path)
        state = {"version": STATE_VERSION, "spent_tflop": self.spent_tflop, "spent_device_s": self.spent_device_s,
                 "running": self.running, "stopped": self.stopped, "refused": self.refused, "inner": inner,
                 "counted": self.counted}
        with open(checkpoint_path, "wb") as handle_out:
            pickle.dump(state, handle_out)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        self.spent_tflop, self.spent_device_s = state["spent_tflop"], state["spent_device_s"]
        self.running, self.stopped = state["running"], state["stopped"]
        self.refused = state.get("refused", self.stopped)
        if self.stopped:
            _STOPPED[self.sweep] = self.stopped
        handle_no, inner_path = tempfile.mkstemp(prefix="pdsweep-ledger-inner-")
        try:
            with os.fdopen(handle_no, "wb") as inner_file:
                inner_file.write(state["inner"])
            if getattr(self.inner, "store", False) is None:  # a list pickled before it knew the sweep's folder
                self.inner.store = self.store
            self.inner.restore(inner_path)
        finally:
            os.unlink(inner_path)
        self._count_rows(state.get("counted"))

    def _count_rows(self, counted: set[str] | None) -> None:
        """After a restore: trials that ended after Tune's last save of this state have rows but
        are not among ``counted``; they no longer run (Tune's restored copies are stopped, see
        :class:`pdsweep.sweep.schedulers.InPlace`) and what their rows say they spent counts.
        ``counted`` None: a state saved before it was kept, at every step, so every row is in it."""
        ended = ([row for row in read_rows(self.store.local_dir / RESULTS_FILE) if row.status != "interrupted"]
                 if self.store is not None else [])
        if counted is None:
            self.counted = {row.trial_id for row in ended}
            return
        self.counted = set(counted)
        missed = [row for row in ended if row.trial_id not in self.counted]
        for row in missed:
            self.running.pop(row.trial_id, None)
        spent = seeded_from(missed)
        self.spent_tflop += spent["spent_tflop"]
        self.spent_device_s += spent["spent_device_s"]
        self.counted |= spent["counted"]

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickled before the ledger knew its sweep's folder: the one `pdsweep resume` found for its name.
        self.__dict__.update({"store": relocated_name(state["sweep"]), "counted": set(), **state})
        if self.store is not None:
            self.store = relocated(self.store)


def seeded_from(rows: list[Any]) -> dict[str, Any]:
    """What the trials of ``rows`` spent (``spent_tflop``, ``spent_device_s``), and their ids (``counted``)."""
    return {"spent_tflop": sum(r.spent_tflop or 0.0 for r in rows),
            "spent_device_s": sum(r.device_seconds or 0.0 for r in rows), "counted": {r.trial_id for r in rows}}


__all__ = ["LedgerSearcher", "Running", "forget_stop", "seeded_from", "stopped_by"]
