"""One driver per sweep: ``run`` and ``resume`` hold the sweep's lock while they drive it.

Two drivers of one sweep would train the same trials twice and interleave their rows. A local
sweep folder is locked with ``flock`` on ``driver.lock``: the kernel releases the lock when
its holder dies, however it dies, so a lock whose holder is gone is simply taken (and the
holder it names is reported). A sweep at a storage URI has no such lock; its driver holds a
lease instead, ``driver.lease``, which it renews every :data:`HEARTBEAT_S` seconds: a lease
older than :data:`LEASE_S` belongs to a driver that is gone and is taken over.

On S3 and GCS (with boto3 or google-cloud-storage installed) every write of the lease names
the version it replaces (:mod:`pdsweep.sweep.lease`), so the store lets one of two racing
drivers win, and a heartbeat that finds its version replaced knows another driver took over.
Elsewhere (``file://``, other filesystems, S3 or GCS without that package) a driver writes the
lease, waits :data:`READ_BACK_S` and reads it back; the race window remains there: two drivers
that both read the lease free or stale before either wrote it both win if the second write
lands after the first driver's read-back (a slow or retried request).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import IO, Any

from pdsweep.errors import PdsweepError
from pdsweep.sweep.lease import Lease, LeaseConflict, LeaseFile, open_lease
from pdsweep.sweep.store import SweepStore

LOCK_FILE = "driver.lock"
HEARTBEAT_S = 10.0
LEASE_S = 60.0  # six missed heartbeats: the holder is gone
READ_BACK_S = 0.2  # a lease written blindly: how long before reading it back to see who won

Print = Callable[[str], None]


@dataclass(frozen=True)
class Holder:
    """Who drives a sweep: host, process, since when, and (a lease) when it last said so."""

    host: str
    pid: int
    since: str  # ISO 8601, UTC
    renewed: float = 0.0  # time.time() of the last heartbeat (leases only)

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), datetime.now(timezone.utc).isoformat(timespec="seconds"), time.time())

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            values = json.loads(text)
            return cls(str(values["host"]), int(values["pid"]), str(values["since"]), float(values.get("renewed", 0)))
        except (ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        """False if the holder is a process of this host that has ended; True if it runs, or
        runs elsewhere (its lease tells)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process
            return True
        return True

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since}"


class SweepLock:
    """The sweep's lock, held from :meth:`acquire` to :meth:`release` (or the process's end)."""

    def __init__(self, store: SweepStore, err: Print) -> None:
        self.store = store
        self.err = err
        self._file: IO[str] | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._lease_file: LeaseFile | None = None
        self.holder = Holder.me()

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        if self.store.remote:
            self._lease()
        else:
            self._flock()

    def release(self) -> None:
        if self._heartbeat is not None:
            self._stop.set()
            self._heartbeat.join(timeout=HEARTBEAT_S)
            self._heartbeat = None
            try:
                if self._lease_file is not None and _holder(self._lease_file.read()) == self.holder:
                    self._lease_file.delete()
            except OSError:  # the lease expires by itself
                pass
            self._lease_file = None
        if self._file is not None:
            import fcntl

            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def _refuse(self, holder: Holder | None, note: str = "") -> PdsweepError:
        who = str(holder) if holder else "another process"
        name = self.store.name
        return PdsweepError(
            f"sweep {name!r} is being driven by {who}{note}; wait for it to end, or stop it (Ctrl-C, or `kill` its "
            f"pid) and then `pdsweep resume {name}`."
        )

    # ---- a local folder: flock ------------------------------------------------------------

    def _flock(self) -> None:
        import fcntl

        self.store.local_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.store.local_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = Holder.parse(handle.read())
            handle.close()
            raise self._refuse(holder) from None
        handle.seek(0)
        previous = Holder.parse(handle.read())
        if previous is not None:  # written by a driver that died holding the lock
            self.err(f"taking over the lock of sweep {self.store.name!r} from {previous}, which is gone.")
        handle.seek(0)
        handle.truncate(0)
        handle.write(json.dumps(asdict(self.holder)))
        handle.flush()
        self._file = handle

    # ---- a storage URI: a lease with a heartbeat -------------------------------------------

    def _lease(self) -> None:
        lease = open_lease(self.store)
        if lease.extra is not None:
            self.err(f"note: the lease of sweep {self.store.name!r} is written and read back, so two drivers that start "
                     f"together could both drive it; `pip install 'pdsweep[{lease.extra}]'` closes that window.")
        try:
            found = lease.read()
            current = _holder(found)
            if current is not None and current.alive():
                age = time.time() - current.renewed
                if age < LEASE_S:
                    lapses = f" (its lease lapses {LEASE_S - age:.0f} s after its last heartbeat if it is gone)"
                    raise self._refuse(current, lapses)
            if current is not None:
                why = "which is gone" if not current.alive() else f"no heartbeat for {time.time() - current.renewed:.0f} s"
                self.err(f"taking over the lease of sweep {self.store.name!r} from {current}: {why}.")
            try:
                version = self._write_lease(lease, found.version if found else None)
            except LeaseConflict:  # another driver wrote it since it was read
                found = lease.read()
                if found is None or not self._mine(_holder(found)):
                    raise self._refuse(_holder(found)) from None
                version = found.version  # this write landed, its answer was lost, and the client's retry refused
            if not lease.conditional:
                time.sleep(READ_BACK_S)  # two drivers that raced: the later write wins, the earlier one sees it
                winner = _holder(lease.read())
                if winner != self.holder:
                    raise self._refuse(winner)
        except OSError as error:
            raise PdsweepError(f"cannot take the lease of sweep {self.store.name!r} at {lease.where} ({error}); check the "
                               "runs dir's endpoint, credentials and permissions, and try again.") from None
        self._lease_file = lease
        self._heartbeat = threading.Thread(target=self._beat, args=(lease, version), name="pdsweep-lease", daemon=True)
        self._heartbeat.start()

    def _write_lease(self, lease: LeaseFile, replaces: str | None) -> str:
        self.holder = Holder(self.holder.host, self.holder.pid, self.holder.since, time.time())
        return lease.write(json.dumps(asdict(self.holder)), replaces)

    def _mine(self, holder: Holder | None) -> bool:
        """Whether ``holder`` is this driver, renewed at any time."""
        return holder is not None and (holder.host, holder.pid, holder.since) == (
            self.holder.host, self.holder.pid, self.holder.since)

    def _beat(self, lease: LeaseFile, version: str) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if not lease.conditional:
                    current = _holder(lease.read())
                    if current is not None and not self._mine(current):
                        self._taken_over(current)
                        return
                try:
                    version = self._write_lease(lease, version)
                except LeaseConflict:
                    found = lease.read()
                    if found is None or not self._mine(_holder(found)):
                        self._taken_over(_holder(found))
                        return
                    version = found.version  # a renewal that landed, whose answer was lost
            except Exception:  # storage blipped: the next beat tries again, well within LEASE_S
                continue

    def _taken_over(self, holder: Holder | None) -> None:
        # Storage was out for longer than the lease and another driver took the sweep over:
        # this one stops (as on Ctrl-C) rather than drive it twice.
        self.err(f"the lease of sweep {self.store.name!r} was taken over by {holder or 'another driver'}; stopping.")
        os.kill(os.getpid(), signal.SIGINT)


def _holder(found: Lease | None) -> Holder | None:
    return Holder.parse(found.text) if found is not None else None
