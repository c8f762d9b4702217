"""The lease of a sweep at a storage URI: on S3 (a real moto server on localhost) two drivers
racing for one sweep never both win it, and a driver whose lease was taken over stops."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from pdsweep.errors import PdsweepError
from pdsweep.sweep import lock as lock_module
from pdsweep.sweep.lease import LEASE_FILE, Lease, LeaseConflict, LeaseFile
from pdsweep.sweep.lock import Holder, SweepLock
from pdsweep.sweep.store import SweepStore

BUCKET = "sweeps"


@dataclass(frozen=True)
class S3:
    endpoint: str  # host:port
    client: Any

    def runs_dir(self, bucket: str = BUCKET) -> str:
        return f"s3://{bucket}/runs?endpoint_override={self.endpoint}&scheme=http"

    def lease(self, name: str) -> dict[str, Any]:
        """The lease of sweep ``name`` as stored; empty if there is none."""
        try:
            return dict(json.loads(self.client.get_object(Bucket=BUCKET, Key=f"runs/{name}/{LEASE_FILE}")["Body"].read()))
        except self.client.exceptions.NoSuchKey:
            return {}

    def put_lease(self, name: str, holder: Holder) -> None:
        """Another driver's write, unconditional."""
        self.client.put_object(Bucket=BUCKET, Key=f"runs/{name}/{LEASE_FILE}", Body=json.dumps(asdict(holder)).encode())


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """A moto S3 server on a free port of 127.0.0.1, with one bucket; no real AWS settings leak in."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_CONFIG_FILE", os.devnull)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # S3 decides a conditional write atomically; moto checks the precondition and then writes,
        # in the request's thread. One request at a time makes it decide as S3 does.
        moto = DomainDispatcherApplication(create_backend_app)
        one_at_a_time = threading.Lock()

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            with one_at_a_time:
                return list(moto(environ, start_response))

        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        endpoint = f"127.0.0.1:{server.server_port}"
        client = boto3.session.Session().client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        try:
            yield S3(endpoint, client)
        finally:
            server.shutdown()
            thread.join()


@dataclass
class Stops:
    """The SIGINTs a driver sent itself (recorded, not delivered), with a fast heartbeat."""

    signals: list[tuple[int, int]]
    sent: threading.Event


@pytest.fixture
def stops(monkeypatch: pytest.MonkeyPatch) -> Stops:
    monkeypatch.setattr(lock_module, "HEARTBEAT_S", 0.05)
    recorded = Stops([], threading.Event())
    real_kill = os.kill

    def kill(pid: int, signum: int) -> None:
        if signum != signal.SIGINT:
            return real_kill(pid, signum)
        recorded.signals.append((pid, signum))
        recorded.sent.set()

    monkeypatch.setattr(os, "kill", kill)
    return recorded


def driver(runs_dir: str, name: str, host: str) -> tuple[SweepLock, list[str]]:
    """A driver of sweep ``name`` on ``host`` (another host: its liveness is its lease's)."""
    said: list[str] = []
    sweep_lock = SweepLock(SweepStore(runs_dir, name), said.append)
    sweep_lock.holder = replace(sweep_lock.holder, host=host)
    return sweep_lock, said


def race(drivers: list[SweepLock]) -> list[str]:
    """Start ``drivers`` together; what each got: ``won`` or its refusal."""
    start = threading.Barrier(len(drivers))
    results = [""] * len(drivers)

    def take(index: int) -> None:
        start.wait()
        try:
            drivers[index].acquire()
            results[index] = "won"
        except PdsweepError as refusal:
            results[index] = str(refusal)

    threads = [threading.Thread(target=take, args=(index,)) for index in range(len(drivers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def gone_holder() -> Holder:
    """A driver on another host that stopped renewing its lease an hour ago."""
    return Holder("gone-host", 7, "2026-01-01T00:00:00+00:00", time.time() - 3600)


def test_a_lease_on_s3_names_its_holder_and_release_removes_it(s3: S3) -> None:
    name = f"s-{uuid.uuid4().hex[:8]}"
    first, _ = driver(s3.runs_dir(), name, "host-a")
    with first:
        lease = s3.lease(name)
        assert (lease["host"], lease["pid"], lease["since"]) == ("host-a", os.getpid(), first.holder.since)
        second, _ = driver(s3.runs_dir(), name, "host-b")
        with pytest.raises(PdsweepError, match=rf"sweep '{name}' is being driven by pid {os.getpid()} on host-a .*lapses"):
            second.acquire()
    assert s3.lease(name) == {}


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_two_drivers_racing_for_a_lease_never_both_win(s3: S3, stale: bool) -> None:
    for _ in range(50):
        name = f"s-{uuid.uuid4().hex[:8]}"
        if stale:
            s3.put_lease(name, gone_holder())
        (a, said_a), (b, said_b) = driver(s3.runs_dir(), name, "host-a"), driver(s3.runs_dir(), name, "host-b")
        results = race([a, b])
        assert results.count("won") == 1, results
        winner, loser = (a, b) if results[0] == "won" else (b, a)
        assert f"on {winner.holder.host} since" in results[1 - results.index("won")]
        assert s3.lease(name)["host"] == winner.holder.host
        if stale:
            said = said_a if winner is a else said_b
            assert len(said) == 1 and "taking over the lease" in said[0] and "gone-host" in said[0]
        winner.release()
        loser.release()  # a loser's release leaves nothing behind, and removes nothing
        assert s3.lease(name) == {}


class _Around:
    """A sweep's real lease file, with one step changed by a subclass."""

    def __init__(self, lease: LeaseFile) -> None:
        self.lease = lease
        self.conditional, self.extra, self.where = lease.conditional, lease.extra, lease.where

    def read(self) -> Lease | None:
        return self.lease.read()

    def write(self, text: str, replaces: str | None) -> str:
        return self.lease.write(text, replaces)

    def delete(self) -> None:
        self.lease.delete()


class _ReadTogether(_Around):
    """Both drivers read the lease before either writes; the ``late`` one writes only after
    ``first_done`` (the other driver holds the lease), as a slow or retried request would."""

    def __init__(self, lease: LeaseFile, both_read: threading.Barrier, first_done: threading.Event, late: bool) -> None:
        super().__init__(lease)
        self.both_read, self.first_done, self.late = both_read, first_done, late
        self.reads = 0

    def read(self) -> Lease | None:
        found = self.lease.read()
        self.reads += 1
        if self.reads == 1:
            self.both_read.wait(timeout=10)
        return found

    def write(self, text: str, replaces: str | None) -> str:
        if self.late:
            assert self.first_done.wait(timeout=10)
            time.sleep(0.3)  # longer than a read-back waits
        return self.lease.write(text, replaces)


class _AnswerLost(_Around):
    """The first write lands, but its answer is lost and the client's retry is refused."""

    def __init__(self, lease: LeaseFile) -> None:
        super().__init__(lease)
        self.writes = 0

    def write(self, text: str, replaces: str | None) -> str:
        version = self.lease.write(text, replaces)
        self.writes += 1
        if self.writes == 1:
            raise LeaseConflict("PreconditionFailed")
        return version


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_a_driver_whose_write_comes_late_loses_to_the_one_that_took_the_lease(
        s3: S3, stale: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"s-{uuid.uuid4().hex[:8]}"
    if stale:
        s3.put_lease(name, gone_holder())
    both_read, first_done = threading.Barrier(2), threading.Event()
    real_open = lock_module.open_lease
    monkeypatch.setattr(lock_module, "open_lease", lambda store: _ReadTogether(
        real_open(store), both_read, first_done, late=threading.current_thread() is not threading.main_thread()))
    first, _ = driver(s3.runs_dir(), name, "host-a")
    late, _ = driver(s3.runs_dir(), name, "host-b")
    results: list[str] = []
    thread = threading.Thread(target=lambda: results.extend(race([late])))
    thread.start()
    first.acquire()  # on time, once the late driver has read the lease too
    first_done.set()
    thread.join(timeout=30)
    try:
        assert results and results[0] != "won", "two drivers hold the lease"
        assert "is being driven by" in results[0] and "on host-a since" in results[0]
        assert s3.lease(name)["host"] == "host-a"
    finally:
        first.release()


def test_a_driver_whose_first_write_landed_unanswered_holds_the_lease(
        s3: S3, stops: Stops, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = lock_module.open_lease
    monkeypatch.setattr(lock_module, "open_lease", lambda store: _AnswerLost(real_open(store)))
    name = f"s-{uuid.uuid4().hex[:8]}"
    holder, said = driver(s3.runs_dir(), name, "host-a")
    holder.acquire()
    try:
        assert s3.lease(name)["host"] == "host-a"
        first = s3.lease(name)["renewed"]
        time.sleep(0.3)  # renewals go on from the version that landed
        assert s3.lease(name)["renewed"] > first and said == [] and stops.signals == []
    finally:
        holder.release()
    assert s3.lease(name) == {}


RACER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from pdsweep.errors import PdsweepError
    from pdsweep.sweep import lock
    from pdsweep.sweep.lock import SweepLock
    from pdsweep.sweep.store import SweepStore

    runs_dir, gates = sys.argv[1], Path(sys.argv[2])
    real_open = lock.open_lease

    class BothRead:  # the racers' first reads both come before either's write
        def __init__(self, lease, gate):
            self.lease, self.gate, self.reads = lease, gate, 0
            self.conditional, self.extra, self.where = lease.conditional, lease.extra, lease.where

        def read(self):
            found = self.lease.read()
            self.reads += 1
            if self.reads == 1:
                (self.gate / str(os.getpid())).touch()
                deadline = time.monotonic() + 10
                while len(list(self.gate.iterdir())) < 2 and time.monotonic() < deadline:
                    time.sleep(0.001)
            return found

        def write(self, text, replaces):
            return self.lease.write(text, replaces)

        def delete(self):
            self.lease.delete()

    lock.open_lease = lambda store: BothRead(real_open(store), gates / store.name)
    real_open(SweepStore(runs_dir, "warm-up"))  # the filesystem and the client, ready before the start
    print("ready", flush=True)
    held = None
    for line in sys.stdin:  # "take NAME" (all racers at once), then "release"
        if line.startswith("take "):
            sweep_lock = SweepLock(SweepStore(runs_dir, line.split()[1]), lambda said: None)
            try:
                sweep_lock.acquire()
                held = sweep_lock
                print("won", flush=True)
            except PdsweepError as refusal:
                print(refusal, flush=True)
        else:
            if held is not None:
                held.release()
                held = None
            print("released", flush=True)
""")


def test_two_driver_processes_that_both_read_the_lease_free_never_both_win(s3: S3, tmp_path: Path) -> None:
    racers = [subprocess.Popen([sys.executable, "-c", RACER, s3.runs_dir(), str(tmp_path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True) for _ in range(2)]

    def answers() -> list[str]:
        return [racer.stdout.readline().strip() for racer in racers if racer.stdout]

    def tell_all(command: str) -> list[str]:
        for racer in racers:
            if racer.stdin:
                racer.stdin.write(f"{command}\n")
                racer.stdin.flush()
        return answers()

    try:
        assert answers() == ["ready", "ready"]
        for _ in range(5):
            name = f"s-{uuid.uuid4().hex[:8]}"
            (tmp_path / name).mkdir()
            results = tell_all(f"take {name}")
            assert results.count("won") == 1, results
            winner = racers[results.index("won")]
            assert f"being driven by pid {winner.pid} on " in results[1 - results.index("won")]
            assert s3.lease(name)["pid"] == winner.pid
            assert tell_all("release") == ["released", "released"]
            assert s3.lease(name) == {}
    finally:
        for racer in racers:
            racer.communicate(timeout=30)
    assert [racer.returncode for racer in racers] == [0, 0]


def test_a_heartbeat_renews_its_lease_and_stops_its_driver_once_another_took_it_over(s3: S3, stops: Stops) -> None:
    name = f"s-{uuid.uuid4().hex[:8]}"
    holder, said = driver(s3.runs_dir(), name, "host-a")
    holder.acquire()
    try:
        first = s3.lease(name)["renewed"]
        deadline = time.monotonic() + 5
        while s3.lease(name)["renewed"] == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert s3.lease(name)["renewed"] > first, "the heartbeat did not renew the lease"
        time.sleep(0.2)  # several renewals, each replacing the version the last one wrote
        assert stops.signals == [] and said == []

        other = Holder("host-b", 99, "2026-01-01T00:00:00+00:00", time.time())
        s3.put_lease(name, other)  # storage was out past the lease, and another driver took the sweep
        assert stops.sent.wait(timeout=30), "the driver went on after losing its lease"
        assert stops.signals == [(os.getpid(), signal.SIGINT)]
        assert said == [f"the lease of sweep {name!r} was taken over by {other}; stopping."]
    finally:
        holder.release()
    assert s3.lease(name)["host"] == "host-b"  # not this driver's to remove


def test_a_lease_in_a_missing_bucket_is_a_one_line_error(s3: S3) -> None:
    holder, _ = driver(s3.runs_dir("no-such-bucket"), "s", "host-a")
    with pytest.raises(PdsweepError, match=r"cannot take the lease of sweep 's' at s3://no-such-bucket/runs/s/driver.lease "
                                           r"\(NoSuchBucket: .*\); check the runs dir's endpoint") as refusal:
        holder.acquire()
    assert "\n" not in str(refusal.value)


def _check_read_back_lease(runs_dir: str, name: str, lease_text: Callable[[], str | None]) -> list[str]:
    """The lease written and read back: taken, refused to a second driver, removed on release."""
    first, said = driver(runs_dir, name, "host-a")
    first.acquire()
    try:
        assert json.loads(lease_text() or "{}")["host"] == "host-a"
        second, _ = driver(runs_dir, name, "host-b")
        with pytest.raises(PdsweepError, match=rf"sweep '{name}' is being driven by pid {os.getpid()} on host-a"):
            second.acquire()
    finally:
        first.release()
    assert lease_text() is None
    return said


def test_a_lease_in_a_file_uri_is_written_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "s" / LEASE_FILE
    said = _check_read_back_lease(f"file://{tmp_path / 'runs'}", "s", lambda: path.read_text() if path.exists() else None)
    assert said == []


def test_without_boto3_a_lease_on_s3_is_read_back_and_says_so(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` raises ImportError
    name = f"s-{uuid.uuid4().hex[:8]}"
    said = _check_read_back_lease(s3.runs_dir(), name, lambda: json.dumps(s3.lease(name)) if s3.lease(name) else None)
    assert len(said) == 1 and "pip install 'pdsweep[s3]'" in said[0]
