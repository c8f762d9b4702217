"""``pdsweep flops`` and ``pdsweep plan``: what one config costs (or, with ``--curve``, how the relative
cost of a keep rate moves with the patch count), and what fits a budget."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pdsweep.cli._base import Command, choices, config_flags, config_of, default, json_flag, keep_flags, keep_values, rate_number

if TYPE_CHECKING:
    from pdsweep.config import Config
    from pdsweep.cost import ComputeCurve
    from pdsweep.space import Plan, SearchSpace


class Flops(Command):
    name = "flops"
    help = "train/inference GFLOPs and memory of one config, or the compute curve"
    description = ("Train and inference GFLOPs per image (fvcore's convention) and peak training memory of one "
                   "config, from the closed-form cost model. With --curve: train compute relative to keep rate 1 "
                   "against the patch count, exact beside the paper's Eq. 1, as a table and a PNG.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from pdsweep.config import Config
        from pdsweep.cost import DEFAULT_KEEP_RATES, Attention, OptimizerName, Precision, StepSetup

        # --resolution and --patch-size optional: --curve spans the resolutions.
        config_flags(parser, shape_required=False,
                     shape_note=f" (--curve: every resolution, patch size {CURVE_PATCH_SIZE} unless given)")
        keep_flags(parser)
        parser.add_argument("--num-classes", type=int, default=default(Config, "num_classes"),
                            help="classes of the head (default %(default)s)")
        # Memory flags default to None so that --curve can refuse them; StepSetup fills the rest.
        parser.add_argument("--batch-size", type=int,
                            help=f"batch size for memory (default {default(StepSetup, 'batch_size')})")
        parser.add_argument("--precision", choices=choices(Precision),
                            help=f"default {default(StepSetup, 'precision')}")
        parser.add_argument("--optimizer", choices=choices(OptimizerName),
                            help=f"default {default(StepSetup, 'optimizer')}")
        parser.add_argument("--attention", choices=choices(Attention),
                            help=f"fused (SDPA) or eager (timm's explicit softmax(q k^T) v, which keeps each block's "
                                 f"attention matrix); FLOPs are the same (default {default(StepSetup, 'attention')})")
        parser.add_argument("--verify", action="store_true", help="also count the real timm model with fvcore")
        parser.add_argument("--curve", action="store_true",
                            help="relative train compute against the patch count N, exact and Eq. 1, per keep rate")
        parser.add_argument("--keep-rates", type=rate_list, metavar="K[,K...]",
                            help=f"keep rates of the curve (default {','.join(map(str, DEFAULT_KEEP_RATES))}; "
                                 "with --curve)")
        parser.add_argument("--out", help="folder for the curve's PNG (default: the current folder; with --curve)")
        json_flag(parser, "print one JSON object")

    def take_action(self, args: argparse.Namespace) -> int:
        if args.curve:
            return _curve(args)
        from pdsweep import cost
        from pdsweep.errors import PdsweepError
        from pdsweep.presets import get_preset

        if stray := _given(args, CURVE_ONLY):
            raise PdsweepError(f"{', '.join(stray)}: only with --curve; add --curve for the compute curve, or drop "
                               f"{_it(stray)} (one config takes one --keep-rate).")
        swin = get_preset(args.model).family == "swin"
        if missing := [flag for flag, value in (("--resolution", args.resolution), ("--patch-size", args.patch_size))
                       if value is None and not (swin and flag == "--patch-size")]:
            raise PdsweepError(f"flops needs {' and '.join(missing)} for one config; give {_it(missing)}, or add "
                               "--curve for the compute curve over every resolution.")
        config = config_of(args, **keep_values(args), num_classes=args.num_classes)
        if args.verify and config.keep_mode == "uniform":
            raise PdsweepError("--verify counts one forward pass, and a uniform config's train GFLOPs are the mean over "
                               "its draws; verify each end with --keep-rate LOW and --keep-rate HIGH instead.")
        setup = cost.StepSetup(**{name: getattr(args, name) for name in _memory_dests() if _given(args, (name,))})
        estimate = cost.estimate(config, setup)
        result: dict[str, Any] = {
            "config": config.to_dict(),
            "num_patches": config.num_patches,
            "patches_kept": config.patches_kept,
            "tokens_kept": config.tokens_kept,
            "train_gflops": estimate.train_gflops,
            "inference_gflops": estimate.inference_gflops,
            # Eq. 1 is the paper's for one token count: none for a Swin, nor for a draw per step
            "eq1_gflops": None if config.family == "swin" or config.keep_mode == "uniform" else cost.eq1_flops(config) / cost.GIGA,
            "params": cost.param_count(config),
            "memory_gb": estimate.memory_gb,
            "memory": {
                "batch_size": setup.batch_size,
                "precision": setup.precision,
                "optimizer": setup.optimizer,
                "attention": setup.attention,
                **{k: v for k, v in vars(estimate.memory).items() if k != "ensemble_size"},
                "peak_phase": max(estimate.memory.peak_phases, key=estimate.memory.peak_phases.get),
            },
        }
        if args.verify:
            from pdsweep.training.verify import fvcore_flops

            result["fvcore_train_gflops"] = fvcore_flops(config, train=True) / cost.GIGA
            result["fvcore_inference_gflops"] = fvcore_flops(config, train=False) / cost.GIGA
            result["fvcore_relative_difference"] = abs(result["fvcore_train_gflops"] / estimate.train_gflops - 1)
        if args.json:
            print(json.dumps(result, indent=2, allow_nan=False))
        else:
            _print_flops(config, result)
        return 0


CURVE_PATCH_SIZE = 16  # --curve without --patch-size
CURVE_ONLY = ("keep_rates", "out")
ONE_CONFIG_ONLY = ("resolution", "keep_rate", "keep_mode", "keep_range", "sampling", "verify")  # and the memory flags


def rate_list(text: str) -> list[float]:
    """``0.5`` or ``0.5,0.25``: numbers here; :func:`pdsweep.cost.compute_curve` checks they are rates."""
    try:
        return [rate_number(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected keep rates separated by commas, such as 0.5,0.25, got {text!r}"
        ) from None


def _given(args: argparse.Namespace, dests: tuple[str, ...]) -> list[str]:
    """The flags among ``dests`` the user gave: each defaults to None or False (a dest without a flag: not given).
    By identity, since ``0 == False`` and ``--batch-size 0`` was given."""
    values = {dest: getattr(args, dest, None) for dest in dests}
    return ["--" + dest.replace("_", "-") for dest, value in values.items() if value is not None and value is not False]


def _memory_dests() -> tuple[str, ...]:
    """The memory flags: :class:`~pdsweep.cost.StepSetup`'s fields, which fills in those not given."""
    from dataclasses import fields

    from pdsweep.cost import StepSetup

    return tuple(f.name for f in fields(StepSetup))


def _it(flags: list[str]) -> str:
    return "it" if len(flags) == 1 else "them"


def _curve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pdsweep.cost import DEFAULT_KEEP_RATES, compute_curve
    from pdsweep.errors import PdsweepError
    from pdsweep.results.curve_plot import plot_curve

    if stray := _given(args, (*ONE_CONFIG_ONLY, *_memory_dests())):
        raise PdsweepError(f"--curve spans every resolution and counts no memory: drop {', '.join(stray)} (the "
                           "curve's keep rates go in --keep-rates, e.g. 0.5,0.25).")
    curve = compute_curve(
        args.model,
        CURVE_PATCH_SIZE if args.patch_size is None else args.patch_size,
        DEFAULT_KEEP_RATES if args.keep_rates is None else args.keep_rates,
        depth=args.depth,
        ensemble_size=args.ensemble_size,
        num_classes=args.num_classes,
    )
    path = plot_curve(curve, Path(args.out or ".") / f"compute-curve-{curve.name}.png")
    if args.json:
        print(json.dumps({**curve.to_dict(), "plot": str(path)}, indent=2, allow_nan=False))
    else:
        _print_curve(curve)
        print(f"plot: {path}")
    return 0


def _print_curve(curve: ComputeCurve) -> None:
    width = 25  # one keep rate's three columns
    print(f"{curve.name}: train compute relative to keep rate 1, against the patch count N")
    print("(exact: the cost model; Eq. 1: the paper's approximation; x limit: exact / keep_rate^2, -> 1 as N grows)")
    print((f"{'N':>8} {'res':>6}  " + "".join(f" {f'keep {k:g} (limit {lim:.4g})':^{width}}"
                                              for k, lim in zip(curve.keep_rates, curve.limits))).rstrip())
    print(f"{'':>8} {'':>6}  " + f" {'exact':>7} {'Eq. 1':>7} {'x limit':>8}" * len(curve.keep_rates))
    for row in curve.rows:
        cells = "".join(f" {point.exact:>7.4f} {point.eq1:>7.4f} {point.exact / limit:>7.3f}x"
                        for point, limit in zip(row.points, curve.limits))
        print(f"{row.num_patches:>8} {row.resolution:>5}{'*' if row.standard else ' '}  {cells}")
    print("(* a standard resolution)")


def _print_flops(config: Config, result: dict[str, Any]) -> None:
    mem = result["memory"]
    if config.family == "swin":
        rows = [("patches", f"{result['num_patches']}; {config.window_keeps[-1]} of 7 rows and columns kept per window "
                            f"= {result['patches_kept']} tokens into the first stage in training")]
    else:
        rows = [("patches", f"{result['num_patches']}; {result['patches_kept']} kept + 1 class token = "
                            f"{result['tokens_kept']} tokens in training")]
    if config.keep_mode == "uniform":
        rows.append(("keep", f"drawn per step from {config.keep_range_low:.4g} to {config.keep_rate:.4g} (patches: "
                             "the top of the range; train GFLOPs: the mean over the draws)"))
    rows += [
        ("train GFLOPs", f"{result['train_gflops']:.6g}"),
        ("inference GFLOPs", f"{result['inference_gflops']:.6g}"),
    ]
    if result["eq1_gflops"] is not None:
        rows.append(("Eq. 1 GFLOPs", f"{result['eq1_gflops']:.6g} (the paper's approximation)"))
    rows += [
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


class Plan(Command):
    name = "plan"
    help = "every config of a space that fits a budget"
    description = ("Every config of a search space that fits the budget, at the keep rate the policy gives it, "
                   "with its cost; cheapest first.")
    groups = ("budgets",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from pdsweep.config import Config

        parser.add_argument("--num-classes", type=int, default=default(Config, "num_classes"),
                            help="classes of the head (default %(default)s)")
        json_flag(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from pdsweep.cost import Budget
        from pdsweep.space import listed_budget, load_space, plan

        space = load_space(args.space, args.overrides)
        budgets = ([Budget(gflops, args.budget_memory_gb) for gflops in args.budget_gflops] if args.budget_gflops
                   else [listed_budget(space, args.num_classes, args.budget_memory_gb)])
        plans = [replace(plan(space, budget, policy=args.keep_policy, num_classes=args.num_classes),
                         budget_given=bool(args.budget_gflops)) for budget in budgets]
        if args.json:
            tiers = [plan_json(p) for p in plans]
            print(json.dumps(tiers[0] if len(tiers) == 1 else {"tiers": tiers}, indent=2, allow_nan=False))
        else:
            for p in plans:
                _print_plan(p, space)
        return 0


def plan_json(tier: Plan) -> dict[str, Any]:
    """A plan as JSON: each config's architecture axes (depth resolved), keep range, costs and
    arrangement."""
    from pdsweep.config import architecture_axes
    from pdsweep.cost import describe

    def config_json(planned: Any) -> dict[str, Any]:
        columns = planned.config.columns()
        return {
            **({"label": planned.label, "group": planned.group} if tier.listed else {}),
            **{name: columns[name] for name in architecture_axes()},
            "keep_rate": planned.config.keep_rate,
            "keep_rate_low": planned.keep_rate_low,
            "tokens_kept": planned.config.tokens_kept,
            "train_gflops": planned.cost.train_gflops,
            "inference_gflops": planned.cost.inference_gflops,
            "memory_gb": planned.cost.memory_gb,
            # How its step is arranged to fit the memory cap (decided, never null in a plan).
            "member_turns": planned.cost.setup.member_turns,
            "micro_batch_size": planned.cost.setup.micro,
            "arrangement": describe(planned.cost.setup),
        }

    return {
        "space": tier.space,
        "budget_gflops": tier.budget.gflops if tier.budget_given else None,
        "budget_memory_gb": tier.budget.memory_gb,
        "keep_policy": tier.policy,
        "architectures": tier.architectures,
        "feasible": len(tier.configs),
        "configs": [config_json(planned) for planned in tier.configs],
        "notes": list(tier.notes),
    }


def _print_listed(tier: Plan, space: SearchSpace) -> None:
    """A space's listed configs, as listed, with their costs (and, with a budget, that each fits)."""
    training = space.training
    fits = f"every one fits {tier.budget}" if tier.budget_given else "no budget given: each config's own cost"
    print(f"space {tier.space!r}: {len(tier.configs)} listed configs ({fits}; memory at batch {training.batch_size}, "
          f"{training.precision}, {training.optimizer}, {training.attention} attention)")
    label_width = max(5, *(len(p.label) for p in tier.configs))
    group_width = max(5, *(len(p.group) for p in tier.configs))
    print(f"{'group':<{group_width}} {'label':<{label_width}} {'config':<44} {'tokens':>6} {'train GF':>9} "
          f"{'infer GF':>9} {'mem GB':>7}")
    for planned in tier.configs:
        config, cost = planned.config, planned.cost
        print(f"{planned.group:<{group_width}} {planned.label:<{label_width}} {config.name:<44} {config.tokens_kept:>6} "
              f"{cost.train_gflops:>9.4g} {cost.inference_gflops:>9.4g} {cost.memory_gb:>7.3g}")
    for note in tier.notes:
        print(f"note: {note}")
    print()


def _print_plan(tier: Plan, space: SearchSpace) -> None:
    from pdsweep.cost import describe

    if tier.listed:
        _print_listed(tier, space)
        return
    training = space.training
    search = tier.policy == "search"
    keep = "keep rate searched in the range shown" if search else "largest keep rate that fits"
    inits = space.starts_pretrained  # an init column only where some trial starts pretrained
    tuned = space.training_for("pretrained")
    optimizer = training.optimizer + (f"; pretrained: {tuned.optimizer}" if inits and tuned.optimizer != training.optimizer else "")
    print(
        f"space {tier.space!r}: {len(tier.configs)} of {tier.architectures} architectures fit {tier.budget} "
        f"({keep}; memory at batch {training.batch_size}, {training.precision}, {optimizer})"
    )
    # Columns for the axes that tell rows apart only where the space varies them.
    sampled = len({c.config.sampling for c in tier.configs}) > 1
    arranged = any(describe(c.cost.setup) != "-" for c in tier.configs)
    print(f"{'model':<11} {'res':>4} {'patch':>5} {'depth':>5} {'K':>2} {'keep':>11} {'tokens':>6} "
          f"{'train GF':>9} {'infer GF':>9} {'mem GB':>7}" + (" init" if inits else "") + (" sampling" if sampled else "")
          + (" fits as" if arranged else ""))
    for planned in tier.configs:
        config, cost = planned.config, planned.cost
        if search:
            keep_rate = f"{planned.keep_rate_low:.3f}-{config.keep_rate:.3f}"
        elif config.keep_mode == "uniform":  # drawn per step from the range
            keep_rate = f"{config.keep_range_low:.3f}~{config.keep_rate:.3f}"
        else:
            keep_rate = f"{config.keep_rate:.3f}"
        print(
            f"{config.model:<11} {config.resolution:>4} {config.patch_size:>5} {config.blocks:>5} "
            f"{config.ensemble_size:>2} {keep_rate:>11} {config.tokens_kept:>6} {cost.train_gflops:>9.4g} "
            f"{cost.inference_gflops:>9.4g} {cost.memory_gb:>7.3g}" + (f" {config.init}" if inits else "")
            + (f" {config.sampling}" if sampled else "") + (f" {describe(cost.setup)}" if arranged else "")
        )
    if arranged:
        print("(fits as: how a step that does not fit the memory cap as it is trains, with the same results: an "
              "ensemble's members in turns, the batch in micro-batches)")
    if search:
        print("(costs at the top of each keep-rate range: no trial costs more)")
    elif any(p.config.keep_mode == "uniform" for p in tier.configs):
        print("(low~high: a keep rate drawn per step from the range; its cost is the mean over the draws)")
    for note in tier.notes:
        print(f"note: {note}")
    print()
