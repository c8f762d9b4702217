"""What ended a training run before its end, named the same way everywhere it is recorded.

A run that fails says why in one of three words, which become the trial's status in
``results.parquet``, MLflow and the progress line:

- ``diverged``: the training loss went non-finite (:class:`Diverged`, raised at the first bad
  step, so no further step or epoch is spent on it);
- ``oom``: an allocation failed (CUDA's ``OutOfMemoryError``, the CPU allocator's "can't
  allocate memory", Python's ``MemoryError``): the config does not fit where it ran;
- ``error``: anything else, an error in the trial's own code or data.

All three are deterministic: running the same config again fails the same way, so a sweep
records them and goes on instead of retrying (:func:`fault_status`). This module imports no
torch: it classifies what the loop raised.
"""

from __future__ import annotations

import re

import errno
from typing import Literal

from pdsweep.training.metrics import EpochMetrics

FaultStatus = Literal["oom", "diverged", "error"]

# How the allocators say it: torch's CUDA and CPU allocators, and a process past RLIMIT_AS.
_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate")


class Diverged(ArithmeticError):
    """The training loss became non-finite; ``history``: the epochs completed before it."""

    def __init__(self, loss: float, epoch: int, step: int, history: tuple[EpochMetrics, ...] = ()) -> None:
        super().__init__(f"loss {loss} at epoch {epoch}, step {step}; "
                         "lower the learning rate or set training.grad_clip")
        self.loss, self.epoch, self.step, self.history = loss, epoch, step, history


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a failed allocation."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError) or type(current).__name__ in ("OutOfMemoryError", "OutOfMemoryError_"):
            return True
        if isinstance(current, OSError) and current.errno == errno.ENOMEM:  # mmap, fork
            return True
        if isinstance(current, RuntimeError) and any(text in str(current).lower() for text in _OOM_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False


def killed_for_memory(error_text: str | None) -> bool:
    """Whether Ray's error for a lost worker says its memory monitor killed it."""
    return bool(error_text) and any(text in error_text for text in ("OutOfMemoryError", "low on memory"))


def memory_kill(error: BaseException) -> bool:
    """Whether a trial's failure, as Ray Tune sees it, is its worker killed by Ray's memory monitor,
    alone: where the monitor killed several workers at once (Ray >= 2.56 may), the others may have
    been bystanders of whichever held the memory, so that is not taken as this trial's own."""
    text = f"{type(error).__name__}: {error}"
    several = re.search(r"(\d+) worker\(s\) were killed", text)
    return killed_for_memory(text) and (several is None or int(several.group(1)) == 1)


def fault_status(error: BaseException) -> FaultStatus:
    if isinstance(error, Diverged):
        return "diverged"
    return "oom" if is_out_of_memory(error) else "error"


def fault_line(error: BaseException, limit: int = 500) -> str:
    """The error in one line. An allocator's message is cut to the sentence that says how much
    it tried to allocate (CUDA's goes on with advice on fragmentation, the CPU's starts with
    the line of C++ that failed)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    if isinstance(error, Diverged):
        return text[:limit]
    if is_out_of_memory(error):
        sentences = [part for part in text.split(". ") if any(word in part.lower() for word in ("allocate", "out of memory"))]
        text = ". ".join(sentences[:2]).rstrip(".") if sentences else text
    return f"{type(error).__name__}: {text}"[:limit]
