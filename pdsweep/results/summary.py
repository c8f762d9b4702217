"""The lines a person reads while a sweep runs and when it ends: one per trial, one per tier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pdsweep.errors import PdsweepError
from pdsweep.objective import Objective
from pdsweep.results import report
from pdsweep.results.rows import FAILED, ResultRow


def progress_line(row: ResultRow, rows: Sequence[ResultRow]) -> str:
    """One finished trial, with the best validation value of the sweep's objective in its tier so far."""
    o = Objective(row.metric or "accuracy")  # type: ignore[arg-type]
    best = o.best(r.best_val(o.metric) for r in rows if r.budget_gflops == row.budget_gflops)
    name = "" if o.metric == "accuracy" else f"{o.label} "
    if row.status in FAILED:
        outcome = f"{row.status}: {row.error}"
        if row.status == "oom":
            outcome += f" (predicted {row.predicted_memory_gb:.3g} GB)"
    elif row.status == "interrupted":
        outcome = f"interrupted at epoch {row.epochs_run}/{row.epochs_planned}"
    else:
        outcome = f"val {name}{o.format(row.best_val(o.metric))}"
        if row.status == "completed":
            outcome += f", test {o.format(row.test(o.metric))}"
        else:
            outcome += f", stopped at epoch {row.epochs_run}/{row.epochs_planned}"
    phase = f" (repeat, seed {row.seed})" if row.phase == "repeat" else ""
    return (f"[{len(rows)}] tier {row.budget_gflops:g} GF | {row.config.name}{phase} | {outcome} | "
            f"{row.train_gflops:.4g} GF | {row.wall_seconds:.0f} s | best in tier {o.format(best)}")


def report_or_none(name: str, rows: Sequence[ResultRow], **options: Any) -> report.Report | None:
    """The sweep's report (``options``: :func:`report.build`'s); None until a trial has finished."""
    try:
        return report.build(name, rows, **options)
    except PdsweepError:
        return None


def summary_lines(name: str, trials: int, results_path: str, built: report.Report | None) -> list[str]:
    """The end of a sweep: where its results are, and each tier's best config."""
    lines = [f"sweep {name!r}: {trials} trials; results in {results_path}"]
    if built is None:
        return lines + ["  no finished trial"]
    for tier in built.tiers:
        best = tier.best
        if best is None:
            lines.append(f"  tier {tier.budget_gflops:g} GFLOPs: no finished trial")
            continue
        seeds = f" over {best.seeds} seeds" if best.seeds > 1 else ""
        o = tier.objective
        test = f", test {o.format(best.test)}" if best.test is not None else ", no test (stopped early)"
        if best.test_interval:
            test += f" (95% interval {o.format(best.test_interval[0])} to {o.format(best.test_interval[1])})"
        spread = f" +- {o.format(best.spread)}" if best.spread is not None else ""
        interval = f" (95% interval {o.format(best.interval[0])} to {o.format(best.interval[1])})" if best.interval else ""
        margin = f"; {o.difference(tier.margin)} over {tier.runner_up.config.name}, {_verdict(tier)}" if tier.runner_up else ""  # type: ignore[arg-type]
        name = "" if o.metric == "accuracy" else f"{o.label} "
        lines.append(
            f"  tier {tier.budget_gflops:g} GFLOPs: best {best.config.name}: val {name}{o.format(best.metric)}{spread}{seeds}{interval}"
            f"{test}; {best.train_gflops:.4g} train GFLOPs, {best.memory_gb:.3g} GB{margin}"
        )
    if built.compute is not None:
        lines += [f"  compute: {line}" for line in built.compute.lines()]
    return lines


def _verdict(tier: report.TierReport) -> str:
    return {"separated": "separated", "tied": "tied within noise"}.get(tier.verdict, "single seed: no verdict")
