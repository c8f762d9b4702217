"""Benchmark: the compute each search strategy spends to find a tier's best config, against known truth.

    python bench/search.py [--quick] [--json] [--seeds 50] [--trials 16] [--concurrency 2] [--no-record]

Replays the tabular benchmark (``bench/tabular/fashion_mnist.parquet``, built by
``bench/tabular/build.py``: every config of ``bench/tabular/space.yaml`` that fits the largest
tier, trained for real with several seeds, validation accuracy after every epoch). The searchers
and schedulers are the real objects: pdsweep's :class:`BudgetSearcher` and :class:`TieredASHA`,
and for "by hand" Ray Tune's own ``OptunaSearch`` and ASHA. A stand-in trainable reads the table:
a trial of config C with replicate r gets one of C's recorded seeds (a different draw per replay
seed), its epochs take the seconds they took when the table was built, and ``--concurrency``
trials run at a time on a simulated clock, so the searchers see results in the order a cluster of
that many slots would produce them. This is the event loop Ray Tune runs (suggest, add to the
scheduler, a result per epoch, stop or continue, complete), without Ray's processes.

Strategies, each with ASHA (grace 1 epoch, reduction 2, as ``pdsweep run``'s defaults) and
without (``*_no_asha``):
- ``pdsweep``: ``pdsweep run``'s default search (TPE after a space-filling start, no config twice
  in a tier, keep rate set by policy ``fill``);
- ``random``: ``--search random`` (uniform over the configs that fit);
- ``grid``: ``--search grid`` (every config that fits, each listed keep rate it can afford,
  costliest first);
- ``by_hand``: Ray Tune + Optuna as a user without pdsweep would set it up: every axis, the keep
  rate included, a ``tune.choice`` sampled by Optuna's TPE with its defaults; a draw over the
  budget is rejected: reported to the searcher at 0 accuracy without training, and drawn again,
  so every strategy trains the same number of trials.

Measured per tier over ``--seeds`` replays: regret (the table's best mean accuracy in the tier
minus the true mean accuracy of the config the strategy would report, in points: its best
finished trial by best validation accuracy), against compute spent (as the sweep's ledger
counts it: train GFLOPs x 3 x images x epochs run, TFLOP); the median compute to reach regret <= 0.5 points (a replay that never reaches
it counts as infinite; if the median is, the median total compute is reported instead, with
``reached`` false), and the share of replays that reach it.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results import record  # noqa: E402

from pdsweep.sweep.settings import SweepSettings  # noqa: E402

TABLE = HERE / "tabular" / "fashion_mnist.parquet"
SPACE = HERE / "tabular" / "space.yaml"
TIERS = (0.004, 0.01, 0.03)
REGRET_POINTS = 0.5
UNLIMITED = 10_000  # trials: a search that runs until it ends on its own, or at the horizon
STRATEGIES = ("pdsweep", "by_hand", "random", "grid")


@dataclass(frozen=True)
class Run:
    val: tuple[float, ...]  # validation accuracy after each epoch
    seconds: tuple[float, ...]  # each epoch's training time when the table was built


@dataclass
class Table:
    """The recorded runs, by config name."""

    runs: dict[str, list[Run]]
    gflops: dict[str, float]
    train_images: int
    epochs: int
    meta: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> Table:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        runs: dict[str, list[Run]] = {}
        gflops: dict[str, float] = {}
        for row in table.to_pylist():
            runs.setdefault(row["config"], []).append(Run(tuple(row["val_accuracy"]), tuple(row["epoch_seconds"])))
            gflops[row["config"]] = row["train_gflops"]
        meta = json.loads((table.schema.metadata or {}).get(b"pdsweep.tabular", b"{}"))
        first = table.slice(0, 1).to_pylist()[0]
        return cls(runs, gflops, int(first["train_images"]), len(first["val_accuracy"]), meta)

    def truth(self, name: str) -> float:
        """The config's true accuracy: the mean over its seeds of the last epoch's validation accuracy."""
        return statistics.fmean(run.val[-1] for run in self.runs[name])

    def best(self, tier: float) -> tuple[str, float]:
        feasible = [name for name, g in self.gflops.items() if g <= tier]
        name = max(feasible, key=self.truth)
        return name, self.truth(name)

    def run(self, name: str, replicate: int, replay: int) -> Run:
        if name not in self.runs:
            raise SystemExit(f"{name} is not in {TABLE.name}; rebuild it with bench/tabular/build.py")
        seeds = self.runs[name]
        offset = zlib.crc32(f"{replay}:{name}".encode())  # which recorded seed a replay's first trial gets
        return seeds[(offset + replicate) % len(seeds)]

    def tflop(self, name: str, epochs: int) -> float:
        """What ``epochs`` epochs of ``name`` cost, as the sweep's ledger counts it."""
        from pdsweep.results.compute import trial_tflop

        return trial_tflop(self.gflops[name], self.train_images, epochs)


# ---- the strategies: a searcher and a scheduler for one tier --------------------------------


@dataclass
class Strategy:
    searcher: Any
    scheduler: Any
    to_config: Any  # suggestion -> (config name, replicate) or None for a draw over the budget


def make(strategy: str, asha: bool, tier: float, seed: int, trials: int, folder: Path) -> Strategy:
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    from pdsweep.config import Config
    from pdsweep.cost import Budget
    from pdsweep.space import load_space
    from pdsweep.sweep.schedulers import InPlace, TieredASHA
    from pdsweep.sweep.searcher import BudgetSearcher
    from pdsweep.sweep.spec import METRIC, TIME_ATTR, TrialContext
    from pdsweep.sweep.store import SweepStore

    space = load_space(str(SPACE))
    epochs = space.training.epochs
    if strategy == "by_hand":
        import optuna
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        axes = {name: list(axis.values()) for name, axis in space.axes.items()}
        choices = OptunaSearch.convert_search_space({name: tune.choice(values) for name, values in axes.items()})
        searcher = OptunaSearch(choices, metric=METRIC,
                                mode="max", sampler=optuna.samplers.TPESampler(seed=seed))
        scheduler = (AsyncHyperBandScheduler(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=epochs,
                                             grace_period=1, reduction_factor=2) if asha else FIFOScheduler())

        def by_hand(suggestion: dict[str, Any]) -> tuple[str, int] | None:
            config = Config(**{**suggestion, "num_classes": 10})
            from pdsweep.cost import train_gflops

            return (config.name, 0) if train_gflops(config) <= tier else None

        return Strategy(searcher, scheduler, by_hand)

    # A folder of its own: a study found there would carry another replay's trials.
    store = SweepStore(tempfile.mkdtemp(dir=folder), f"{strategy}-{seed}-{tier:g}")
    store.local_dir.mkdir(parents=True)
    context = TrialContext(space.training, "table", split_seed=0)
    search = {"pdsweep": "tpe", "random": "random", "grid": "grid"}[strategy]
    searcher = BudgetSearcher(space, [Budget(tier)], search=search, trials=trials, policy="fill",  # type: ignore[arg-type]
                              seed=seed, store=store, context=context, num_classes=10)
    scheduler = TieredASHA([tier], max_t=epochs, grace_period=1, reduction_factor=2) if asha else InPlace()

    def ours(suggestion: dict[str, Any]) -> tuple[str, int]:
        return Config(**suggestion["config"]).name, suggestion["seed"] - space.training.seed

    return Strategy(searcher, scheduler, ours)


# ---- the replay: Tune's event loop on a simulated clock ------------------------------------


@dataclass
class Replay:
    compute: list[float] = field(default_factory=list)  # TFLOP spent when each trial finished
    regret: list[float] = field(default_factory=list)  # regret (points) of the reported config then
    total: float = 0.0
    trials: int = 0
    distinct: int = 0

    def compute_to(self, points: float) -> float:
        return next((c for c, r in zip(self.compute, self.regret) if r <= points), math.inf)


def replay(table: Table, strategy: str, asha: bool, tier: float, seed: int, trials: int, concurrency: int,
           folder: Path, horizon: float = math.inf) -> Replay:
    """One replay; no trial is issued once ``horizon`` TFLOP are spent."""
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher

    from pdsweep.sweep.spec import METRIC, TIME_ATTR

    s = make(strategy, asha, tier, seed, trials, folder)
    _, best_truth = table.best(tier)
    out = Replay()
    clock, spent, issued, done = 0.0, 0.0, 0, False
    events: list[tuple[float, int, str]] = []  # (time an epoch ends, tie-break, trial id)
    live: dict[str, SimpleNamespace] = {}
    finished: list[tuple[float, str]] = []  # (best validation accuracy, config) of finished trials
    names: set[str] = set()
    budget_trials = trials if strategy == "by_hand" else math.inf
    drawn = 0
    while True:
        done = done or spent >= horizon
        while not done and len(live) < concurrency and issued < budget_trials:
            trial_id = f"t{drawn:05d}"
            drawn += 1
            suggestion = s.searcher.suggest(trial_id)
            if suggestion is None or suggestion is Searcher.FINISHED:
                done = True
                break
            target = s.to_config(suggestion)
            if target is None:  # by hand: over the budget, penalised (0) without training, drawn again
                s.searcher.on_trial_complete(trial_id, {METRIC: 0.0, TIME_ATTR: 0})
                if drawn > 100 * trials:
                    done = True
                continue
            issued += 1
            name, replicate = target
            names.add(name)
            trial = SimpleNamespace(trial_id=trial_id, config={"tier": tier, **suggestion}, name=name,
                                    run=table.run(name, replicate, seed), epoch=0)
            s.scheduler.on_trial_add(None, trial)
            live[trial_id] = trial
            heapq.heappush(events, (clock + trial.run.seconds[0], drawn, trial_id))
        if not live:
            break
        clock, _, trial_id = heapq.heappop(events)
        trial = live[trial_id]
        trial.epoch += 1
        spent += table.tflop(trial.name, 1)
        result = {TIME_ATTR: trial.epoch, METRIC: trial.run.val[trial.epoch - 1], "tier": tier,
                  "training_iteration": trial.epoch}
        decision = s.scheduler.on_trial_result(None, trial, result)
        last = trial.epoch == len(trial.run.val)
        if decision != TrialScheduler.STOP:
            s.searcher.on_trial_result(trial_id, result)
        if decision == TrialScheduler.STOP or last:
            if last and decision != TrialScheduler.STOP:  # the trainable's final report
                result = {**result, "done_training": True, f"best_{METRIC}": max(trial.run.val)}
            s.scheduler.on_trial_complete(None, trial, result)
            s.searcher.on_trial_complete(trial_id, result)
            del live[trial_id]
            finished.append((max(trial.run.val[: trial.epoch]), trial.name))
            reported = max(finished)[1]
            out.compute.append(spent)
            out.regret.append(100 * (best_truth - table.truth(reported)))
        else:
            heapq.heappush(events, (clock + trial.run.seconds[trial.epoch], drawn + trial.epoch, trial_id))
    out.total, out.trials, out.distinct = spent, issued, len(names)
    return out


def summarise(anytime: list[Replay], default: list[Replay]) -> dict[str, Any]:
    """``anytime``: replays that go on until their search ends or the horizon (how much compute
    reaching the regret takes); ``default``: replays of ``--trials`` trials (what a sweep of
    that size ends with)."""
    to = sorted(r.compute_to(REGRET_POINTS) for r in anytime)
    median = statistics.median(to)
    return {
        f"median_compute_to_regret_{REGRET_POINTS:g}": round(median if math.isfinite(median) else statistics.median(r.total for r in anytime), 4),
        "reached": math.isfinite(median),
        "share_reaching": round(sum(math.isfinite(v) for v in to) / len(to), 3),
        "at_trials": {
            "share_reaching": round(sum(math.isfinite(r.compute_to(REGRET_POINTS)) for r in default) / len(default), 3),
            "median_final_regret": round(statistics.median(r.regret[-1] if r.regret else math.inf for r in default), 3),
            "median_compute": round(statistics.median(r.total for r in default), 4),
            "median_trials": statistics.median(r.trials for r in default),
            "median_distinct_configs": statistics.median(r.distinct for r in default),
        },
    }


def curve(replays: list[Replay], grid: list[float], worst: float) -> list[float]:
    """Median regret after each compute level in ``grid``; a replay with no finished trial yet
    has no answer, counted as ``worst`` (the regret of the tier's worst config)."""
    medians = []
    for level in grid:
        values = []
        for r in replays:
            before = [g for c, g in zip(r.compute, r.regret) if c <= level]
            values.append(before[-1] if before else worst)
        medians.append(statistics.median(values))
    return medians


def plot(table: Table, results: dict[float, dict[str, list[Replay]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {name: f"C{i}" for i, name in enumerate(STRATEGIES)}
    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for axis, (tier, by_strategy) in zip(axes[0], results.items()):
        top = max(r.total for replays in by_strategy.values() for r in replays)
        low = min(r.compute[0] for replays in by_strategy.values() for r in replays if r.compute)
        grid = [low * (top / low) ** (i / 120) for i in range(121)]
        feasible = [name for name, g in table.gflops.items() if g <= tier]
        worst = 100 * (table.best(tier)[1] - min(table.truth(name) for name in feasible))
        for name, replays in by_strategy.items():
            base = name.removesuffix("_no_asha")
            axis.plot(grid, curve(replays, grid, worst), label=name, color=colours[base],
                      linestyle="--" if name.endswith("no_asha") else "-")
        axis.axhline(REGRET_POINTS, color="grey", linewidth=0.8)
        axis.set(title=f"tier {tier:g} GFLOPs", xlabel="compute spent (TFLOP)", ylabel="median regret (points)", xscale="log")
        axis.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 seeds, with ASHA only: minutes")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--trials", type=int, default=SweepSettings.trials,
                        help="trials per tier for every strategy but grid (default: pdsweep run's, %(default)s)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if not args.table.is_file():
        raise SystemExit(f"no table at {args.table}; build it with `python bench/tabular/build.py`")

    table = Table.read(args.table)
    seeds = 10 if args.quick else args.seeds
    variants = [(s, True) for s in STRATEGIES] + ([] if args.quick else [(s, False) for s in STRATEGIES])
    started = time.perf_counter()
    anytime: dict[float, dict[str, list[Replay]]] = {}
    default: dict[float, dict[str, list[Replay]]] = {}
    horizons = {}
    with tempfile.TemporaryDirectory(prefix="pdsweep-search-") as folder:
        for tier in TIERS:
            # Long enough for any strategy to get there: twice the compute of training every config that fits.
            horizons[tier] = 2 * sum(table.tflop(name, table.epochs) for name, g in table.gflops.items() if g <= tier)
            for strategy, asha in variants:
                name = strategy if asha else f"{strategy}_no_asha"
                runs = 1 if strategy == "grid" and not asha else seeds  # a grid without ASHA is one fixed order
                anytime.setdefault(tier, {})[name] = [
                    replay(table, strategy, asha, tier, seed, UNLIMITED, args.concurrency, Path(folder), horizons[tier])
                    for seed in range(runs)
                ]
                default.setdefault(tier, {})[name] = anytime[tier][name] if strategy == "grid" else [
                    replay(table, strategy, asha, tier, seed, args.trials, args.concurrency, Path(folder))
                    for seed in range(runs)
                ]
    summary: dict[str, Any] = {"tiers": {
        f"{tier:g}": {name: summarise(replays, default[tier][name]) for name, replays in by_name.items()}
        for tier, by_name in anytime.items()
    }}
    summary["settings"] = {"seeds": seeds, "trials": args.trials, "concurrency": args.concurrency,
                           "regret_points": REGRET_POINTS, "horizon_tflop": {f"{t:g}": round(h, 3) for t, h in horizons.items()},
                           "table": table.meta, "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        print(json.dumps(summary, indent=2))
    text = markdown(summary, table)
    if not args.json:
        print(text)
    if not args.no_record and not args.quick:
        plot(table, anytime, HERE / "search.png")
        record("search", text)


def markdown(summary: dict[str, Any], table: Table) -> str:
    settings = summary["settings"]
    key = f"median_compute_to_regret_{REGRET_POINTS:g}"
    lines = [
        f"## Search against ground truth (`python bench/search.py`, {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} CPU)",
        "",
        f"Replays of `bench/tabular/{TABLE.name}` ({table.meta.get('dataset', '?')}; {len(table.runs)} configs x "
        f"{table.meta.get('seeds', '?')} seeds, {table.epochs} epochs each) with the real searchers and "
        f"schedulers, {settings['seeds']} replay seeds, {settings['concurrency']} trials at a time. Compute in "
        "TFLOP as the sweep's ledger counts it (train GFLOPs x 3 x images x epochs run); regret in points of "
        "validation accuracy. *To regret 0.5*: the median compute spent until the reported config is within "
        "0.5 points of the tier's best, each strategy running until its search ends or it has spent twice what "
        "training every config that fits costs (a seed that never gets there counts as infinite; *never* "
        "when the median is, with the median total in brackets). *At N trials*: a sweep of "
        f"`--trials {settings['trials']}` (pdsweep's default): the share of seeds whose reported config is "
        "within 0.5 points, and the median regret and compute. Plot (anytime, median over seeds): "
        "`bench/search.png`.",
        "",
        f"| tier (GFLOPs) | strategy | to regret 0.5 (TFLOP) | seeds reaching | at {settings['trials']} trials: reaching | "
        "regret | compute (TFLOP) | distinct configs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for tier, by_name in summary["tiers"].items():
        for name, s in by_name.items():
            to = f"{s[key]:.2f}" if s["reached"] else f"*never* ({s[key]:.2f})"
            d = s["at_trials"]
            lines.append(f"| {tier} | {name} | {to} | {s['share_reaching']:.0%} | {d['share_reaching']:.0%} | "
                         f"{d['median_final_regret']:.2f} | {d['median_compute']:.2f} | {d['median_distinct_configs']:g} |")
    lines.append("")
    lines.append(f"Replayed in {settings['seconds']:.0f} s.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
