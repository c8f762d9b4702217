"""What ``pdsweep report`` writes of a :class:`~pdsweep.results.report.Report`: ``report.md``
(the tiers' best configs with their test value and interval, per-class recall, the top configs
with their intervals over seeds and the verdicts, pretrained vs random, compute, the Pareto
frontiers, failed trials), ``report.png`` (every trial against its training cost), and the
side-by-side comparison of several sweeps. Every value is shown in the report's objective."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pdsweep.objective import Objective
from pdsweep.results.figures import output_dir, pyplot, save, write_text
from pdsweep.results.report import CONFIDENCE, RESAMPLES, Report, TierReport, metric



def _interval(interval: tuple[float, float] | None, signed: bool = False, objective: Objective = Objective(),
              missing: str = "no interval (one seed)") -> str:
    if interval is None:
        return missing
    low, high = interval
    if objective.metric in ("accuracy", "balanced_accuracy"):
        return f"[{low:+.1%}, {high:+.1%}]" if signed else f"[{low:.1%}, {high:.1%}]"
    return f"[{low:+.3f}, {high:+.3f}]" if signed else f"[{low:.3f}, {high:.3f}]"


def verdict_line(tier: TierReport) -> str:
    """The winner against the runner-up, in words: separated, tied within noise, or no verdict."""
    best, runner = tier.best, tier.runner_up
    if best is None or runner is None:
        return "no runner-up to compare with"
    if tier.difference is None:
        return f"single seed, no verdict against `{runner.config.name}` (run with --repeats 2 or more)"
    words = "separated from" if tier.verdict == "separated" else "tied within noise with"
    better = " (lower loss)" if tier.objective.minimised else ""
    return (f"{words} `{runner.config.name}`: difference {tier.objective.difference(tier.margin or 0.0)}{better}, "
            f"{CONFIDENCE:.0%} interval {_interval(tier.difference, signed=True, objective=tier.objective)}")


def markdown(report: Report) -> str:
    o = report.objective
    name = f"validation {o.label}"
    lines = [f"# Sweep `{report.sweep}`", "", f"{len(report.rows)} trials. Metric: best {name} "
             "(mean ± standard deviation over seeds where a config was repeated)"
             + ("; each group scored by the mean of its images' probabilities" if report.scored_by == "mean" else "")
             + ".", "",
             *[f"Note: {note}" for note in report.notes], *([""] if report.notes else []),
             *_split_lines(report),
             "## Best config per budget tier", "",
             f"Test: the best config's test {o.label} with its {CONFIDENCE:.0%} bootstrap interval over the test "
             f"{'groups' if report.scored_by == 'mean' else 'images'}.", "",
             "| budget GFLOPs | trials | best config | init | val | seeds | test | test interval | train GFLOPs | "
             "inference GFLOPs | memory GB | runner-up | margin | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for tier in report.tiers:
        best, runner = tier.best, tier.runner_up
        if best is None:
            lines.append(f"| {tier.budget_gflops:g} | {tier.trials} | no finished trial | | | | | | | | | | | |")
            continue
        lines.append(
            f"| {tier.budget_gflops:g} | {tier.trials} | `{best.config.name}` | {best.config.init} | {o.format(best.metric, best.spread)} | "
            f"{best.seeds} | {o.format(best.test)} | {_interval(best.test_interval, objective=o, missing='-')} | "
            f"{best.train_gflops:.4g} | {best.inference_gflops:.4g} | "
            f"{best.memory_gb:.3g} | {f'`{runner.config.name}` ({o.format(runner.metric, runner.spread)})' if runner else '-'} | "
            f"{o.difference(tier.margin) if tier.margin is not None else '-'} | {tier.verdict} |"
        )
    lines += _recall_lines(report)
    lines += ["", f"## Top configs per tier: mean and {CONFIDENCE:.0%} bootstrap interval over seeds", "",
              f"A config's interval is the percentile bootstrap of its mean ({RESAMPLES} resamples of its seeds). "
              "The winner is *separated* from the runner-up when the 95% Welch interval of the difference of "
              "their means lies above 0, *tied* within noise when it does not; with one seed there is no verdict.", "",
              "| budget GFLOPs | rank | config | val (mean) | interval | seeds | test |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for tier in report.tiers:
        lines += [f"| {tier.budget_gflops:g} | {rank} | `{score.config.name}` | {o.format(score.metric)} | "
                  f"{_interval(score.interval, objective=o)} | {score.seeds} | {o.format(score.test)} |"
                  for rank, score in enumerate(tier.top, 1)]
    lines.append("")
    lines += [f"- tier {tier.budget_gflops:g}: `{tier.best.config.name}`: {verdict_line(tier)}"
              for tier in report.tiers if tier.best is not None]
    if report.inits:
        lines += ["", "## pretrained vs random at equal cost", "",
                  "Each config trained from the space's weights and from random initialisation (same architecture "
                  f"and keep rate, so the same train GFLOPs), both to the last epoch. The interval is the {CONFIDENCE:.0%} "
                  "Welch interval of how much better pretrained is (with repeated seeds).", "",
                  "| budget GFLOPs | config | train GFLOPs | pretrained val | random val | difference | interval |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {p.budget_gflops:g} | `{p.random.config.name}` | {p.random.train_gflops:.4g} | "
                  f"{o.format(p.pretrained.metric, p.pretrained.spread)} | {o.format(p.random.metric, p.random.spread)} | "
                  f"{o.difference(p.margin)} | {_interval(p.difference, signed=True, objective=o)} |" for p in report.inits]
    if report.compute is not None:
        lines += ["", "## Compute", "", *(f"- {line}" for line in report.compute.lines())]
    for cost, rows in (("train", report.pareto_train), ("inference", report.pareto_inference)):
        lines += ["", f"## Pareto frontier: {name} vs {cost} GFLOPs", "",
                  f"| {cost} GFLOPs | val | config | tier |", "| --- | --- | --- | --- |"]
        lines += [f"| {getattr(r, f'{cost}_gflops'):.4g} | {o.format(metric(r, o))} | `{r.config.name}` | {r.budget_gflops:g} |"
                  for r in rows]
    if report.failed:
        lines += ["", "## Trials that failed", "",
                  "`oom`: the config did not fit in memory where it ran; `diverged`: its loss went non-finite; "
                  "`error`: see the message. None of them can be a tier's best.", "",
                  "| status | config | tier | predicted memory GB | epochs | error |", "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r.status} | `{r.config.name}` | {r.budget_gflops:g} | {r.predicted_memory_gb:.3g} | "
                  f"{r.epochs_run}/{r.epochs_planned} | {(r.error or '').replace('|', '/')} |" for r in report.failed]
    return "\n".join(lines) + "\n"


def _split_lines(report: Report) -> list[str]:
    """How many images (and groups) each split has, when the trials recorded it."""
    if not report.splits:
        return []
    cells = [f"{split} {images:,} images" + (f" in {groups:,} groups" if groups is not None else "")
             for split, images, groups in report.splits]
    return [f"Data: {'; '.join(cells)}.", ""]


def _recall_lines(report: Report) -> list[str]:
    """Each tier's best config's test recall per class (what a majority-class model hides)."""
    tiers = [t for t in report.tiers if t.best is not None and t.best.class_recall]
    if not tiers:
        return []
    names = [name for name, _ in tiers[0].best.class_recall]  # type: ignore[union-attr]
    lines = ["", "## Test recall per class of each tier's best config", "",
             "| budget GFLOPs | config | " + " | ".join(names) + " |", "| --- | --- |" + " --- |" * len(names)]
    for tier in tiers:
        recall = dict(tier.best.class_recall)  # type: ignore[union-attr]
        cells = [f"{recall[n]:.1%}" if recall.get(n) is not None else "-" for n in names]
        lines.append(f"| {tier.budget_gflops:g} | `{tier.best.config.name}` | " + " | ".join(cells) + " |")  # type: ignore[union-attr]
    return lines


def plot(report: Report, path: Path) -> Path:
    """Every trial, the validation objective vs train GFLOPs (log x), frontier and tier budgets."""
    import matplotlib

    o = report.objective
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=120)
    colours = plt.get_cmap("tab10")
    markers = "osD^v<>ph*"
    for i, tier in enumerate(report.tiers):
        colour = colours(i % 10)
        rows = [r for r in report.rows if r.budget_gflops == tier.budget_gflops and metric(r, o) is not None]
        for status, filled in (("completed", True), ("stopped", False)):
            chosen = [r for r in rows if r.status == status]
            if chosen:
                axes.scatter([r.train_gflops for r in chosen], [metric(r, o) for r in chosen], s=40,
                             marker=markers[i % len(markers)], facecolors=colour if filled else "none", edgecolors=colour,
                             label=f"tier {tier.budget_gflops:g} GFLOPs" + ("" if filled else " (stopped early)"))
        axes.axvline(tier.budget_gflops, color=colour, linestyle=":", linewidth=1)
    frontier = report.pareto_train
    if frontier:
        xs = [r.train_gflops for r in frontier]
        ys = [metric(r, o) for r in frontier]
        axes.step(xs, ys, where="post", color="black", linewidth=1.2, label="Pareto frontier")
    axes.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    axes.xaxis.set_major_formatter(plain)
    axes.xaxis.set_minor_formatter(plain)
    axes.tick_params(axis="x", which="minor", labelsize=7)
    axes.set_xlabel("train GFLOPs per image (log scale; dotted: tier budgets)")
    axes.set_ylabel(f"{'lowest' if o.minimised else 'best'} validation {o.label}")
    if o.metric in ("accuracy", "balanced_accuracy"):
        axes.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    axes.set_title(f"pdsweep sweep '{report.sweep}': {o.label} vs training cost")
    return save(figure, axes, path)


def compare(reports: Sequence[Report]) -> str:
    """Markdown: each tier's best config in each sweep, side by side."""
    budgets = sorted({t.budget_gflops for r in reports for t in r.tiers})
    header = "| budget GFLOPs | " + " | ".join(f"`{r.sweep}` best | val {r.objective.label}" for r in reports) + " |"
    lines = [f"# Sweeps compared: {', '.join(f'`{r.sweep}`' for r in reports)}", "", header,
             "| --- |" + " --- | --- |" * len(reports)]
    for budget in budgets:
        cells = []
        for report in reports:
            tier = next((t for t in report.tiers if t.budget_gflops == budget), None)
            best = tier.best if tier else None
            cells.append(f"`{best.config.name}` | {report.objective.format(best.metric, best.spread)}" if best else "- | -")
        lines.append(f"| {budget:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """``report.md`` and ``report.png`` in ``out_dir``."""
    output_dir(out_dir)
    md = out_dir / "report.md"
    png = plot(report, out_dir / "report.png")
    write_text(md, markdown(report).replace("# Sweep", f"![{report.objective.label} vs train GFLOPs](report.png)\n\n# Sweep", 1))
    return md, png
