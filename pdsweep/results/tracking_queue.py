"""MLflow off the driver's hot path: a tracker whose calls one background thread makes.

Ray Tune calls the driver's callbacks on its one loop thread, and an MLflow call there holds the
loop for a round trip to the tracking store (with a server, most of the driver's time per trial:
bench/RESULTS.md, "Driver at scale"). :class:`QueuedTracker` puts each call on a bounded queue
and returns; one worker thread makes them in the order they came, so a child run is created (and
its trial mapped to its run id) before the calls that need it, and a trial's calls keep their
order. Consecutive epochs of several trials go as one ``log_batch`` per trial. The circuit breaker
and what it remembers for the back-fill are :class:`~pdsweep.results.tracking.Tracker`'s,
unchanged: they run on the worker.

Anything that reads what the driver wrote waits for the queue first (:meth:`QueuedTracker.flush`);
the driver does so on its way out (the sweep's end, Ctrl-C, SIGTERM) for at most
:attr:`~pdsweep.results.tracking.Tracker.flush_s` seconds, and names what it could not send.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdsweep.results.tracking import EPOCH_METRICS, PARENT, Tracker, TrackingIds, _first_line

if TYPE_CHECKING:
    from pdsweep.results.rows import ResultRow

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000  # calls; when it is full the driver waits for room (a store slower than the sweep slows it)
TAKEN_AT_ONCE = 1_000  # calls the worker takes off the queue together (and coalesces)
# The worker takes what came within this long of a first call together: its MLflow work runs in
# bursts, a trial's epochs in one call. Made call by call, that work holds the GIL in many short
# spells, each of which delays Tune's loop (bench/RESULTS.md, "Driver at scale": 300 trials with
# SQLite, 205 s call by call, 128 s in bursts).
LINGER_S = 1.0
IDLE_S = 60.0  # a worker with nothing to do for this long ends (none is left behind by a finished sweep)
_EPOCH_KEYS = ("epoch", "started_at", "reported_at", *EPOCH_METRICS)  # what Tracker.epochs reads of a result


@dataclass(frozen=True)
class _Epoch:
    trial_id: str
    run_name: str
    tags: Mapping[str, str]
    result: Mapping[str, Any]


@dataclass(frozen=True)
class _Call:
    trial_id: str | None  # whose logging it is (PARENT: the sweep's run; None: not MLflow's, nothing to back-fill)
    action: Callable[[], None]


class QueuedTracker(Tracker):
    """A :class:`Tracker` whose driver-side calls (``epoch``, ``finish``, ``close_open``,
    ``artifacts``, ``end_sweep``) return at once; a worker thread, started by the first call, makes
    them as ``Tracker`` does. What they leave (``runs``, ``unlogged``, :meth:`warning`) is
    complete after :meth:`flush`. Not picklable (its thread): the driver's callback makes a new
    one after a restore."""

    def __init__(self, ids: TrackingIds, labels: Mapping[str, Mapping[str, str]] | None = None) -> None:
        super().__init__(ids, labels)
        self._queue: queue.Queue[_Epoch | _Call] = queue.Queue(QUEUE_SIZE)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()  # the worker's hand-over of what it took, against flush's give-up
        self._hurry = threading.Event()  # a flush waits: the worker takes what is queued without lingering
        self._taken: deque[_Epoch | _Call] = deque()  # taken off the queue, not yet made
        self._making: list[_Call] = []  # being made now

    # The driver's side: queue and return.

    def epoch(self, trial_id: str, run_name: str, tags: Mapping[str, str], result: Mapping[str, Any]) -> None:
        self._put(_Epoch(trial_id, run_name, dict(tags), {k: result[k] for k in _EPOCH_KEYS if k in result}))

    def finish(self, row: ResultRow, *, history: bool = False) -> None:
        self._put(_Call(row.trial_id, partial(Tracker.finish, self, row, history=history)))

    def close_open(self, status: str = "KILLED", *, sweep_done: bool = False) -> None:
        self._put(_Call(PARENT, partial(Tracker.close_open, self, status, sweep_done=sweep_done)))

    def artifacts(self, files: Iterable[Path]) -> None:
        self._put(_Call(PARENT, partial(Tracker.artifacts, self, list(files))))

    def end_sweep(self, status: str = "FINISHED") -> None:
        self._put(_Call(PARENT, partial(Tracker.end_sweep, self, status)))

    def then(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the worker once the calls queued before it are made (to publish a
        SQLite store's file with what they wrote)."""
        self._put(_Call(None, action))

    def flush(self, timeout_s: float | None = None) -> str | None:
        """Wait until every call queued so far is made (sent, or failed into the breaker). After
        ``timeout_s``, give up on those still queued: their trials count as not logged (for
        :meth:`warning` and the back-fill), and one line says what was not sent."""
        if self._worker is None:  # none, or it ended with the queue empty
            return None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        made = threading.Event()
        self._hurry.set()
        try:
            self._put(_Call(None, made.set), timeout_s)
            if made.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
                return None
        except queue.Full:
            pass
        finally:
            self._hurry.clear()
        return self._give_up(timeout_s or 0.0)

    def _put(self, item: _Epoch | _Call, timeout_s: float | None = None) -> None:
        with self._lock:  # a worker that finds the queue empty under this lock may end: put under it
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name=f"pdsweep-mlflow {self.ids.parent_run_id}",
                                                daemon=True)
                self._worker.start()
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                pass
        self._queue.put(item, timeout=timeout_s)  # the queue is full (so its worker goes on): wait for room

    def _give_up(self, timeout_s: float) -> str | None:
        with self._lock:
            left = [*self._making, *self._taken]  # what is being made may still go through: counted as not
            self._taken.clear()
            while True:
                try:
                    left.append(self._queue.get_nowait())
                except queue.Empty:
                    break
        trials = {item.trial_id for item in left if item.trial_id is not None}
        if not trials:
            return None
        self.unlogged |= trials
        self.error = self.error or f"not sent within {timeout_s:g} s"
        named = [f"{len(trials - {PARENT})} trial(s)"] if trials - {PARENT} else []
        named += ["the sweep's parent run"] if PARENT in trials else []
        return (f"warning: MLflow: {sum(item.trial_id is not None for item in left)} queued call(s) for "
                f"{' and '.join(named)} not sent within {timeout_s:g} s; results.parquet is complete; back-fill with "
                "`pdsweep report --to-mlflow NAME`.")

    # The worker's side.

    def _work(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # idle: the next call starts another worker
                        self._worker = None
                        return
                continue
            if self._queue.qsize() < TAKEN_AT_ONCE:
                self._hurry.wait(LINGER_S)
            with self._lock:
                self._taken.append(first)
                while len(self._taken) < TAKEN_AT_ONCE:
                    try:
                        self._taken.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
            while calls := self._next():
                for call in calls:
                    self._make(call)

    def _next(self) -> list[_Call]:
        """The next calls to make: one call, or the epochs that come one after another, as one
        call per trial (its epochs in order)."""
        with self._lock:
            if self._taken and isinstance(call := self._taken[0], _Call):
                self._taken.popleft()
                self._making = [call]
                return self._making
            epochs: dict[str, list[_Epoch]] = {}
            while self._taken and isinstance(epoch := self._taken[0], _Epoch):
                self._taken.popleft()
                epochs.setdefault(epoch.trial_id, []).append(epoch)
            self._making = [_Call(trial_id, partial(Tracker.epochs, self, trial_id, group[0].run_name, group[0].tags,
                                                    [e.result for e in group]))
                            for trial_id, group in epochs.items()]
            return self._making

    def _make(self, call: _Call) -> None:
        try:
            call.action()
        except Exception as error:  # not the store's (the breaker takes those): the sweep goes on, and says so
            if call.trial_id is not None:
                self.unlogged.add(call.trial_id)
                self.error = self.error or _first_line(error)
            log.debug("a queued MLflow call failed", exc_info=True)
