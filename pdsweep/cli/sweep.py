"""``pdsweep run`` and ``pdsweep resume``: a sweep on Ray Tune."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from pdsweep.cli._base import (Command, choices, dataset_with_window, default, json_flag, non_negative_float, positive_float,
                               metric_flag, runs_dir_flag, window_flag, with_metric)

if TYPE_CHECKING:
    from pdsweep.sweep import SweepOutcome


class Run(Command):
    name = "run"
    help = "a budget-constrained sweep on Ray Tune"
    description = ("Search a space for the most accurate config within each budget tier: Ray Tune trials (local "
                   "Ray, or --address), Optuna TPE, ASHA early stopping; results in RUNS_DIR/NAME/results.parquet.")
    groups = ("budgets",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from pdsweep.results import TOP_K
        from pdsweep.sweep.sampler import SearchKind
        from pdsweep.sweep.settings import SchedulerName, SweepSettings

        def of(name: str) -> Any:
            return default(SweepSettings, name)

        parser.add_argument("--search", choices=choices(SearchKind), default=of("search"),
                            help="tpe (default), random, or grid: every feasible config once")
        parser.add_argument("--trials", type=int, default=of("trials"),
                            help="trials per budget tier (default %(default)s; grid ignores it)")
        parser.add_argument("--concurrency", type=int, help="trials at once (default: what the cluster's resources allow)")
        parser.add_argument("--scheduler", choices=choices(SchedulerName),
                            help="early stopping (default asha; a space of listed configs: none, every config "
                                 "trains to the end)")
        parser.add_argument("--grace-period", type=int, default=of("grace_period"), metavar="EPOCHS",
                            help="the first epoch at which ASHA may stop a trial (default: a quarter of the epochs); "
                                 "never before warm-up ends, and a trial is only compared with trials at its keep "
                                 "rate or lower")
        parser.add_argument("--reduction-factor", type=float, default=of("reduction_factor"),
                            help="ASHA's reduction factor (default %(default)g)")
        parser.add_argument("--repeats", type=int, default=of("repeats"),
                            help="re-train each tier's top configs (--top-k) with R-1 more seeds; the report gives "
                                 "each a bootstrap interval and says whether the winner is separated or tied")
        parser.add_argument("--top-k", type=int, default=of("top_k"), metavar="K",
                            help=f"configs per tier that --repeats re-trains (default {TOP_K}; a space of listed "
                                 "configs re-trains every one and takes no --top-k)")
        parser.add_argument("--max-tflop", type=positive_float, metavar="X",
                            help="stop issuing trials when the next would take the sweep's training compute past "
                                 "X TFLOP (running trials, counted at their full epochs, finish)")
        parser.add_argument("--max-device-hours", type=positive_float, metavar="H",
                            help="the same for device-hours: seconds run x the GPUs (or else CPUs) a trial holds")
        parser.add_argument("--no-estimate", action="store_true",
                            help="skip the pre-flight's measured wall-time estimate (a few seconds of training steps)")
        parser.add_argument("--dataset", default=of("dataset"),
                            help="synthetic[:N] (default), folder:PATH, npz:PATH, parquet:PATH, csv:PATH (a manifest)")
        window_flag(parser)
        metric_flag(parser)
        parser.add_argument("--name", help="sweep name (default: a timestamp)")
        runs_dir_flag(parser)
        parser.add_argument("--address", help="a Ray cluster (HOST:PORT, ray://HOST:PORT or auto); default: a local Ray")
        parser.add_argument("--cpus-per-trial", type=int, default=of("cpus_per_trial"),
                            help="CPUs per trial (default %(default)s)")
        parser.add_argument("--gpu-memory-gb", type=positive_float, help="memory of one GPU, to size GPU shares")
        parser.add_argument("--resource-timeout", type=positive_float, default=of("resource_timeout_s") / 60,
                            metavar="MINUTES", help="when no trial runs and some wait for a node this long (an "
                            "autoscaling cluster that adds none), stop; `pdsweep resume` continues (default: %(default)g)")
        parser.add_argument("--max-failures", type=int, default=of("max_failures"),
                            help="retries of a trial whose worker or node was lost, from its last checkpoint "
                                 "(default %(default)s); a trial that fails in its own code, runs out of memory or "
                                 "diverges is recorded, not retried")
        parser.add_argument("--checkpoint-every-s", type=non_negative_float, default=of("checkpoint_every_s"),
                            metavar="S", help="a trial saves a checkpoint at the first epoch end S seconds after its "
                                              "last (default %(default)g; 0: every epoch): a retried or resumed "
                                              "trial redoes at most S seconds, and the driver saves Ray Tune's state "
                                              "at each checkpoint")
        parser.add_argument("--trial-memory-cap-gb", type=positive_float, metavar="GB",
                            help="let each trial's process grow by at most GB of memory (Linux, CPU workers); "
                                 "a trial past it ends `oom` instead of pushing the node into swap")
        parser.add_argument("--fresh-actors", action="store_true",
                            help="start a new Ray actor for every trial (Tune's reuse_actors off): each trial costs "
                                 "seconds more, and no trial lands on a worker that a finished one left warm")
        parser.add_argument("--cache-dir", metavar="DIR", help="dataset cache on every node")
        parser.add_argument("--weights-cache", metavar="DIR",
                            help="the Hugging Face hub cache pretrained weights are read from, on every node (default "
                                 "$HF_HUB_CACHE or $HF_HOME/hub); fill it with `pdsweep weights fetch SPACE`")
        parser.add_argument("--mlflow-uri", help="an MLflow tracking server or store (default: SQLite at RUNS_DIR/mlflow.db)")
        parser.add_argument("--experiment", help="MLflow experiment name (default: the space's name)")
        parser.add_argument("--verbose", action="store_true", help="Ray Tune's own progress tables and worker logs")
        parser.add_argument("--dry-run", action="store_true",
                            help="every check and the pre-flight (costs, trials, compute), then stop: nothing is written")
        json_flag(parser, "print the per-tier summary as JSON")

    def take_action(self, args: argparse.Namespace) -> int:
        from pdsweep.sweep import SweepSettings, check_sweep, default_name, run_sweep

        settings = SweepSettings(
            name=args.name or default_name(), space=args.space, overrides=with_metric(args.overrides, args.metric),
            budgets=tuple(args.budget_gflops or ()),  # none: a space of listed configs runs them all
            memory_gb=args.budget_memory_gb, policy=args.keep_policy, search=args.search, trials=args.trials,
            concurrency=args.concurrency, scheduler=args.scheduler, grace_period=args.grace_period,
            reduction_factor=args.reduction_factor, repeats=args.repeats, top_k=args.top_k, max_tflop=args.max_tflop,
            max_device_hours=args.max_device_hours, estimate=not args.no_estimate,
            dataset=dataset_with_window(args.dataset, args.window),
            runs_dir=args.runs_dir, address=args.address, cpus_per_trial=args.cpus_per_trial,
            gpu_memory_gb=args.gpu_memory_gb, max_failures=args.max_failures, cache_dir=args.cache_dir,
            checkpoint_every_s=args.checkpoint_every_s, resource_timeout_s=args.resource_timeout * 60,
            weights_cache=args.weights_cache,
            trial_memory_cap_gb=args.trial_memory_cap_gb,
            reuse_actors=not args.fresh_actors, verbose=args.verbose, mlflow_uri=args.mlflow_uri,
            experiment=args.experiment,
        )
        if args.dry_run:
            planned = check_sweep(settings)
            print("dry run: every check passed; nothing was written to the runs dir or MLflow and no trial started "
                  "(drop --dry-run to start).",
                  file=sys.stderr)
            if args.json:
                print(json.dumps({"sweep": settings.name, "dry_run": True, "planned_tflop": planned.planned_tflop}))
            return 0
        return finish(run_sweep(settings, out=_quiet_if(args.json)), args.json)


class Resume(Command):
    name = "resume"
    help = "continue a sweep whose driver stopped"
    description = ("Continue sweep NAME: finished trials are kept, unfinished ones resume from their checkpoints, "
                   "and the remaining planned trials run once.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="the sweep's name")
        runs_dir_flag(parser)
        parser.add_argument("--address", help="a Ray cluster to continue on (default: as the sweep was started)")
        parser.add_argument("--mlflow-uri", help="log to this tracking store from now on (the finished trials are "
                                                 "back-filled into it), e.g. when the sweep's own cannot be reached")
        parser.add_argument("--no-mlflow", action="store_true",
                            help="log nothing to MLflow now; `pdsweep report --to-mlflow NAME` back-fills later")
        parser.add_argument("--trust", action="store_true",
                            help="resume from a sweep folder other users can write (its Ray Tune state is unpickled)")
        parser.add_argument("--weights-cache", metavar="DIR",
                            help="read the pretrained weights from this cache from now on (on every node; they must "
                                 "be the files the sweep checked when it started)")
        parser.add_argument("--resource-timeout", type=positive_float, metavar="MINUTES",
                            help="a new limit on how long trials wait for a node (default: as the sweep was started)")
        json_flag(parser, "print the per-tier summary as JSON")

    def take_action(self, args: argparse.Namespace) -> int:
        from pdsweep.sweep import resume_sweep

        outcome = resume_sweep(args.name, args.runs_dir, address=args.address, mlflow_uri=args.mlflow_uri,
                               no_mlflow=args.no_mlflow, trust=args.trust, weights_cache=args.weights_cache,
                               resource_timeout_s=args.resource_timeout * 60 if args.resource_timeout else None,
                               out=_quiet_if(args.json))
        return finish(outcome, args.json)


def _quiet_if(flag: bool) -> Any:
    return (lambda line: None) if flag else print


def finish(outcome: SweepOutcome, as_json: bool) -> int:
    """Print the outcome as JSON if asked; the exit code: 1 if every trial failed, 130 if interrupted."""
    if as_json:
        summary = outcome.report.to_json() if outcome.report else {"sweep": outcome.name, "tiers": [], "pareto": []}
        print(json.dumps({**summary, "results": outcome.results_path, "trials": len(outcome.rows)}, indent=2))
    if outcome.all_failed:
        first = outcome.rows[0]
        print(f"pdsweep: every trial failed; the first ({first.status}): {first.error}", file=sys.stderr)
        return 1
    return 130 if outcome.interrupted else 0
