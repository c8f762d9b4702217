"""Benchmark: the compute each search strategy spends to find a tier's best config, against known truth.

    python bench/search.py [--table bench/tabular/fashion_mnist.parquet] [--space S.yaml]
        [--tiers 0.004,0.01,0.03] [--seeds 50] [--trials 8] [--concurrency 2] [--num-classes N]
        [--strategies pdsweep,random,...] [--quick] [--json] [--no-record]

Replays a tabular benchmark (a table built by ``bench/tabular/build.py``; its layout is in
``bench/tabular/README.md``: every config of a space that fits the largest tier, trained for real
with several seeds, validation accuracy after every epoch). ``--space`` and ``--tiers`` default to
what the table's metadata names. The searchers and schedulers are the real objects; a stand-in for
Tune's controller drives them (:class:`Replayer`): it asks the searcher for trials through Ray's
``ConcurrencyLimiter`` (as ``TuneConfig(max_concurrent_trials=...)`` does), lets the scheduler
choose which trial runs, and stops, pauses and resumes trials as the scheduler says. A trial of
config C with replicate r gets one of C's recorded seeds (a different draw per replay seed), its
epochs take the seconds they took when the table was built, and ``--concurrency`` trials run at a
time on a simulated clock, so the searchers see results in the order a cluster of that many slots
would produce them. A paused trial resumes from its last epoch (its checkpoint), at no compute.

Strategies (``--strategies``; ``pdsweep``, ``random``, ``grid`` and ``by_hand`` also run without a
scheduler, as ``*_no_asha``):
- ``pdsweep``: ``pdsweep run``'s default search and scheduler, through the hooks ``pdsweep run``
  builds them with (:class:`BudgetSearcher`, and :func:`search_scheduler` from a default
  :class:`SweepSettings`, so its early stopping per tier stops when and as ``pdsweep run``'s does);
- ``random``, ``grid``: ``--search random`` and ``--search grid`` with the same scheduler;
- ``by_hand``: Ray Tune + Optuna as a user without pdsweep would set it up: every axis, the keep
  rate included, a ``tune.choice`` sampled by ``OptunaSearch`` (TPE, Optuna's defaults), and ASHA
  with grace 1 and reduction 2. A draw over the budget is rejected: told to the searcher as a
  finished trial at 0 accuracy without training, and drawn again, so every strategy trains the
  same number of trials. The peers below reject such draws the same way.
- ``hyperband``: the same ``OptunaSearch`` with Ray's synchronous ``HyperBandScheduler``
  (``max_t`` = the table's epochs, Ray's default reduction factor 3), pausing and resuming trials;
- ``bohb``: Ray's ``TuneBOHB`` (hpbandster's BOHB) with ``HyperBandForBOHB``, as Ray's docs pair
  them; a rejected draw is told to BOHB as 0 accuracy at the full budget;
- ``optuna_hyperband``: Optuna's ``TPESampler`` with its ``HyperbandPruner`` (the pruner Optuna's
  docs recommend for TPE), by ask and tell: every epoch reported, the trial stopped once
  ``should_prune()``, told as pruned, or as complete with its best accuracy;
- ``dehb``: DEHB by ask and tell, fidelity 1 to the table's epochs (DEHB's fidelities
  ``epochs * 3**-i``, rounded to whole epochs); each job trains its config from scratch for its
  fidelity, and DEHB is told 1 - the validation accuracy then.
Every strategy but pdsweep's (whose searcher has its own quota) issues ``--trials`` trials (a
trial: a config evaluated, stopped or not).

Measured per tier over ``--seeds`` replays: regret (the table's best mean accuracy in the tier
minus the true mean accuracy of the config the strategy would report, in points: its best
finished trial by best validation accuracy), against compute spent (as the sweep's ledger
counts it: train GFLOPs x 3 x images x epochs run, TFLOP); the median compute to reach regret <=
0.5 points (a replay that never reaches it counts as infinite; if the median is, the median total
compute is reported instead, with ``reached`` false), and the share of replays that reach it.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results import record  # noqa: E402

from pdsweep.sweep.settings import SweepSettings  # noqa: E402
from pdsweep.sweep.spec import METRIC, TIME_ATTR  # noqa: E402

if TYPE_CHECKING:
    from pdsweep.space import SearchSpace

DEFAULT_TABLE = HERE / "tabular" / "fashion_mnist.parquet"
REQUIRED_COLUMNS = ("config", "seed", "val_accuracy", "epoch_seconds", "train_gflops", "train_images")
REGRET_POINTS = 0.5
UNLIMITED = 10_000  # trials: a search that runs until it ends on its own, or at the horizon
MAX_REJECTED = 1_000  # over-budget draws in a row after which a searcher is taken as stuck: its search ends
ASHA_STRATEGIES = ("pdsweep", "random", "grid", "by_hand")  # each also replayed without a scheduler
PEERS = ("hyperband", "bohb", "optuna_hyperband", "dehb")
EXTRA = {"bohb": "hpbandster", "dehb": "dehb"}  # peer -> the package of the bench extra it needs
STRATEGIES = ASHA_STRATEGIES + PEERS
NO_ASHA = "_no_asha"
VARIANTS = STRATEGIES + tuple(f"{name}{NO_ASHA}" for name in ASHA_STRATEGIES)


class BenchError(ValueError):
    """A table, space or flag the replay cannot use; the message says what to do instead."""


@dataclass(frozen=True)
class Run:
    val: tuple[float, ...]  # validation accuracy after each epoch
    seconds: tuple[float, ...]  # each epoch's training time when the table was built


@dataclass(frozen=True)
class Table:
    """The recorded runs, by config name (each config's runs in seed order)."""

    path: Path
    runs: dict[str, list[Run]]
    gflops: dict[str, float]
    train_images: int
    epochs: int
    meta: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> Table:
        import pyarrow.parquet as pq

        if not path.is_file():
            raise BenchError(f"no table at {path}; build one with `python bench/tabular/build.py NAME`")
        table = pq.read_table(path)
        missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
        if missing or not table.num_rows:
            raise BenchError(f"table {path} lacks column(s) {', '.join(missing) or 'rows'}; bench/tabular/README.md has the layout")
        seeded: dict[str, list[tuple[int, Run]]] = {}
        gflops: dict[str, float] = {}
        for row in table.select(list(REQUIRED_COLUMNS)).to_pylist():
            seeded.setdefault(row["config"], []).append((row["seed"], Run(tuple(row["val_accuracy"]), tuple(row["epoch_seconds"]))))
            gflops[row["config"]] = row["train_gflops"]
        runs = {name: [run for _, run in sorted(pairs, key=lambda pair: pair[0])] for name, pairs in seeded.items()}
        lengths = {len(run.val) for config_runs in runs.values() for run in config_runs}
        if len(lengths) != 1:
            raise BenchError(f"table {path} holds runs of {sorted(lengths)} epochs; every run must have the same number")
        meta = json.loads((table.schema.metadata or {}).get(b"pdsweep.tabular", b"{}"))
        return cls(path, runs, gflops, int(table["train_images"][0].as_py()), lengths.pop(), meta)

    def fitting(self, tier: float) -> list[str]:
        """The configs whose recorded train cost fits ``tier`` GFLOPs."""
        return [name for name, g in self.gflops.items() if g <= tier]

    def truth(self, name: str) -> float:
        """The config's true accuracy: the mean over its seeds of the last epoch's validation accuracy."""
        return statistics.fmean(run.val[-1] for run in self.runs[name])

    def best(self, tier: float) -> tuple[str, float]:
        name = max(self.fitting(tier), key=self.truth)
        return name, self.truth(name)

    def run(self, name: str, replicate: int, replay: int) -> Run:
        if name not in self.runs:
            raise BenchError(f"config {name} is not in table {self.path}; rebuild the table from the space the "
                             "replay searches (`python bench/tabular/build.py NAME`), or pass that table's --space")
        seeds = self.runs[name]
        offset = zlib.crc32(f"{replay}:{name}".encode())  # which recorded seed a replay's first trial gets
        return seeds[(offset + replicate) % len(seeds)]

    def tflop(self, name: str, epochs: int) -> float:
        """What ``epochs`` epochs of ``name`` cost, as the sweep's ledger counts it."""
        from pdsweep.results.compute import trial_tflop

        return trial_tflop(self.gflops[name], self.train_images, epochs)


@dataclass(frozen=True)
class Bench:
    """A table and the space its configs come from: what every replay of the table shares."""

    table: Table
    space_path: Path
    space: SearchSpace
    num_classes: int  # of the table's dataset: pdsweep's sampler and the peers cost configs with it

    @property
    def epochs(self) -> int:
        return self.space.training.epochs


def open_bench(table_path: Path, space_path: Path | None = None, tiers: Sequence[float] | None = None,
               num_classes: int | None = None) -> tuple[Bench, tuple[float, ...]]:
    """The table, its space (``space_path``, else the file its metadata names, beside it) and the
    tiers to replay (``tiers``, else its metadata's), checked against each other."""
    from pdsweep.errors import PdsweepError
    from pdsweep.space import load_space

    table = Table.read(table_path)
    if space_path is None:
        if "space" not in table.meta:
            raise BenchError(f"table {table.path} names no space file in its metadata; pass --space")
        space_path = table.path.parent / table.meta["space"]
    tiers = tuple(tiers or table.meta.get("tiers") or ())
    if not tiers:
        raise BenchError(f"table {table.path} lists no tiers in its metadata; pass --tiers, e.g. --tiers 0.004,0.01")
    try:
        space = load_space(space_path)
    except PdsweepError as error:
        raise BenchError(f"space {space_path}: {error}") from None
    bench = Bench(table, space_path, space, num_classes or int(table.meta.get("num_classes", 10)))
    check_bench(bench, tiers)
    return bench, tiers


def check_bench(bench: Bench, tiers: Sequence[float]) -> None:
    """Each tier has configs to choose between, and the space trains as the table's runs did
    and allows no config the table lacks (the table holds every one under its largest tier)."""
    from pdsweep.cost import Budget
    from pdsweep.sweep.sampler import BudgetSampler

    table = bench.table
    if bench.epochs != table.epochs:
        raise BenchError(f"space {bench.space_path} trains {bench.epochs} epochs but table {table.path} holds "
                         f"{table.epochs}; pass the space the table was built from with --space")
    for tier in tiers:
        if len(table.fitting(tier)) < 2:
            raise BenchError(f"tier {tier:g} GFLOPs: {len(table.fitting(tier))} config(s) of table {table.path} fit, "
                             f"a search needs 2; its configs cost {min(table.gflops.values()):g} to "
                             f"{max(table.gflops.values()):g} GFLOPs")
    allowed = BudgetSampler(bench.space, Budget(max(tiers)), "fill", bench.num_classes).grid()
    missing = sorted(c.name for c in allowed if c.name not in table.runs)
    if missing:
        raise BenchError(f"space {bench.space_path} allows {len(missing)} config(s) under {max(tiers):g} GFLOPs that "
                         f"table {table.path} lacks (e.g. {', '.join(missing[:3])}); pass the table's own --space, "
                         "or --num-classes if its dataset has another number of classes")


# ---- the strategies: a searcher and a scheduler for one tier --------------------------------


@dataclass(frozen=True)
class ReplaySetup:
    """What a strategy is built for: one replay of one tier."""

    bench: Bench
    tier: float
    seed: int
    trials: int
    concurrency: int
    folder: Path  # scratch space for the studies and logs the searchers write


@dataclass(frozen=True)
class Strategy:
    searcher: Searcher
    scheduler: TrialScheduler
    to_config: Callable[[dict[str, Any]], tuple[str, int] | None]  # suggestion -> (config, replicate); None: over the budget
    num_samples: int  # trials Tune issues (``TuneConfig.num_samples``)
    penalise: Callable[[Searcher, str], None]  # tells the searcher of a draw over the budget, not trained


def check_installed(variants: Sequence[str]) -> None:
    """Every peer asked for has its package (the ``bench`` extra's, imported only by its strategy)."""
    import importlib.util

    missing = [f"{name} needs {EXTRA[name]}" for name in variants if name in EXTRA and importlib.util.find_spec(EXTRA[name]) is None]
    if missing:
        raise BenchError(f"strategy {'; '.join(missing)}: pip install -e '.[bench]', or leave it out of --strategies")


def penalise_untrained(searcher: Searcher, trial_id: str) -> None:
    """A draw over the budget as a user's trainable would end it: at once, at 0 accuracy."""
    searcher.on_trial_complete(trial_id, {METRIC: 0.0, TIME_ATTR: 0, "done_training": True, f"best_{METRIC}": 0.0})


def make(variant: str, setup: ReplaySetup) -> Strategy:
    """The strategy named ``variant`` (one of :data:`VARIANTS`)."""
    name, asha = variant.removesuffix(NO_ASHA), not variant.endswith(NO_ASHA)
    if name in ("pdsweep", "random", "grid"):
        return pdsweep_strategy(setup, None if name == "pdsweep" else name, asha)
    if name == "by_hand":
        return by_hand(setup, asha)
    return {"hyperband": hyperband, "bohb": bohb, "optuna_hyperband": optuna_hyperband, "dehb": dehb}[name](setup)


def pdsweep_strategy(setup: ReplaySetup, search: str | None, asha: bool) -> Strategy:
    """What ``pdsweep run`` builds (``pdsweep.sweep.tuners.search_tuner``) for one tier, from
    :class:`SweepSettings`' defaults; ``search``: None for its default search."""
    from pdsweep.cost import Budget
    from pdsweep.sweep.schedulers import search_scheduler
    from pdsweep.sweep.searcher import BudgetSearcher
    from pdsweep.sweep.spec import TrialContext, TrialSpec
    from pdsweep.sweep.store import SweepStore

    space = setup.bench.space
    chosen = {"search": search} if search else {}
    settings = SweepSettings(name="replay", budgets=(setup.tier,), trials=setup.trials, concurrency=setup.concurrency,
                             **chosen, **({} if asha else {"scheduler": "none"}))  # type: ignore[arg-type]
    # A folder of its own: a study found there would carry another replay's trials.
    store = SweepStore(tempfile.mkdtemp(dir=setup.folder), "replay")
    store.local_dir.mkdir(parents=True)
    searcher = BudgetSearcher(space, [Budget(g) for g in settings.budgets], search=settings.search, trials=settings.trials,
                              policy=settings.policy, seed=setup.seed, store=store,
                              context=TrialContext(space.training, "table", split_seed=0),
                              num_classes=setup.bench.num_classes, concurrency=setup.concurrency)

    def to_config(suggestion: dict[str, Any]) -> tuple[str, int]:
        spec = TrialSpec.from_dict(suggestion)
        return spec.config.name, spec.seed - space.training.seed

    return Strategy(searcher, search_scheduler(settings, space.training, store=None), to_config,
                    searcher.total_trials, penalise_untrained)


def choices(space: SearchSpace) -> dict[str, list[Any]]:
    """The axes a user would search: each listed axis with more than one value."""
    return {name: list(axis.values()) for name, axis in space.axes.items() if len(axis.values()) > 1}


def plain(value: Any) -> Any:
    """A numpy scalar (BOHB's draws) as the Python value a Config takes."""
    return value.item() if hasattr(value, "item") else value


def table_config(setup: ReplaySetup) -> Callable[[dict[str, Any]], tuple[str, int] | None]:
    """A peer's suggestion (values of :func:`choices`) as a config of the table, or None over the
    budget: the tier's cost is what pdsweep's own sampler computes, so every strategy sees the same
    configs as feasible."""
    from pdsweep.config import Config
    from pdsweep.cost import train_gflops

    bench = setup.bench
    fixed = {name: axis.values()[0] for name, axis in bench.space.axes.items() if len(axis.values()) == 1}

    def to_config(suggestion: dict[str, Any]) -> tuple[str, int] | None:
        values = {name: plain(value) for name, value in suggestion.items() if name in bench.space.axes}
        config = Config(**{**fixed, **values, "num_classes": bench.num_classes})
        return (config.name, 0) if train_gflops(config) <= setup.tier else None

    return to_config


def optuna_search(setup: ReplaySetup) -> Searcher:
    """Ray Tune's ``OptunaSearch`` over a ``tune.choice`` per axis, TPE with Optuna's defaults."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    axes = {name: tune.choice(values) for name, values in choices(setup.bench.space).items()}
    return OptunaSearch(OptunaSearch.convert_search_space(axes), metric=METRIC, mode="max",
                        sampler=optuna.samplers.TPESampler(seed=setup.seed))


def by_hand(setup: ReplaySetup, asha: bool) -> Strategy:
    from ray.tune.schedulers import AsyncHyperBandScheduler

    scheduler = (AsyncHyperBandScheduler(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=setup.bench.epochs,
                                         grace_period=1, reduction_factor=2) if asha else FIFOScheduler())
    return Strategy(optuna_search(setup), scheduler, table_config(setup), setup.trials, penalise_untrained)


def hyperband(setup: ReplaySetup) -> Strategy:
    from ray.tune.schedulers import HyperBandScheduler

    scheduler = HyperBandScheduler(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=setup.bench.epochs)
    return Strategy(optuna_search(setup), scheduler, table_config(setup), setup.trials, penalise_untrained)


def bohb(setup: ReplaySetup) -> Strategy:
    import logging
    import warnings

    import numpy as np
    from ray import tune
    from ray.tune.schedulers import HyperBandForBOHB
    from ray.tune.search.bohb import TuneBOHB

    class QuietBOHB(TuneBOHB):
        """TuneBOHB without numpy's warnings: its KDE (statsmodels' Aitchison-Aitken kernel) divides
        by zero on an axis whose good configs all share one value, and BOHB scores such a draw at
        its floor (1e-32), as it would anywhere."""

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            with np.errstate(divide="ignore", invalid="ignore"):
                return super().suggest(trial_id)

    # hpbandster logs a warning for every draw its KDE cannot score, calls ConfigSpace's deprecated
    # names (get_dictionary, on ConfigSpace 1.x), and statsmodels warns of a change to its seeding.
    logging.getLogger("hpbandster").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="hpbandster")
    warnings.filterwarnings("ignore", category=FutureWarning, message="After 0.17 or January 2028")
    # hpbandster's BOHB draws from numpy's global generator; TuneBOHB's seed only seeds ConfigSpace.
    np.random.seed(setup.seed)
    epochs = setup.bench.epochs
    axes = TuneBOHB.convert_search_space({name: tune.choice(v) for name, v in choices(setup.bench.space).items()})
    searcher = QuietBOHB(axes, metric=METRIC, mode="max", seed=setup.seed)
    scheduler = HyperBandForBOHB(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=epochs)

    def penalise(bohb_searcher: Searcher, trial_id: str) -> None:
        # BOHB learns from results that carry HyperBandForBOHB's budget, not from completions.
        bohb_searcher.on_trial_result(trial_id, {METRIC: 0.0, TIME_ATTR: 0, "hyperband_info": {"budget": epochs}})
        bohb_searcher.on_trial_complete(trial_id)

    return Strategy(searcher, scheduler, table_config(setup), setup.trials, penalise)


class AskTell(Protocol):
    def decide(self, trial_id: str, result: dict[str, Any]) -> str: ...


class AskTellStopping(FIFOScheduler):
    """The scheduler's place in Tune's loop for an ask-and-tell optimiser: each epoch's result goes
    to it, and it says whether the trial goes on."""

    def __init__(self, optimiser: AskTell) -> None:
        super().__init__()
        self.optimiser = optimiser

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        return self.optimiser.decide(trial.trial_id, result)


class OptunaPruning(Searcher):
    """Optuna's TPE with its Hyperband pruner, by ask and tell: every epoch's accuracy reported,
    the trial stopped once ``should_prune()``; a pruned trial told as pruned, a finished one as
    complete with its best accuracy (Optuna's "Efficient Optimization Algorithms" tutorial: for
    ``TPESampler``, ``HyperbandPruner``)."""

    def __init__(self, axes: dict[str, list[Any]], epochs: int, seed: int) -> None:
        import optuna

        super().__init__(metric=METRIC, mode="max")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.axes = axes
        # HyperbandPruner assigns a trial's bracket by a hash of the study's name (Optuna's docs ask
        # for one for reproducible runs): named by the seed, a replay repeats.
        self.study = optuna.create_study(study_name=f"optuna_hyperband-{seed}", direction="maximize",
                                         sampler=optuna.samplers.TPESampler(seed=seed),
                                         pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs))
        self.trials: dict[str, Any] = {}  # Ray trial id -> optuna.Trial

    def suggest(self, trial_id: str) -> dict[str, Any]:
        trial = self.trials[trial_id] = self.study.ask()
        return {name: trial.suggest_categorical(name, values) for name, values in self.axes.items()}

    def decide(self, trial_id: str, result: dict[str, Any]) -> str:
        trial = self.trials[trial_id]
        trial.report(result[METRIC], step=result[TIME_ATTR])
        return TrialScheduler.STOP if trial.should_prune() else TrialScheduler.CONTINUE

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        trial = self.trials.pop(trial_id)
        if error or not result:
            self.study.tell(trial, state=TrialState.FAIL)
        elif result.get("done_training"):
            self.study.tell(trial, result[f"best_{METRIC}"])
        else:
            self.study.tell(trial, state=TrialState.PRUNED)


def optuna_hyperband(setup: ReplaySetup) -> Strategy:
    searcher = OptunaPruning(choices(setup.bench.space), setup.bench.epochs, setup.seed)
    return Strategy(searcher, AskTellStopping(searcher), table_config(setup), setup.trials, penalise_untrained)


class DEHBSearch(Searcher):
    """DEHB by ask and tell (``DEHB.ask()`` gives a job: a config and a fidelity; ``DEHB.tell(job,
    {"fitness", "cost"})``, dehb 0.1.2): the trial trains the job's config from scratch for its
    fidelity in whole epochs, then DEHB is told 1 - its validation accuracy."""

    def __init__(self, axes: dict[str, list[Any]], epochs: int, seed: int, folder: Path) -> None:
        from ConfigSpace import CategoricalHyperparameter, ConfigurationSpace

        super().__init__(metric=METRIC, mode="max")
        space = ConfigurationSpace(seed=seed)
        space.add([CategoricalHyperparameter(name, values) for name, values in axes.items()])
        # DEHB's logger writes to the stdout it finds when built; --json prints the summary there.
        with contextlib.redirect_stdout(sys.stderr):
            from dehb import DEHB

            self.dehb = DEHB(cs=space, min_fidelity=1, max_fidelity=epochs, n_workers=1, seed=seed,
                             output_path=str(folder), log_level="WARNING", save_freq=None)
        self.jobs: dict[str, dict[str, Any]] = {}  # Ray trial id -> DEHB's job

    def suggest(self, trial_id: str) -> dict[str, Any]:
        job = self.jobs[trial_id] = self.dehb.ask()
        return dict(job["config"])

    def decide(self, trial_id: str, result: dict[str, Any]) -> str:
        fidelity = max(1, round(self.jobs[trial_id]["fidelity"]))
        return TrialScheduler.STOP if result[TIME_ATTR] >= fidelity else TrialScheduler.CONTINUE

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        accuracy = 0.0 if error or not result else float(result[METRIC])
        epochs = float((result or {}).get(TIME_ATTR, 0))
        self.dehb.tell(self.jobs.pop(trial_id), {"fitness": 1.0 - accuracy, "cost": epochs})


def dehb(setup: ReplaySetup) -> Strategy:
    searcher = DEHBSearch(choices(setup.bench.space), setup.bench.epochs, setup.seed, Path(tempfile.mkdtemp(dir=setup.folder)))
    return Strategy(searcher, AskTellStopping(searcher), table_config(setup), setup.trials, penalise_untrained)


# ---- the replay: Tune's event loop on a simulated clock ------------------------------------


@dataclass(eq=False)  # hashed by identity, as Tune's trials are: Ray's HyperBand keys its brackets by trial
class ReplayTrial:
    trial_id: str
    config: dict[str, Any]  # Tune's config dict: the tier and the searcher's suggestion
    name: str
    run: Run
    status: str = Trial.PENDING
    epoch: int = 0  # epochs trained
    last_result: dict[str, Any] = field(default_factory=dict)
    is_saving: bool = False  # read by Ray's HyperBand; a replayed trial saves at once


@dataclass
class Replay:
    compute: list[float] = field(default_factory=list)  # TFLOP spent when each trial ended
    regret: list[float] = field(default_factory=list)  # regret (points) of the reported config then
    total: float = 0.0
    trials: int = 0
    distinct: int = 0

    def compute_to(self, points: float) -> float:
        return next((c for c, r in zip(self.compute, self.regret) if r <= points), math.inf)


class Replayer:
    """The part of Tune's ``TuneController`` (ray/tune/execution/tune_controller.py, Ray 2.60)
    that searchers and schedulers see: each step asks the searcher for trials while fewer than
    ``concurrency`` wait to start, starts those the scheduler chooses while a slot is free, then
    hands the next epoch's result to the scheduler and acts on its decision; ``stop_trial`` and
    ``get_trials`` are the controller's own, for the schedulers that call them."""

    def __init__(self, bench: Bench, strategy: Strategy, tier: float, seed: int, concurrency: int, horizon: float) -> None:
        self.table, self.strategy, self.tier, self.seed = bench.table, strategy, tier, seed
        self.concurrency, self.horizon = concurrency, horizon
        # What TuneConfig(max_concurrent_trials=concurrency) wraps a searcher in.
        self.searcher = ConcurrencyLimiter(strategy.searcher, max_concurrent=concurrency)
        self.search_alg = SimpleNamespace(searcher=self.searcher)  # HyperBandForBOHB tells the searcher of pauses here
        self.scheduler = strategy.scheduler
        self.best_truth = self.table.best(tier)[1]
        self.clock, self.spent, self.drawn, self.rejected, self.ticks = 0.0, 0.0, 0, 0, 0
        self.searching = True
        self.live: dict[str, ReplayTrial] = {}  # trials not ended, in the order they were added
        self.events: list[tuple[float, int, str]] = []  # (time an epoch ends, tie-break, trial id)
        self.finished: list[tuple[float, str]] = []  # (best validation accuracy, config) of ended trials
        self.names: set[str] = set()
        self.out = Replay()

    def run(self) -> Replay:
        while True:
            self.add_trials()
            self.start_trials()
            if not self.events:
                # Nothing runs and nothing can start: a trial still paused waits for a bracket that
                # will not fill. Tune would wait forever; the replay stops it, as the end of the experiment.
                paused = [t for t in self.live.values() if t.status == Trial.PAUSED]
                if not paused:
                    break
                for trial in paused:
                    self.stop_trial(trial)
                continue
            self.next_result()
        self.out.total, self.out.distinct = self.spent, len(self.names)
        return self.out

    # Tune's controller, as the schedulers call it
    def get_trials(self) -> list[ReplayTrial]:
        return list(self.live.values())  # Tune's holds the ended trials too, which no scheduler here looks for

    def stop_trial(self, trial: ReplayTrial) -> None:
        """As ``TuneController.stop_trial``: a waiting trial is removed, a running one completes."""
        if trial.status == Trial.TERMINATED:
            return
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
            self.searcher.on_trial_complete(trial.trial_id)
        elif trial.status == Trial.RUNNING:
            self.scheduler.on_trial_complete(self, trial, trial.last_result)
            self.searcher.on_trial_complete(trial.trial_id, result=trial.last_result)
        self.end(trial)

    # the loop
    def add_trials(self) -> None:
        """Ask the searcher for trials while fewer than ``concurrency`` wait (``max_pending_trials``
        under a ConcurrencyLimiter); none once the horizon is spent or the trials are issued."""
        while self.searching and sum(t.status == Trial.PENDING for t in self.live.values()) < self.concurrency:
            if self.spent >= self.horizon or self.out.trials >= self.strategy.num_samples:
                self.searching = False
                break
            trial_id = f"t{self.drawn:05d}"
            self.drawn += 1
            suggestion = self.searcher.suggest(trial_id)
            if suggestion is None:  # at its concurrency limit: asked again once a trial ends
                break
            if suggestion is Searcher.FINISHED:
                self.searching = False
                break
            target = self.strategy.to_config(suggestion)
            if target is None:  # over the budget: penalised without training, drawn again
                self.strategy.penalise(self.searcher, trial_id)
                self.rejected += 1
                self.searching = self.rejected < MAX_REJECTED
                continue
            self.rejected = 0
            name, replicate = target
            trial = ReplayTrial(trial_id, {"tier": self.tier, **suggestion}, name, self.table.run(name, replicate, self.seed))
            self.live[trial_id] = trial
            self.out.trials += 1
            self.names.add(name)
            self.scheduler.on_trial_add(self, trial)

    def start_trials(self) -> None:
        while sum(t.status == Trial.RUNNING for t in self.live.values()) < self.concurrency:
            trial = self.scheduler.choose_trial_to_run(self)
            if trial is None:
                break
            trial.status = Trial.RUNNING
            if trial.epoch == len(trial.run.val):  # paused after its last epoch: resumed, it returns
                self.complete(trial)
            else:
                self.schedule(trial)

    def schedule(self, trial: ReplayTrial) -> None:
        self.ticks += 1
        heapq.heappush(self.events, (self.clock + trial.run.seconds[trial.epoch], self.ticks, trial.trial_id))

    def next_result(self) -> None:
        self.clock, _, trial_id = heapq.heappop(self.events)
        trial = self.live.get(trial_id)
        if trial is None or trial.status != Trial.RUNNING:  # stopped by the scheduler while it trained
            return
        trial.epoch += 1
        self.spent += self.table.tflop(trial.name, 1)
        result = {TIME_ATTR: trial.epoch, METRIC: trial.run.val[trial.epoch - 1], "tier": self.tier,
                  "training_iteration": trial.epoch}
        trial.last_result = result
        decision = self.scheduler.on_trial_result(self, trial, result)
        if decision != TrialScheduler.STOP:
            self.searcher.on_trial_result(trial_id, result)
        if decision == TrialScheduler.STOP:
            self.stop_trial(trial)
        elif decision == TrialScheduler.PAUSE:
            trial.status = Trial.PAUSED
        elif trial.epoch == len(trial.run.val):
            self.complete(trial)
        else:
            self.schedule(trial)

    def complete(self, trial: ReplayTrial) -> None:
        """The trainable's final report after its last epoch."""
        result = {**trial.last_result, "done_training": True, f"best_{METRIC}": max(trial.run.val)}
        self.scheduler.on_trial_complete(self, trial, result)
        self.searcher.on_trial_complete(trial.trial_id, result)
        self.end(trial)

    def end(self, trial: ReplayTrial) -> None:
        trial.status = Trial.TERMINATED
        del self.live[trial.trial_id]
        if trial.epoch:
            self.finished.append((max(trial.run.val[: trial.epoch]), trial.name))
        if self.finished:
            reported = max(self.finished)[1]
            self.out.compute.append(self.spent)
            self.out.regret.append(100 * (self.best_truth - self.table.truth(reported)))


def replay(bench: Bench, variant: str, tier: float, seed: int, trials: int, concurrency: int,
           folder: Path, horizon: float = math.inf) -> Replay:
    """One replay of ``variant`` (one of :data:`VARIANTS`); no trial is issued once ``horizon`` TFLOP are spent."""
    strategy = make(variant, ReplaySetup(bench, tier, seed, trials, concurrency, folder))
    return Replayer(bench, strategy, tier, seed, concurrency, horizon).run()


# ---- the summary ------------------------------------------------------------------------------


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
        worst = 100 * (table.best(tier)[1] - min(table.truth(name) for name in table.fitting(tier)))
        for name, replays in by_strategy.items():
            axis.plot(grid, curve(replays, grid, worst), label=name, color=colours[name.removesuffix(NO_ASHA)],
                      linestyle="--" if name.endswith(NO_ASHA) else "-")
        axis.axhline(REGRET_POINTS, color="grey", linewidth=0.8)
        axis.set(title=f"{table.path.stem}, tier {tier:g} GFLOPs", xlabel="compute spent (TFLOP)",
                 ylabel="median regret (points)", xscale="log")
        axis.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def shown(path: Path) -> str:
    """A path as the markdown and the JSON show it: from the repository root when inside it."""
    root = HERE.parent
    return str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else str(path)


def markdown(summary: dict[str, Any], bench: Bench) -> str:
    settings, table = summary["settings"], bench.table
    key = f"median_compute_to_regret_{REGRET_POINTS:g}"
    flags = f"--table {settings['table']}" + (f" --strategies {','.join(settings['strategies'])}"
                                              if tuple(settings["strategies"]) != VARIANTS else "")
    lines = [
        f"## Search against ground truth on `{settings['table']}` (`python bench/search.py {flags}`, "
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()} CPU)",
        "",
        f"Replays of `{settings['table']}` ({table.meta.get('dataset', '?')}; {len(table.runs)} configs x "
        f"{table.meta.get('seeds', '?')} seeds, {table.epochs} epochs each; space `{settings['space']}`) with the "
        f"real searchers and schedulers driven by a stand-in for Tune's controller, {settings['seeds']} replay "
        f"seeds ({settings['first_seed']}-{settings['first_seed'] + settings['seeds'] - 1}), {settings['concurrency']} trials at a time. pdsweep, random and grid: `pdsweep run`'s searcher "
        "and the scheduler it builds by default (`search_scheduler` from `SweepSettings`' defaults); by_hand: "
        "Ray Tune's OptunaSearch over every axis with Ray's ASHA "
        "(grace 1, reduction 2); *_no_asha: the same without a scheduler. Peers: hyperband (OptunaSearch with "
        "Ray's synchronous HyperBandScheduler, pausing trials), bohb (Ray's TuneBOHB with HyperBandForBOHB), "
        "optuna_hyperband (Optuna's TPESampler with HyperbandPruner, by ask and tell), dehb (DEHB by ask and "
        "tell, each job trained from scratch for its fidelity rounded to whole epochs); a draw over the "
        "budget is told as 0 accuracy, untrained, and drawn again. Compute in TFLOP as the sweep's ledger "
        "counts it (train GFLOPs x 3 x images x epochs run); regret in points of validation accuracy. "
        "*To regret 0.5*: the median compute spent until the reported config is within 0.5 points of the "
        "tier's best, each strategy running until its search ends or it has spent twice what training every "
        "config that fits costs (a seed that never gets there counts as infinite; *never* when the median "
        f"is, with the median total in brackets). *At N trials*: a sweep of `--trials {settings['trials']}`: "
        "the share of seeds whose reported config is within 0.5 points, and the median regret and compute. "
        f"Plot (anytime, median over seeds): `{settings['plot']}`.",
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


# ---- the command --------------------------------------------------------------------------


def tier_list(text: str) -> tuple[float, ...]:
    try:
        tiers = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"tiers are GFLOPs separated by commas, e.g. 0.004,0.01; got {text!r}") from None
    if not all(math.isfinite(t) and t > 0 for t in tiers):
        raise argparse.ArgumentTypeError(f"every tier must be a positive number of GFLOPs; got {text!r}")
    return tiers


def strategy_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        named = ", ".join(unknown) if unknown else repr(text)
        raise argparse.ArgumentTypeError(f"unknown strategy {named}; choose from {', '.join(VARIANTS)}")
    return names


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a positive integer was expected, got {text!r}")
    return int(text)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="the tabular benchmark (default: %(default)s)")
    parser.add_argument("--space", type=Path, help="its space file (default: the one its metadata names, beside it)")
    parser.add_argument("--tiers", type=tier_list, help="GFLOPs, comma-separated (default: the table's metadata)")
    parser.add_argument("--num-classes", type=positive,
                        help="classes of the table's dataset, to cost configs (default: its metadata's, else 10)")
    parser.add_argument("--seeds", type=positive, help="replays per strategy and tier (default: 50; 10 with --quick)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first replay seed (default 0): replay seeds a default was not chosen on")
    parser.add_argument("--trials", type=positive, default=SweepSettings.trials,
                        help="trials per tier for every strategy but grid (default: pdsweep run's, %(default)s)")
    parser.add_argument("--concurrency", type=positive, default=2)
    parser.add_argument("--strategies", type=strategy_list,
                        help=f"comma-separated, from {', '.join(VARIANTS)} (default: all; with --quick, none *{NO_ASHA})")
    parser.add_argument("--quick", action="store_true", help="10 seeds, without the *_no_asha variants: minutes")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-record", action="store_true", help="neither bench/RESULTS.md nor the plot")
    return parser.parse_args(argv)


def replay_all(bench: Bench, tiers: Sequence[float], variants: Sequence[str], seeds: range, trials: int,
               concurrency: int) -> tuple[dict[float, dict[str, list[Replay]]], dict[float, dict[str, list[Replay]]], dict[float, float]]:
    """Per tier and variant: the anytime replays, the replays of ``trials`` trials, and each tier's horizon."""
    anytime: dict[float, dict[str, list[Replay]]] = {}
    default: dict[float, dict[str, list[Replay]]] = {}
    horizons = {}
    with tempfile.TemporaryDirectory(prefix="pdsweep-search-") as scratch:
        folder = Path(scratch)
        for tier in tiers:
            # Long enough for any strategy to get there: twice the compute of training every config that fits.
            horizons[tier] = 2 * sum(bench.table.tflop(name, bench.table.epochs) for name in bench.table.fitting(tier))
            for variant in variants:
                started = time.perf_counter()
                runs = seeds[:1] if variant == f"grid{NO_ASHA}" else seeds  # a grid without ASHA is one fixed order
                anytime.setdefault(tier, {})[variant] = [
                    replay(bench, variant, tier, seed, UNLIMITED, concurrency, folder, horizons[tier]) for seed in runs
                ]
                default.setdefault(tier, {})[variant] = anytime[tier][variant] if variant.startswith("grid") else [
                    replay(bench, variant, tier, seed, trials, concurrency, folder) for seed in runs
                ]
                print(f"tier {tier:g} {variant}: {len(runs)} seeds in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return anytime, default, horizons


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    variants = args.strategies or tuple(v for v in VARIANTS if not (args.quick and v.endswith(NO_ASHA)))
    try:
        check_installed(variants)
        bench, tiers = open_bench(args.table, args.space, args.tiers, args.num_classes)
    except BenchError as error:
        raise SystemExit(f"search.py: {error}") from None
    seeds = range(args.first_seed, args.first_seed + (args.seeds or (10 if args.quick else 50)))
    # Replays of other seeds are recorded apart, so a default's in-sample figures are never overwritten.
    stem = bench.table.path.stem + (f"-seeds{seeds.start}-{seeds.stop - 1}" if seeds.start else "")
    started = time.perf_counter()
    try:
        anytime, default, horizons = replay_all(bench, tiers, variants, seeds, args.trials, args.concurrency)
    except BenchError as error:
        raise SystemExit(f"search.py: {error}") from None
    summary: dict[str, Any] = {"tiers": {
        f"{tier:g}": {name: summarise(replays, default[tier][name]) for name, replays in by_name.items()}
        for tier, by_name in anytime.items()
    }}
    summary["settings"] = {
        "table": shown(bench.table.path), "space": shown(bench.space_path), "tiers": list(tiers),
        "strategies": list(variants), "seeds": len(seeds), "first_seed": seeds.start, "trials": args.trials, "concurrency": args.concurrency,
        "num_classes": bench.num_classes, "regret_points": REGRET_POINTS,
        "horizon_tflop": {f"{t:g}": round(h, 3) for t, h in horizons.items()}, "table_metadata": bench.table.meta,
        "plot": shown(HERE / f"search-{stem}.png"), "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    text = markdown(summary, bench)
    if not args.json:
        print(text)
    if not args.no_record and not args.quick:
        if not seeds.start:
            plot(bench.table, anytime, HERE / f"search-{stem}.png")
        record(f"search-{stem}", text)


if __name__ == "__main__":
    main()
