"""The compute ledger: what a trial spends, what a sweep planned, and the caps it ran under.

A trial's compute is its training FLOPs: ``train GFLOPs x 3 x training images x epochs run``
(forward plus backward is ~3 forwards, as in the pre-flight's estimate; the validation, test
and robustness passes are not counted). Its device-seconds are the seconds its trainable ran
on its worker (Tune's ``time_total_s``) times the devices it held: its GPU share where it held
one, else its CPUs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pdsweep.results.rows import ResultRow

CapName = Literal["max_tflop", "max_device_hours"]
FORWARD_BACKWARD = 3  # a training step costs ~3 forward passes (backward ~2x forward)


def trial_tflop(train_gflops: float, images: int, epochs: int) -> float:
    """Training TFLOPs of ``epochs`` epochs over ``images`` images at ``train_gflops`` per image."""
    return train_gflops * FORWARD_BACKWARD * images * epochs / 1e3


def held_devices(resources: Mapping[str, Any]) -> tuple[Literal["cpu", "gpu"], float]:
    """What a trial held, from Ray's assigned resources (``{"CPU": 1.0, "GPU": 0.25}``)."""
    gpus = float(resources.get("GPU") or 0)
    return ("gpu", gpus) if gpus > 0 else ("cpu", float(resources.get("CPU") or 1))


@dataclass(frozen=True)
class ComputeCap:
    """``--max-tflop`` and ``--max-device-hours``: no trial is issued that would pass either."""

    max_tflop: float | None = None
    max_device_hours: float | None = None

    @property
    def any(self) -> bool:
        return self.max_tflop is not None or self.max_device_hours is not None


@dataclass(frozen=True)
class ComputePlan:
    """What the pre-flight planned (in ``sweep.json``), and which cap, if any, stopped the sweep."""

    planned_tflop: float | None = None  # None: a sweep started before the ledger
    estimated_hours: float | None = None  # wall-clock, from a measured throughput; None: not measured
    stopped_by: CapName | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ComputePlan:
        return cls(values.get("planned_tflop"), values.get("estimated_hours"), values.get("stopped_by"))


@dataclass(frozen=True)
class ComputeLedger:
    """A sweep's compute as the report shows it: planned, spent (from the rows), the caps."""

    spent_tflop: float
    device_hours: float
    recorded: int  # rows that carry the ledger's columns (tables of older versions lack them)
    trials: int
    plan: ComputePlan | None = None
    cap: ComputeCap = ComputeCap()

    @classmethod
    def of(cls, rows: Iterable[ResultRow], plan: ComputePlan | None = None, cap: ComputeCap = ComputeCap()) -> ComputeLedger:
        rows = list(rows)
        recorded = [r for r in rows if r.spent_tflop is not None]
        return cls(sum(r.spent_tflop for r in recorded), sum(r.device_seconds or 0.0 for r in recorded) / 3600,
                   len(recorded), len(rows), plan, cap)

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "planned_tflop": plan.planned_tflop if plan else None,
            "estimated_hours": plan.estimated_hours if plan else None,
            "spent_tflop": self.spent_tflop, "device_hours": self.device_hours,
            "trials_recorded": self.recorded, "trials": self.trials,
            "max_tflop": self.cap.max_tflop, "max_device_hours": self.cap.max_device_hours,
            "stopped_by_cap": plan.stopped_by if plan else None,
        }

    def lines(self) -> list[str]:
        """Planned vs spent, the caps, and whether a cap stopped the sweep (one fact a line)."""
        plan = self.plan
        planned = f"planned ~{plan.planned_tflop:.4g} TFLOP" if plan and plan.planned_tflop is not None else "planned: not recorded"
        if plan and plan.estimated_hours is not None:
            planned += f" (~{format_hours(plan.estimated_hours)} estimated)"
        partial = f" ({self.recorded} of {self.trials} trials recorded)" if self.recorded < self.trials else ""
        lines = [f"{planned}; spent {self.spent_tflop:.4g} TFLOP, {self.device_hours:.3g} device-hours{partial}"]
        caps = [f"--max-tflop {self.cap.max_tflop:g}" if self.cap.max_tflop is not None else "",
                f"--max-device-hours {self.cap.max_device_hours:g}" if self.cap.max_device_hours is not None else ""]
        caps = [c for c in caps if c]
        if caps:
            stopped = plan.stopped_by if plan else None
            lines.append(f"caps {', '.join(caps)}: " + (
                f"the sweep stopped issuing trials at --{stopped.replace('_', '-')}" if stopped
                else "not reached"))
        return lines


def format_hours(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:.3g} days"
    if hours >= 1:
        return f"{hours:.3g} h"
    if hours >= 1 / 60:
        return f"{hours * 60:.2g} min"
    return f"{hours * 3600:.2g} s"
