"""``pdsweep``: thin commands over the library. Parse, call one function, print, exit code.

Bad input (a flag, a value, a space file, a budget) prints one line naming the problem and the
fix, and exits 2 without a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from pdsweep.errors import PdsweepError

if TYPE_CHECKING:
    from pdsweep.config import Config
    from pdsweep.plan import Plan
    from pdsweep.space import SearchSpace


class _UsageError(Exception):
    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so every error is one line."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message, self.prog)

    def unrecognized(self, extra: list[str]) -> NoReturn:
        """Reject flags this (sub)command does not know, suggesting the nearest one."""
        options = [o for action in self._actions for o in action.option_strings]
        hint = ""
        for word in extra:
            close = difflib.get_close_matches(word.split("=")[0], options, n=1)
            if word.startswith("-") and close:
                hint = f" (did you mean {close[0]}?)"
                break
        self.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, got {text!r}")
    return value


def _budget_list(text: str) -> list[float]:
    """``17.6`` or budget tiers ``1.3,4.6,17.6``."""
    try:
        return [_positive_float(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number or comma-separated positive numbers such as 1.3,4.6,17.6, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    from pdsweep import __version__
    from pdsweep.config import OPTIMIZERS, PRECISIONS
    from pdsweep.presets import PRESETS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    parser = _Parser(
        prog="pdsweep",
        description="The most accurate PatchDropout ViT for a compute budget.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"pdsweep {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    one_config = argparse.ArgumentParser(add_help=False)  # flops and train: one config
    one_config.add_argument("--model", required=True, help=f"model preset: {', '.join(PRESETS)}")
    one_config.add_argument("--resolution", type=int, required=True, help="image side in pixels")
    one_config.add_argument("--patch-size", type=int, required=True, help="patch side in pixels")
    one_config.add_argument("--keep-rate", type=float, help="fraction of patches kept in training (default 1)")
    one_config.add_argument("--depth", type=int, help="transformer blocks (default: the preset's)")
    one_config.add_argument("--ensemble-size", type=int, default=1, help="ensemble members (default 1)")

    budgets = argparse.ArgumentParser(add_help=False)  # plan and run: a space under budget tiers
    budgets.add_argument("--budget-gflops", type=_budget_list, required=True, metavar="B[,B...]",
                         help="train GFLOPs per image; several comma-separated values are budget tiers")
    budgets.add_argument("--budget-memory-gb", type=_positive_float, metavar="M",
                         help="peak training memory cap in GB (10^9 bytes)")
    budgets.add_argument("--space", default="paper", help="a space file, or a bundled space name (default: paper)")
    budgets.add_argument("--keep-policy", choices=["fill", "search"], default="fill",
                         help="fill: the largest keep rate that fits (default); search: sampled below it")

    flops = commands.add_parser(
        "flops", parents=[common, one_config], help="train/inference GFLOPs and memory of one config",
        description="Train and inference GFLOPs per image (fvcore's convention) and peak "
        "training memory of one config, from the closed-form cost model.",
    )
    flops.add_argument("--num-classes", type=int, default=10, help="classes of the head (default 10)")
    flops.add_argument("--batch-size", type=int, default=64, help="batch size for memory (default 64)")
    flops.add_argument("--precision", choices=PRECISIONS, default="bf16-mixed", help="default bf16-mixed")
    flops.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="default adamw")
    flops.add_argument("--verify", action="store_true", help="also count the real timm model with fvcore")
    flops.add_argument("--json", action="store_true", help="print one JSON object")
    flops.set_defaults(handler=_cmd_flops)

    plan = commands.add_parser(
        "plan", parents=[common, budgets], help="every config of a space that fits a budget",
        description="Every config of a search space that fits the budget, at the keep rate the "
        "policy gives it, with its cost; cheapest first.",
    )
    plan.add_argument("--num-classes", type=int, default=10, help="classes of the head (default 10)")
    plan.add_argument("--json", action="store_true", help="print JSON")
    plan.set_defaults(handler=_cmd_plan)

    from pdsweep.config import KEEP_MODES, SAMPLINGS

    train = commands.add_parser(
        "train", parents=[common, one_config], help="train one config, no Ray",
        description="Train one config (a ViT or an ensemble, with PatchDropout) on a dataset and "
        "report validation and test accuracy and the robustness curve. Training settings come from "
        "--space's training section (default: pdsweep's defaults), overridden by the flags here.",
    )
    train.add_argument("--sampling", choices=SAMPLINGS, default="random", help="which patches survive (default random)")
    train.add_argument("--keep-mode", choices=KEEP_MODES, default="fixed",
                       help="fixed, or uniform: a keep rate drawn per iteration from --keep-range")
    train.add_argument("--keep-range", metavar="LOW,HIGH", help="keep-rate range for --keep-mode uniform, e.g. 0.5,1")
    train.add_argument("--dataset", default="synthetic",
                       help="synthetic[:N] (default), folder:PATH, npz:PATH or parquet:PATH")
    train.add_argument("--space", help="take training settings from this space file or name")
    train.add_argument("--epochs", type=int, help="epochs")
    train.add_argument("--batch-size", type=int, help="batch size")
    train.add_argument("--warmup-epochs", type=int, help="epochs of linear learning-rate warm-up")
    train.add_argument("--optimizer", choices=OPTIMIZERS, help="adamw or sgd (momentum 0.9)")
    train.add_argument("--lr", type=_positive_float, help="peak learning rate")
    train.add_argument("--weight-decay", type=float, help="weight decay")
    train.add_argument("--precision", choices=PRECISIONS, help="bf16-mixed (GPU; a CPU uses fp32) or fp32")
    train.add_argument("--seed", type=int, help="training seed (the data split keeps the space's seed)")
    train.add_argument("--no-augment", action="store_true", help="no crops, flips, rotations or colour jitter")
    train.add_argument("--pretrained", metavar="PATH", help="local timm weights (.safetensors or .pth)")
    train.add_argument("--checkpoint-dir", metavar="DIR", help="save a checkpoint each epoch; resume from it")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: a GPU if any")
    train.add_argument("--cache-dir", metavar="DIR", help="dataset cache (default $PDSWEEP_CACHE or ~/.cache/pdsweep)")
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.set_defaults(handler=_cmd_train)

    run = commands.add_parser(
        "run", parents=[common, budgets], help="a budget-constrained sweep on Ray Tune",
        description="Search a space for the most accurate config within each budget tier: Ray Tune "
        "trials (local Ray, or --address), Optuna TPE, ASHA early stopping; results in "
        "RUNS_DIR/NAME/results.parquet.",
    )
    run.add_argument("--search", choices=["tpe", "random", "grid"], default="tpe",
                     help="tpe (default), random, or grid: every feasible config once")
    run.add_argument("--trials", type=int, default=8, help="trials per budget tier (default 8; grid ignores it)")
    run.add_argument("--concurrency", type=int, help="trials at once (default: what the cluster's resources allow)")
    run.add_argument("--scheduler", choices=["asha", "none"], default="asha", help="early stopping (default asha)")
    run.add_argument("--grace-period", type=int, default=1, help="epochs before ASHA may stop a trial (default 1)")
    run.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA's reduction factor (default 2)")
    run.add_argument("--repeats", type=int, default=1, help="re-train each tier's best config with R-1 more seeds")
    run.add_argument("--dataset", default="synthetic", help="synthetic[:N] (default), folder:PATH, npz:PATH, parquet:PATH")
    run.add_argument("--name", help="sweep name (default: a timestamp)")
    run.add_argument("--runs-dir", default="pdsweep-runs", help="where sweeps are kept (default ./pdsweep-runs)")
    run.add_argument("--address", help="a Ray cluster (HOST:PORT, ray://HOST:PORT or auto); default: a local Ray")
    run.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs per trial (default 1)")
    run.add_argument("--gpu-memory-gb", type=_positive_float, help="memory of one GPU, to size GPU shares")
    run.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial (default 2)")
    run.add_argument("--fresh-actors", action="store_true",
                     help="start a new Ray actor for every trial (Tune's reuse_actors off): each trial costs "
                          "seconds more, and no trial lands on a worker that a finished one left warm")
    run.add_argument("--cache-dir", metavar="DIR", help="dataset cache on every node")
    run.add_argument("--mlflow-uri", help="an MLflow tracking server or store (default: SQLite at RUNS_DIR/mlflow.db)")
    run.add_argument("--experiment", help="MLflow experiment name (default: the space's name)")
    run.add_argument("--verbose", action="store_true", help="Ray Tune's own progress tables and worker logs")
    run.add_argument("--json", action="store_true", help="print the per-tier summary as JSON")
    run.set_defaults(handler=_cmd_run)

    resume = commands.add_parser(
        "resume", parents=[common], help="continue a sweep whose driver stopped",
        description="Continue sweep NAME: finished trials are kept, unfinished ones resume from their "
        "checkpoints, and the remaining planned trials run once.",
    )
    resume.add_argument("name", help="the sweep's name")
    resume.add_argument("--runs-dir", default="pdsweep-runs", help="where sweeps are kept (default ./pdsweep-runs)")
    resume.add_argument("--address", help="a Ray cluster to continue on (default: as the sweep was started)")
    resume.add_argument("--json", action="store_true", help="print the per-tier summary as JSON")
    resume.set_defaults(handler=_cmd_resume)

    report = commands.add_parser(
        "report", parents=[common], help="best config per budget tier, Pareto frontier, plot",
        description="Read a sweep's results.parquet and write report.md and report.png (best config per "
        "budget tier with runner-up and margin, Pareto frontiers, plot); log them to the sweep's MLflow "
        "parent run. Two names compare the sweeps side by side.",
    )
    report.add_argument("names", nargs="+", metavar="NAME", help="sweep name(s)")
    report.add_argument("--runs-dir", default="pdsweep-runs", help="where sweeps are kept (default ./pdsweep-runs)")
    report.add_argument("--out", metavar="DIR", help="where to write report.md and report.png (default: the sweep folder)")
    report.add_argument("--to-mlflow", action="store_true", help="back-fill MLflow with trials it is missing")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.set_defaults(handler=_cmd_report)

    ui = commands.add_parser(
        "ui", parents=[common], help="the MLflow UI for the sweeps' tracking store",
        description="Start the MLflow UI on 127.0.0.1 for the tracking store of --runs-dir (or --mlflow-uri) "
        "and print its URL; stop it with Ctrl-C.",
    )
    ui.add_argument("--runs-dir", default="pdsweep-runs", help="where sweeps are kept (default ./pdsweep-runs)")
    ui.add_argument("--mlflow-uri", help="a tracking store other than RUNS_DIR/mlflow.db")
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    ui.set_defaults(handler=_cmd_ui)

    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"),
                         help="the cluster's dashboard, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)")
    submit = commands.add_parser(
        "submit", parents=[common, cluster], help="run a pdsweep command on a Ray cluster, as a Ray Job",
        description="Submit `pdsweep ARGS` (after --) as a Ray Job, print its id, follow its logs and exit "
        "with its status. Example: pdsweep submit --address http://HEAD:8265 -- run --budget-gflops 17.6 "
        "--runs-dir s3://bucket/sweeps",
    )
    submit.add_argument("--working-dir", help="upload this folder with the job (Ray's runtime env working_dir)")
    submit.add_argument("--runtime-env", metavar="FILE", help="a Ray runtime env as YAML or JSON (pip, env_vars, ...)")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    submit.set_defaults(handler=_cmd_submit)
    jobs = commands.add_parser("jobs", parents=[common, cluster], help="the cluster's Ray Jobs",
                               description="List the Ray Jobs of the cluster at --address.")
    jobs.add_argument("--json", action="store_true", help="print JSON")
    jobs.set_defaults(handler=_cmd_jobs)
    logs = commands.add_parser("logs", parents=[common, cluster], help="a Ray Job's logs",
                               description="Show (or --follow) the logs of Ray Job ID.")
    logs.add_argument("job_id", metavar="ID", help="the job's id, as `pdsweep submit` printed it")
    logs.add_argument("--follow", action="store_true", help="follow until the job ends; exit with its status")
    logs.set_defaults(handler=_cmd_logs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    inner: list[str] = []
    if "--" in argv:  # `pdsweep submit ... -- run ...`: what follows runs on the cluster
        at = argv.index("--")
        argv, inner = argv[:at], argv[at + 1 :]
    debug = "--debug" in argv
    parser = build_parser()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")  # timm's import
    logging.basicConfig(level=logging.WARNING, format="pdsweep: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines ("Creating tables...") are noise here
    try:
        args, extra = parser.parse_known_args(argv)
        commands = _subcommands(parser)
        if extra:
            (commands[args.command] if args.command else parser).unrecognized(extra)
        if args.command is None:
            raise _UsageError("choose a command: " + ", ".join(commands), "pdsweep")
        if inner and args.command != "submit":
            commands[args.command].unrecognized(["--", *inner])
        args.inner = inner
        return int(args.handler(args) or 0)
    except _UsageError as error:
        if debug:
            raise
        print(f"{error.prog}: error: {error}; see '{error.prog} --help'.", file=sys.stderr)
        return 2
    except PdsweepError as error:
        if debug:
            raise
        print(f"pdsweep: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pdsweep: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (``| head``) went away: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, _Parser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# ---- flops --------------------------------------------------------------------------------


def _cmd_flops(args: argparse.Namespace) -> int:
    from pdsweep import cost
    from pdsweep.config import Config

    config = Config(
        model=args.model,
        resolution=args.resolution,
        patch_size=args.patch_size,
        keep_rate=1.0 if args.keep_rate is None else args.keep_rate,
        depth=args.depth,
        ensemble_size=args.ensemble_size,
        num_classes=args.num_classes,
    )
    estimate = cost.estimate(config, batch_size=args.batch_size, precision=args.precision, optimizer=args.optimizer)
    result: dict[str, Any] = {
        "config": config.to_dict(),
        "num_patches": config.num_patches,
        "patches_kept": config.patches_kept,
        "tokens_kept": config.tokens_kept,
        "train_gflops": estimate.train_gflops,
        "inference_gflops": estimate.inference_gflops,
        "eq1_gflops": cost.eq1_flops(config) / cost.GIGA,
        "params": cost.param_count(config),
        "memory_gb": estimate.memory_gb,
        "memory": {
            "batch_size": args.batch_size,
            "precision": args.precision,
            "optimizer": args.optimizer,
            **{k: v for k, v in vars(estimate.memory).items() if k != "ensemble_size"},
            "peak_phase": max(estimate.memory.peak_phases, key=estimate.memory.peak_phases.get),
        },
    }
    if args.verify:
        from pdsweep.verify import fvcore_flops

        result["fvcore_train_gflops"] = fvcore_flops(config, train=True) / cost.GIGA
        result["fvcore_inference_gflops"] = fvcore_flops(config, train=False) / cost.GIGA
        result["fvcore_relative_difference"] = abs(result["fvcore_train_gflops"] / estimate.train_gflops - 1)
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        _print_flops(config, result)
    return 0


def _print_flops(config: Config, result: dict[str, Any]) -> None:
    mem = result["memory"]
    rows = [
        ("patches", f"{result['num_patches']}; {result['patches_kept']} kept + 1 class token = "
                    f"{result['tokens_kept']} tokens in training"),
        ("train GFLOPs", f"{result['train_gflops']:.6g}"),
        ("inference GFLOPs", f"{result['inference_gflops']:.6g}"),
        ("Eq. 1 GFLOPs", f"{result['eq1_gflops']:.6g} (the paper's approximation)"),
        ("parameters", f"{result['params'] / 1e6:.2f} M"),
        ("memory", f"{result['memory_gb']:.3f} GB at batch {mem['batch_size']}, {mem['precision']}, "
                   f"{mem['optimizer']} (peak in the {mem['peak_phase']} phase; activations "
                   f"{mem['activations'] / 1e9:.3f} GB)"),
    ]
    if "fvcore_train_gflops" in result:
        rows.append(("fvcore train GFLOPs", f"{result['fvcore_train_gflops']:.6g} "
                                            f"(difference {result['fvcore_relative_difference']:.4%})"))
        rows.append(("fvcore infer GFLOPs", f"{result['fvcore_inference_gflops']:.6g}"))
    print(config.name)
    for label, value in rows:
        print(f"  {label:<20} {value}")


# ---- train --------------------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from pdsweep.config import Config
    from pdsweep.data import DatasetSpec, load_dataset
    from pdsweep.models import check_weights_file
    from pdsweep.space import TrainingSettings, load_space
    from pdsweep.train import check_fits, train

    keep_rate, keep_low = 1.0 if args.keep_rate is None else args.keep_rate, None
    if args.keep_mode == "uniform":
        if not args.keep_range:
            raise PdsweepError("--keep-mode uniform needs --keep-range LOW,HIGH (e.g. 0.5,1).")
        if args.keep_rate is not None:
            raise PdsweepError("give --keep-range (its HIGH is the keep rate) or --keep-rate, not both.")
        keep_low, keep_rate = _keep_range(args.keep_range)
    elif args.keep_range:
        raise PdsweepError("--keep-range is for --keep-mode uniform; add --keep-mode uniform or drop it.")
    config = Config(  # validated now, before any data is read; classes come from the dataset
        model=args.model, resolution=args.resolution, patch_size=args.patch_size, keep_rate=keep_rate,
        depth=args.depth, ensemble_size=args.ensemble_size, sampling=args.sampling,
        keep_mode=args.keep_mode, keep_range_low=keep_low,
    )
    pretrained = check_weights_file(args.pretrained) if args.pretrained else None
    checkpoint_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    if checkpoint_dir is not None and checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        raise PdsweepError(f"--checkpoint-dir {str(checkpoint_dir)!r} is a file; give a folder.")
    base = load_space(args.space).training if args.space else TrainingSettings()
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size, "warmup_epochs": args.warmup_epochs,
        "optimizer": args.optimizer, "lr": args.lr,
        "weight_decay": args.weight_decay, "precision": args.precision, "seed": args.seed,
        "augment": False if args.no_augment else None,
    }
    settings = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    spec = DatasetSpec.parse(args.dataset)
    check_fits(config, settings, args.device)  # before minutes of decoding; the head's size hardly matters
    # The split depends on the space's seed only, as in a sweep: --seed varies the training alone.
    dataset = load_dataset(spec, config.resolution, seed=base.seed, cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    config = replace(config, num_classes=dataset.num_classes)
    print(
        f"{config.name}: {dataset.num_classes} classes, {len(dataset.train)}/{len(dataset.val)}/{len(dataset.test)} "
        f"train/val/test images, {settings.epochs} epochs",
        file=sys.stderr,
    )

    def progress(metrics: Any, checkpoint_dir: Any) -> None:
        memory = f"  {metrics.peak_memory_gb:.2f} GB" if metrics.peak_memory_gb is not None else ""
        print(
            f"epoch {metrics.epoch}/{settings.epochs}  loss {metrics.train_loss:.4f}  val {metrics.val_accuracy:.1%}"
            f"  {metrics.images_per_second:,.0f} img/s  {metrics.seconds:.1f} s{memory}",
            file=sys.stderr,
        )

    result = train(
        config, dataset, settings, device=args.device,
        checkpoint_dir=checkpoint_dir, pretrained=pretrained, on_epoch_end=progress,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        curve = ", ".join(f"{rate:g}: {acc:.1%}" for rate, acc in result.robustness.items())
        print(f"{config.name}  test accuracy {result.test_accuracy:.1%}  (val {result.val_accuracy:.1%}, best "
              f"{result.best_val_accuracy:.1%})  {result.train_gflops:.4g} train GFLOPs  {result.seconds:.0f} s")
        print(f"robustness (test-time keep rate: accuracy): {curve}")
    return 0


def _keep_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise PdsweepError(f"--keep-range takes LOW,HIGH such as 0.5,1, got {text!r}.") from None
    return low, high


# ---- run and resume -----------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from pdsweep.sweep import SweepSettings, default_name, run_sweep

    settings = SweepSettings(
        name=args.name or default_name(), space=args.space, budgets=tuple(args.budget_gflops),
        memory_gb=args.budget_memory_gb, policy=args.keep_policy, search=args.search, trials=args.trials,
        concurrency=args.concurrency, scheduler=args.scheduler, grace_period=args.grace_period,
        reduction_factor=args.reduction_factor, repeats=args.repeats, dataset=args.dataset,
        runs_dir=args.runs_dir, address=args.address, cpus_per_trial=args.cpus_per_trial,
        gpu_memory_gb=args.gpu_memory_gb, max_failures=args.max_failures, cache_dir=args.cache_dir,
        reuse_actors=not args.fresh_actors, verbose=args.verbose, mlflow_uri=args.mlflow_uri, experiment=args.experiment,
    )
    return _finish(run_sweep(settings, out=_quiet_if(args.json)), args.json)


def _cmd_resume(args: argparse.Namespace) -> int:
    from pdsweep.sweep import resume_sweep

    return _finish(resume_sweep(args.name, args.runs_dir, address=args.address, out=_quiet_if(args.json)), args.json)


def _quiet_if(flag: bool) -> Any:
    return (lambda line: None) if flag else print


def _finish(outcome: Any, as_json: bool) -> int:
    if as_json:
        summary = outcome.report.to_json() if outcome.report else {"sweep": outcome.name, "tiers": [], "pareto": []}
        print(json.dumps({**summary, "results": outcome.results_path, "trials": len(outcome.rows)}, indent=2))
    if outcome.all_failed:
        first = outcome.rows[0]["error"]
        print(f"pdsweep: every trial failed; the first: {first}", file=sys.stderr)
        return 1
    return 130 if outcome.interrupted else 0


# ---- report and ui ------------------------------------------------------------------------


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pdsweep import report, tracking

    sweeps = [report.load(name, args.runs_dir) for name in args.names]
    reports = [report.build(s.name, s.rows) for s in sweeps]
    outputs = []
    for sweep, built in zip(sweeps, reports):
        out_dir = Path(args.out) / sweep.name if args.out and len(sweeps) > 1 else Path(args.out or sweep.folder / "report")
        md, png = report.write(built, out_dir)
        outputs.append((md, png))
        ids = sweep.state.get("mlflow")
        if ids:
            if args.to_mlflow:
                tracking.check_reachable(ids["uri"])
                logged = tracking.backfill(ids, sweep.rows, lambda row: report.config_of(row).name)
                print(f"MLflow: back-filled {logged} trial(s) of {sweep.name!r}", file=sys.stderr)
            try:
                tracking.log_artifacts(ids, [md, png])
            except Exception as error:  # the report stands without MLflow
                print(f"pdsweep: warning: could not log the report to MLflow ({error}).", file=sys.stderr)
        elif args.to_mlflow:
            raise PdsweepError(f"sweep {sweep.name!r} was run without MLflow tracking; nothing to back-fill into.")
    if args.json:
        payload = reports[0].to_json() if len(reports) == 1 else {"sweeps": [r.to_json() for r in reports]}
        print(json.dumps(payload, indent=2, allow_nan=False))
    else:
        print(report.compare(reports) if len(reports) > 1 else report.markdown(reports[0]))
        for md, png in outputs:
            print(f"wrote {md} and {png}", file=sys.stderr)
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from pdsweep.ui import serve

    return serve(args.runs_dir, args.port, args.mlflow_uri)


# ---- cluster ------------------------------------------------------------------------------


def _address(args: argparse.Namespace) -> str:
    if not args.address:
        raise PdsweepError("give the cluster's dashboard with --address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS).")
    return args.address


def _cmd_submit(args: argparse.Namespace) -> int:
    from pdsweep.submit import submit

    return submit(_address(args), args.inner, working_dir=args.working_dir, runtime_env=args.runtime_env,
                  wait=not args.no_wait)


def _cmd_jobs(args: argparse.Namespace) -> int:
    from pdsweep.submit import list_jobs

    found = list_jobs(_address(args))
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        for job in found:
            print(f"{job['id']:<32} {job['status']:<10} {job['entrypoint']}")
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from pdsweep.submit import show_logs

    return show_logs(_address(args), args.job_id, follow=args.follow)


# ---- plan ---------------------------------------------------------------------------------


def _cmd_plan(args: argparse.Namespace) -> int:
    from pdsweep.cost import Budget
    from pdsweep.plan import plan
    from pdsweep.space import load_space

    space = load_space(args.space)
    plans = [
        plan(space, Budget(gflops, args.budget_memory_gb), policy=args.keep_policy, num_classes=args.num_classes)
        for gflops in args.budget_gflops
    ]
    if args.json:
        tiers = [_plan_json(p) for p in plans]
        print(json.dumps(tiers[0] if len(tiers) == 1 else {"tiers": tiers}, indent=2, allow_nan=False))
    else:
        for p in plans:
            _print_plan(p, space)
    return 0


def _plan_json(tier: Plan) -> dict[str, Any]:
    return {
        "space": tier.space,
        "budget_gflops": tier.budget.gflops,
        "budget_memory_gb": tier.budget.memory_gb,
        "keep_policy": tier.policy,
        "architectures": tier.architectures,
        "feasible": len(tier.configs),
        "configs": [
            {
                "model": planned.config.model,
                "resolution": planned.config.resolution,
                "patch_size": planned.config.patch_size,
                "depth": planned.config.blocks,
                "ensemble_size": planned.config.ensemble_size,
                "sampling": planned.config.sampling,
                "keep_mode": planned.config.keep_mode,
                "keep_rate": planned.config.keep_rate,
                "keep_rate_low": planned.keep_rate_low,
                "tokens_kept": planned.config.tokens_kept,
                "train_gflops": planned.cost.train_gflops,
                "inference_gflops": planned.cost.inference_gflops,
                "memory_gb": planned.cost.memory_gb,
            }
            for planned in tier.configs
        ],
    }


def _print_plan(tier: Plan, space: SearchSpace) -> None:
    training = space.training
    search = tier.policy == "search"
    keep = "keep rate searched in the range shown" if search else "largest keep rate that fits"
    print(
        f"space {tier.space!r}: {len(tier.configs)} of {tier.architectures} architectures fit {tier.budget} "
        f"({keep}; memory at batch {training.batch_size}, {training.precision}, {training.optimizer})"
    )
    print(f"{'model':<11} {'res':>4} {'patch':>5} {'depth':>5} {'K':>2} {'keep':>11} {'tokens':>6} "
          f"{'train GF':>9} {'infer GF':>9} {'mem GB':>7}")
    for planned in tier.configs:
        config, cost = planned.config, planned.cost
        keep_rate = f"{planned.keep_rate_low:.3f}-{config.keep_rate:.3f}" if search else f"{config.keep_rate:.3f}"
        print(
            f"{config.model:<11} {config.resolution:>4} {config.patch_size:>5} {config.blocks:>5} "
            f"{config.ensemble_size:>2} {keep_rate:>11} {config.tokens_kept:>6} {cost.train_gflops:>9.4g} "
            f"{cost.inference_gflops:>9.4g} {cost.memory_gb:>7.3g}"
        )
    if search:
        print("(costs at the top of each keep-rate range: no trial costs more)")
    print()


if __name__ == "__main__":
    sys.exit(main())
