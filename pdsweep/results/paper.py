"""The paper layout of a recipe's sweep: each listed config's cost and accuracy, side by side.

A recipe (a space with ``configs``, :mod:`pdsweep.space.listed`) reproduces one finding of the
PatchDropout study: a few configs compared at about equal cost. ``pdsweep report NAME --layout
paper`` prints its table as the study does: one row per listed config, grouped, with train
GFLOPs, memory, the metric (the sweep's objective: mean best validation value over seeds), its
test value, and the
difference against its group's baseline (the group's full-token config, else its first), with
Welch's 95% interval where both sides have two seeds or more. Test-time robustness curves (a
trained model evaluated with patches dropped, ``training.test_keep_rates``) are drawn per config.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdsweep.results.figures import output_dir, pyplot, save, write_text
from pdsweep.objective import Objective
from pdsweep.results.report import Score, metric, scores_by_name, search_metric, welch
from pdsweep.results.rows import ResultRow
from pdsweep.space import ListedConfig, group_baselines


@dataclass(frozen=True)
class PaperRow:
    """One listed config in the table; ``score`` None: no trial of it has a result yet."""

    entry: ListedConfig
    score: Score | None
    baseline: bool  # the row its group's differences are taken against
    delta: float | None  # metric - the baseline's metric (a loss: < 0 is better)
    delta_interval: tuple[float, float] | None  # Welch's 95% interval of that difference
    robustness: dict[float, float] = field(default_factory=dict)  # test-time keep rate -> mean test accuracy

    def to_dict(self) -> dict[str, Any]:
        score = self.score
        return {
            "group": self.entry.group, "label": self.entry.label, "config": self.entry.config.name,
            "baseline": self.baseline,
            "train_gflops": score.train_gflops if score else None, "memory_gb": score.memory_gb if score else None,
            "metric": score.metric if score else None, "spread": score.spread if score else None,
            "seeds": score.seeds if score else 0, "test_accuracy": score.test_accuracy if score else None,
            "test": score.test if score else None,
            "complete": score.complete if score else None,
            "delta": self.delta, "delta_interval": list(self.delta_interval) if self.delta_interval else None,
            "robustness": {f"{rate:g}": accuracy for rate, accuracy in self.robustness.items()},
        }


@dataclass(frozen=True)
class PaperTable:
    """A recipe's table: its rows in the order the recipe lists them."""

    sweep: str
    recipe: str
    description: str
    rows: tuple[PaperRow, ...]
    objective: Objective = Objective()
    search_metric: str = "accuracy"

    def to_json(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "recipe": self.recipe, "description": self.description,
                "layout": "paper", "metric": self.objective.metric, "search_metric": self.search_metric,
                "rows": [row.to_dict() for row in self.rows]}


def paper_table(sweep: str, recipe: str, description: str, listed: Sequence[ListedConfig],
                rows: Sequence[ResultRow], objective: Objective | None = None) -> PaperTable:
    """The table of a recipe's sweep: each listed config matched with its trials by config name,
    by ``objective`` (default: the one the sweep ran under)."""
    searched = search_metric(rows)
    objective = objective or Objective(searched)  # type: ignore[arg-type]
    scored = [r for r in rows if metric(r, objective) is not None and r.status in ("completed", "stopped")]
    scores = scores_by_name(scored, objective)
    by_name: dict[str, list[ResultRow]] = {}
    for row in scored:
        by_name.setdefault(row.config.name, []).append(row)
    baselines = group_baselines(tuple(listed))
    table = []
    for entry in listed:
        name = entry.config.name
        score, base = scores.get(name), baselines[entry.group]
        base_score = scores.get(base.config.name)
        is_base = base is entry
        delta = interval = None
        if score is not None and base_score is not None and not is_base:
            delta = score.metric - base_score.metric
            interval = welch(score.values, base_score.values)
        table.append(PaperRow(entry, score, is_base, delta, interval, _robustness(by_name.get(name, []))))
    return PaperTable(sweep, recipe, description, tuple(table), objective, searched)


def _robustness(rows: list[ResultRow]) -> dict[float, float]:
    """Mean test accuracy at each test-time keep rate, over the seeds that ran to the end."""
    points: dict[float, list[float]] = {}
    for row in rows:
        if row.status == "completed":
            for point in row.robustness or ():
                points.setdefault(float(point.keep_rate), []).append(float(point.accuracy))
    return {rate: statistics.fmean(values) for rate, values in sorted(points.items(), reverse=True)}


def _percent(value: float | None, signed: bool = False, objective: Objective = Objective()) -> str:
    """A value of ``objective`` (a rate as a percentage); a difference of two (``signed``): in
    percentage points for a rate."""
    if value is None:
        return "-"
    if objective.metric not in ("accuracy", "balanced_accuracy"):
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    return f"{100 * value:+.1f} pt" if signed else f"{value:.1%}"


def paper_markdown(table: PaperTable) -> str:
    """The table as Markdown, one block per group, and the robustness curves as a table."""
    o = table.objective
    lines = [f"# Recipe `{table.recipe}`: sweep `{table.sweep}`", ""]
    if table.description:
        lines += [table.description.strip(), ""]
    if o.metric != "accuracy" or table.search_metric != o.metric:
        lines += [f"Metric: validation {o.label}" + (f" (the search ran under {Objective(table.search_metric).label})"  # type: ignore[arg-type]
                                                    if table.search_metric != o.metric else "") + ".", ""]
    lines += ["| group | config | train GFLOPs | memory GB | val (mean) | seeds | test | vs baseline | 95% interval |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in table.rows:
        score, entry = row.score, row.entry
        title = f"{entry.title} (baseline)" if row.baseline else entry.title
        interval = (f"[{_percent(row.delta_interval[0], True, o)}, {_percent(row.delta_interval[1], True, o)}]"
                    if row.delta_interval else "-")
        spread = f" ± {_percent(score.spread, objective=o)}" if score and score.spread is not None else ""
        spread += "" if not score or score.complete else " (stopped early)"  # a partial accuracy, not comparable
        lines.append(
            f"| {entry.group or '-'} | {title} | {score.train_gflops:.4g} | {score.memory_gb:.3g} | "
            f"{_percent(score.metric, objective=o)}{spread} | {score.seeds} | {_percent(score.test, objective=o)} | "
            f"{'-' if row.baseline else _percent(row.delta, True, o)} | {interval} |"
            if score else f"| {entry.group or '-'} | {title} | - | - | not trained | 0 | - | - | - |"
        )
    curves = [row for row in table.rows if len(row.robustness) > 1]
    if curves:
        rates = sorted({rate for row in curves for rate in row.robustness}, reverse=True)
        lines += ["", "Test accuracy with patches dropped at test time (test-time keep rate):", "",
                  "| config | " + " | ".join(f"{rate:g}" for rate in rates) + " |",
                  "| --- |" + " --- |" * len(rates)]
        for row in curves:
            lines.append(f"| {row.entry.title} | " + " | ".join(_percent(row.robustness.get(r)) for r in rates) + " |")
    return "\n".join(lines) + "\n"


def plot_robustness(table: PaperTable, path: Path) -> Path | None:
    """Test accuracy against the test-time keep rate, one curve per config; None if no config
    has a curve (a robustness curve needs two keep rates or more)."""
    curves = [row for row in table.rows if len(row.robustness) > 1]
    if not curves:
        return None
    import matplotlib

    figure, axes = pyplot().subplots(figsize=(7, 4.5), dpi=120)
    for row in curves:
        rates = sorted(row.robustness)
        axes.plot(rates, [row.robustness[r] for r in rates], marker="o", label=row.entry.title)
    axes.invert_xaxis()  # from every patch kept to few
    axes.set_xlabel("test-time keep rate")
    axes.set_ylabel("test accuracy")
    axes.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    axes.set_title(f"recipe '{table.recipe}': robustness to dropped patches")
    return save(figure, axes, path, grid_which="major")


def write_paper(table: PaperTable, out_dir: Path) -> list[Path]:
    """``paper.md`` and, where there are curves, ``robustness.png`` in ``out_dir``."""
    output_dir(out_dir)
    png = plot_robustness(table, out_dir / "robustness.png")
    md = out_dir / "paper.md"
    text = paper_markdown(table)
    write_text(md, text + ("\n![robustness curves](robustness.png)\n" if png else ""))
    return [md, *([png] if png else [])]
