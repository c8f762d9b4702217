"""``pdsweep report``: the answer to "at each budget, which config is best, and by how much?".

Reads ``results.parquet`` only (never Ray's internals) and builds:

- per budget tier, the best config by the sweep's objective (``training.metric``: validation
  accuracy by default, or AUC, balanced accuracy, macro F1, loss; ``--metric`` reads a finished
  sweep under another one and says so), mean and spread over its seeds when it was repeated, its
  cost, its test value with a 95% bootstrap interval over the test images (or groups), its
  per-class recall, the runner-up config and the margin between them;
- per tier, the top configs, each with a 95% percentile-bootstrap interval of its mean over
  seeds, and a verdict: the winner is *separated* from the runner-up when the 95% Welch
  interval of the difference of their means lies above 0, *tied* within noise when it does not,
  and *single seed* (no verdict) while either has fewer than two seeds. Not the bootstrap for
  the difference: with 2-5 seeds a percentile bootstrap is too narrow (two configs of equal
  truth came out "separated" in 31% of simulated cases at 2 seeds, 11% at 5; Welch's t keeps
  that near 5%). Once the repeats ran, the winner and runner-up are chosen among the configs
  with the most seeds, so a config with one lucky seed cannot overtake repeated ones;
- the compute ledger: planned vs spent TFLOPs and device-hours, and whether a cap stopped the sweep;
- the Pareto frontier of the objective against train GFLOPs over all trials (and against
  inference GFLOPs): the trials no other trial beats on both;
- a PNG plot (every trial, log-x, the frontier, the tiers' budgets) and a Markdown summary
  (:mod:`pdsweep.results.report_output`).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from pdsweep.config import Config
from pdsweep.errors import PdsweepError
from pdsweep.objective import Objective
from pdsweep.results import TOP_K
from pdsweep.results.compute import ComputeCap, ComputeLedger, ComputePlan
from pdsweep.results.rows import FAILED, ResultRow

METRIC = "best_val_accuracy"  # the default objective's column (a sweep's own: Objective.best_key)
CONFIDENCE = 0.95
RESAMPLES = 2000  # bootstrap resamples (of the seeds, with replacement)
BOOTSTRAP_SEED = 0  # the same rows give the same intervals

# separated: the Welch interval of (winner - runner-up) lies above 0; tied: it does not;
# single seed: the winner or the runner-up has one seed, so there is no noise to judge by.
Verdict = Literal["separated", "tied", "single seed", "no runner-up"]


def metric(row: ResultRow, objective: Objective = Objective()) -> float | None:
    """What a report ranks by: the row's best validation value of the objective; only rows with
    one are scored."""
    return row.best_val(objective.metric)


def search_metric(rows: Sequence[ResultRow]) -> str:
    """The metric the sweep's search ran under (accuracy for rows written before it was recorded)."""
    return next((row.metric for row in rows if row.metric), "accuracy")


@dataclass(frozen=True)
class Score:
    """One config in one tier, over its seeds (those that ran to the end, if any did)."""

    config: Config
    budget_gflops: float
    metric: float  # mean best validation value of the objective over seeds
    spread: float | None  # standard deviation over seeds (None with one seed)
    seeds: int
    test_accuracy: float | None  # mean over the seeds that ran to the end
    train_gflops: float
    inference_gflops: float
    memory_gb: float
    values: tuple[float, ...] = ()  # the metric of each seed
    interval: tuple[float, float] | None = None  # 95% bootstrap interval of the mean (None with one seed)
    complete: bool = True  # its seeds ran every epoch (False: only early-stopped seeds, a partial accuracy)
    test: float | None = None  # the objective's test value, mean over the seeds that ran to the end
    # Its 95% bootstrap interval over the test images (or groups); with several seeds, the mean
    # of each seed's bounds.
    test_interval: tuple[float, float] | None = None
    class_recall: tuple[tuple[str, float | None], ...] = ()  # test recall per class, mean over seeds

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.config.to_dict(), "budget_gflops": self.budget_gflops, "metric": self.metric, "spread": self.spread,
            "seeds": self.seeds, "test_accuracy": self.test_accuracy, "train_gflops": self.train_gflops,
            "inference_gflops": self.inference_gflops, "memory_gb": self.memory_gb,
            "seed_metrics": list(self.values), "interval": list(self.interval) if self.interval else None,
            "test": self.test, "test_interval": list(self.test_interval) if self.test_interval else None,
            "class_recall": {name: recall for name, recall in self.class_recall},
        }


@dataclass(frozen=True)
class TierReport:
    budget_gflops: float
    trials: int
    best: Score | None
    runner_up: Score | None
    top: tuple[Score, ...] = ()  # the tier's best configs, best first
    difference: tuple[float, float] | None = None  # 95% Welch interval of best - runner-up (a loss: runner-up - best)
    objective: Objective = Objective()

    @property
    def margin(self) -> float | None:
        """How much better the best is than the runner-up (> 0; a loss: how much lower)."""
        if not (self.best and self.runner_up):
            return None
        return self.objective.score(self.best.metric) - self.objective.score(self.runner_up.metric)

    @property
    def verdict(self) -> Verdict:
        if self.best is None or self.runner_up is None:
            return "no runner-up"
        if self.difference is None:
            return "single seed"
        return "separated" if self.difference[0] > 0 else "tied"

    def to_dict(self) -> dict[str, Any]:
        return {"budget_gflops": self.budget_gflops, "trials": self.trials,
                "best": self.best.to_dict() if self.best else None,
                "runner_up": self.runner_up.to_dict() if self.runner_up else None, "margin": self.margin,
                "top": [score.to_dict() for score in self.top], "verdict": self.verdict,
                "difference_interval": list(self.difference) if self.difference else None}


@dataclass(frozen=True)
class InitPair:
    """One config trained from pretrained weights and from random initialisation, in one tier:
    the same architecture and keep rate, so the same cost."""

    budget_gflops: float
    pretrained: Score
    random: Score
    difference: tuple[float, float] | None  # 95% Welch interval of pretrained - random; None: a single seed
    objective: Objective = Objective()

    @property
    def margin(self) -> float:
        """How much better pretrained is (< 0: worse; a loss: how much lower)."""
        return self.objective.score(self.pretrained.metric) - self.objective.score(self.random.metric)

    def to_dict(self) -> dict[str, Any]:
        return {"budget_gflops": self.budget_gflops, "config": replace(self.random.config, init="random").name,
                "train_gflops": self.random.train_gflops, "pretrained": self.pretrained.to_dict(),
                "random": self.random.to_dict(), "margin": self.margin,
                "difference": list(self.difference) if self.difference else None}


@dataclass(frozen=True)
class Report:
    sweep: str
    tiers: tuple[TierReport, ...]
    pareto_train: tuple[ResultRow, ...]  # trials on the frontier vs train GFLOPs
    pareto_inference: tuple[ResultRow, ...]
    rows: tuple[ResultRow, ...]
    compute: ComputeLedger | None = None
    inits: tuple[InitPair, ...] = ()  # configs trained both ways, for pretrained vs random at equal cost
    notes: tuple[str, ...] = ()  # what a config's family changes in how to read it (a Swin's)
    objective: Objective = Objective()  # what this report ranks by
    search_metric: str = "accuracy"  # what the sweep's search ran under
    splits: tuple[tuple[str, int, int | None], ...] = ()  # (split, images, groups) of the dataset
    scored_by: str = "image"  # image, or mean: each group scored by its images' mean probabilities

    def to_json(self) -> dict[str, Any]:
        def point(row: ResultRow) -> dict[str, Any]:
            return {**row.config.to_dict(), "trial_id": row.trial_id, "budget_gflops": row.budget_gflops,
                    "metric": metric(row, self.objective), "train_gflops": row.train_gflops,
                    "inference_gflops": row.inference_gflops}

        return {
            "sweep": self.sweep,
            "metric": self.objective.metric,
            "search_metric": self.search_metric,
            "scored_by": self.scored_by,
            "splits": {split: {"images": images, "groups": groups} for split, images, groups in self.splits},
            "tiers": [t.to_dict() for t in self.tiers],
            "pareto": [point(r) for r in self.pareto_train],
            "pareto_inference": [point(r) for r in self.pareto_inference],
            "failed": [{**row.config.to_dict(), "trial_id": row.trial_id, "budget_gflops": row.budget_gflops,
                        "status": row.status, "predicted_memory_gb": row.predicted_memory_gb, "error": row.error}
                       for row in self.failed],
            "compute": self.compute.to_dict() if self.compute else None,
            "init_comparison": [pair.to_dict() for pair in self.inits],
            "notes": list(self.notes),
        }

    @property
    def failed(self) -> tuple[ResultRow, ...]:
        """Trials that ended without an accuracy to compare: out of memory, diverged, or an error."""
        return tuple(row for row in self.rows if row.status in FAILED)


def build(sweep: str, rows: Sequence[ResultRow], *, top_k: int = TOP_K, plan: ComputePlan | None = None,
          cap: ComputeCap = ComputeCap(), objective: Objective | None = None) -> Report:
    """The report of a sweep's results rows (``plan``, ``cap``: from its sweep.json, for the ledger),
    ranked by ``objective`` (default: the one its search ran under)."""
    searched = search_metric(rows)
    objective = objective or Objective(searched)  # type: ignore[arg-type]
    scored = [r for r in rows if r.finished and metric(r, objective) is not None]
    if not scored:
        if any(r.finished for r in rows):
            raise PdsweepError(f"sweep {sweep!r} has no {objective.label} recorded (its trials predate it, or it is "
                               f"undefined on this data); report it under --metric {searched}.")
        raise PdsweepError(f"sweep {sweep!r} has no finished trial yet; wait for one, or `pdsweep resume {sweep}`.")
    tiers, inits = [], []
    for budget in sorted({r.budget_gflops for r in rows}):
        tier_rows = [r for r in scored if r.budget_gflops == budget]
        scores = _scores(tier_rows, objective)
        inits += init_pairs(budget, scores, objective)
        ranked = _ranked(scores, repeated=any(r.phase == "repeat" for r in tier_rows), objective=objective)
        best, runner = (ranked + [None, None])[:2]
        difference = _difference(best, runner, objective) if best and runner else None
        tiers.append(TierReport(budget, sum(r.budget_gflops == budget for r in rows), best, runner,
                                tuple(ranked[:top_k]), difference, objective))
    notes = family_notes(rows)
    if objective.metric != searched:
        notes += (f"the search ran under {Objective(searched).label} (it chose which configs to train and stop); this "  # type: ignore[arg-type]
                  f"report ranks them by {objective.label}.",)
    counts = next((r.split_counts for r in rows if r.split_counts), None) or ()
    return Report(sweep, tuple(tiers), tuple(pareto(scored, "train_gflops", objective)),
                  tuple(pareto(scored, "inference_gflops", objective)), tuple(rows), ComputeLedger.of(rows, plan, cap),
                  tuple(inits), notes, objective, searched, tuple((c.split, c.images, c.groups) for c in counts),
                  next((r.scored_by for r in rows if r.scored_by), "image"))


def _difference(first: Score, second: Score, objective: Objective) -> tuple[float, float] | None:
    """The Welch interval of how much better ``first`` is than ``second`` (> 0: better)."""
    return welch([objective.score(v) for v in first.values], [objective.score(v) for v in second.values])


def family_notes(rows: Sequence[ResultRow]) -> tuple[str, ...]:
    """One line per Swin model of the sweep: the axes that do not apply to it, and its keep rates."""
    models = sorted({row.config.model for row in rows if row.config.family == "swin"})
    return tuple(f"{model} is a Swin Transformer: patch 4, and its kept patches are the same n of the 7 rows and "
                 "columns of every window, so its keep rates are (n/7)^2 only; a space's patch_size and sampling "
                 "do not apply to it." for model in models)


def init_pairs(budget: float, scores: Sequence[Score], objective: Objective = Objective()) -> list[InitPair]:
    """The tier's configs trained both pretrained and random, dearest first. Only pairs whose
    both sides ran every epoch: an early-stopped side has a partial accuracy (ASHA stops slow
    starters, most often the random ones), which would not compare at equal cost."""
    by_config = {score.config: score for score in scores}
    pairs = []
    for config, score in by_config.items():
        other = by_config.get(replace(config, init="random"))
        if config.init == "pretrained" and other is not None and score.complete and other.complete:
            pairs.append(InitPair(budget, score, other, _difference(score, other, objective), objective))
    return sorted(pairs, key=lambda p: (-p.random.train_gflops, p.random.config.name))


def _ranked(scores: list[Score], *, repeated: bool, objective: Objective = Objective()) -> list[Score]:
    """Best first. Once the repeats ran (``repeated``), the configs with the most seeds come
    first: the repeats pull the top configs' means back towards their truth (they were chosen
    for a lucky first seed), and a config left with one seed would otherwise overtake them on
    its own luck."""
    most = max((s.seeds for s in scores), default=0)
    return sorted(scores, key=lambda s: (repeated and s.seeds < most, -objective.score(s.metric)))


def welch(first: Sequence[float], second: Sequence[float]) -> tuple[float, float] | None:
    """The :data:`CONFIDENCE` Welch t-interval of mean(first) - mean(second); None with fewer
    than two seeds on either side."""
    if len(first) < 2 or len(second) < 2:
        return None
    from scipy import stats

    difference = statistics.fmean(first) - statistics.fmean(second)
    a, b = statistics.variance(first) / len(first), statistics.variance(second) / len(second)
    if a + b == 0:
        return difference, difference
    freedom = (a + b) ** 2 / (a**2 / (len(first) - 1) + b**2 / (len(second) - 1))
    half = float(stats.t.ppf(1 - (1 - CONFIDENCE) / 2, freedom)) * (a + b) ** 0.5
    return difference - half, difference + half


def bootstrap(first: Sequence[float], second: Sequence[float] | None = None,
              statistic: Callable[..., float] = lambda values: statistics.fmean(values)) -> tuple[float, float] | None:
    """The percentile-bootstrap :data:`CONFIDENCE` interval of ``statistic`` over seeds: each
    sample resampled with replacement :data:`RESAMPLES` times, from a fixed seed. None when a
    sample has fewer than two seeds (one seed says nothing about the noise)."""
    samples = [sorted(first)] + ([sorted(second)] if second is not None else [])  # the same seeds in any row order
    if any(len(sample) < 2 for sample in samples):
        return None
    rng = random.Random(BOOTSTRAP_SEED)
    stats = sorted(statistic(*(rng.choices(sample, k=len(sample)) for sample in samples)) for _ in range(RESAMPLES))
    tail = (1 - CONFIDENCE) / 2
    return stats[int(tail * RESAMPLES)], stats[int((1 - tail) * RESAMPLES) - 1]


def scores_by_name(rows: Sequence[ResultRow], objective: Objective = Objective()) -> dict[str, Score]:
    """Each config's :class:`Score` over its rows (seeds), by config name."""
    return {score.config.name: score for score in _scores(list(rows), objective)}


def _scores(rows: list[ResultRow], objective: Objective = Objective()) -> list[Score]:
    groups: dict[Config, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(row.config, []).append(row)
    scores = []
    for config, members in groups.items():
        # A seed stopped early has a partial accuracy: it counts only when no seed ran to the end.
        members = [r for r in members if r.status == "completed"] or members
        metrics = [metric(r, objective) for r in members]
        tests = [r.test_accuracy for r in members if r.test_accuracy is not None]
        own = [value for r in members if (value := r.test(objective.metric)) is not None]
        intervals = [interval for r in members if (interval := r.interval(objective.metric))]
        first = members[0]
        scores.append(Score(
            config=config, budget_gflops=first.budget_gflops, metric=statistics.fmean(metrics),
            spread=statistics.stdev(metrics) if len(metrics) > 1 else None, seeds=len({r.seed for r in members}),
            test_accuracy=statistics.fmean(tests) if tests else None, train_gflops=first.train_gflops,
            inference_gflops=first.inference_gflops, memory_gb=first.predicted_memory_gb,
            values=tuple(metrics), interval=bootstrap(metrics), complete=members[0].status == "completed",  # type: ignore[arg-type]
            test=statistics.fmean(own) if own else None,
            test_interval=(statistics.fmean(i[0] for i in intervals), statistics.fmean(i[1] for i in intervals))
            if intervals else None,
            class_recall=_class_recall(members),
        ))
    return scores


def _class_recall(rows: Sequence[ResultRow]) -> tuple[tuple[str, float | None], ...]:
    """Each class's test recall, the mean over the rows (seeds) that recorded one."""
    names: dict[str, list[float]] = {}
    for row in rows:
        for point in row.class_recall or ():
            names.setdefault(point.name, [])
            if point.recall is not None:
                names[point.name].append(point.recall)
    return tuple((name, statistics.fmean(values) if values else None) for name, values in names.items())


def pareto(rows: Sequence[ResultRow], cost: str, objective: Objective = Objective()) -> list[ResultRow]:
    """Rows that no other row beats: none cheaper (or as cheap) with a higher (or equal) metric.

    ``cost`` names the row's cost column (``train_gflops``, ``inference_gflops``). Sorted by
    cost; among rows of equal cost only the best counts.
    """
    frontier: list[ResultRow] = []
    def score(row: ResultRow) -> float:
        return objective.score(metric(row, objective))  # type: ignore[arg-type]

    for row in sorted(rows, key=lambda r: (getattr(r, cost), -score(r))):
        if not frontier or score(row) > score(frontier[-1]):
            if frontier and getattr(frontier[-1], cost) == getattr(row, cost):
                continue
            frontier.append(row)
    return frontier
