"""SIGTERM handled as Ctrl-C, so that ``kill PID``, a container stop or a service manager stop
a pdsweep command the way Ctrl-C does: what it started is stopped, what it wrote is closed,
and it says in one line that it was interrupted and how to continue."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


def _as_sigint(signum: int, frame: Any) -> None:
    signal.raise_signal(signal.SIGINT)  # whatever handles Ctrl-C now: Ray Tune's graceful stop, or KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM raises SIGINT in this process. Enter it again after a library
    installs its own SIGTERM handler (``ray.init`` installs one that dumps a C++ stack)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _as_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
