"""``pdsweep flops`` and ``pdsweep plan``: what one config costs, and what fits a budget."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from pdsweep.cli._base import Command, choices, default, json_flag

if TYPE_CHECKING:
    from pdsweep.config import Config
    from pdsweep.space import Plan, SearchSpace


class Flops(Command):
    name = "flops"
    help = "train/inference GFLOPs and memory of one config"
    description = ("Train and inference GFLOPs per image (fvcore's convention) and peak training memory of one "
                   "config, from the closed-form cost model.")
    groups = ("one_config",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from pdsweep.config import Config
        from pdsweep.cost import OptimizerName, Precision, StepSetup

        parser.add_argument("--num-classes", type=int, default=default(Config, "num_classes"),
                            help="classes of the head (default %(default)s)")
        parser.add_argument("--batch-size", type=int, default=default(StepSetup, "batch_size"),
                            help="batch size for memory (default %(default)s)")
        parser.add_argument("--precision", choices=choices(Precision), default=default(StepSetup, "precision"),
                            help="default %(default)s")
        parser.add_argument("--optimizer", choices=choices(OptimizerName), default=default(StepSetup, "optimizer"),
                            help="default %(default)s")
        parser.add_argument("--verify", action="store_true", help="also count the real timm model with fvcore")
        json_flag(parser, "print one JSON object")

    def take_action(self, args: argparse.Namespace) -> int:
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
        setup = cost.StepSetup(args.batch_size, args.precision, args.optimizer)
        estimate = cost.estimate(config, setup)
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
            from pdsweep.training.verify import fvcore_flops

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
        from pdsweep.space import load_space, plan

        space = load_space(args.space, args.overrides)
        plans = [
            plan(space, Budget(gflops, args.budget_memory_gb), policy=args.keep_policy, num_classes=args.num_classes)
            for gflops in args.budget_gflops
        ]
        if args.json:
            tiers = [plan_json(p) for p in plans]
            print(json.dumps(tiers[0] if len(tiers) == 1 else {"tiers": tiers}, indent=2, allow_nan=False))
        else:
            for p in plans:
                _print_plan(p, space)
        return 0


def plan_json(tier: Plan) -> dict[str, Any]:
    """A plan as JSON: each config's architecture axes (depth resolved), keep range and costs."""
    from pdsweep.config import architecture_axes

    def config_json(planned: Any) -> dict[str, Any]:
        columns = planned.config.columns()
        return {
            **{name: columns[name] for name in architecture_axes()},
            "keep_rate": planned.config.keep_rate,
            "keep_rate_low": planned.keep_rate_low,
            "tokens_kept": planned.config.tokens_kept,
            "train_gflops": planned.cost.train_gflops,
            "inference_gflops": planned.cost.inference_gflops,
            "memory_gb": planned.cost.memory_gb,
        }

    return {
        "space": tier.space,
        "budget_gflops": tier.budget.gflops,
        "budget_memory_gb": tier.budget.memory_gb,
        "keep_policy": tier.policy,
        "architectures": tier.architectures,
        "feasible": len(tier.configs),
        "configs": [config_json(planned) for planned in tier.configs],
    }


def _print_plan(tier: Plan, space: SearchSpace) -> None:
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
    print(f"{'model':<11} {'res':>4} {'patch':>5} {'depth':>5} {'K':>2} {'keep':>11} {'tokens':>6} "
          f"{'train GF':>9} {'infer GF':>9} {'mem GB':>7}" + (" init" if inits else ""))
    for planned in tier.configs:
        config, cost = planned.config, planned.cost
        keep_rate = f"{planned.keep_rate_low:.3f}-{config.keep_rate:.3f}" if search else f"{config.keep_rate:.3f}"
        print(
            f"{config.model:<11} {config.resolution:>4} {config.patch_size:>5} {config.blocks:>5} "
            f"{config.ensemble_size:>2} {keep_rate:>11} {config.tokens_kept:>6} {cost.train_gflops:>9.4g} "
            f"{cost.inference_gflops:>9.4g} {cost.memory_gb:>7.3g}" + (f" {config.init}" if inits else "")
        )
    if search:
        print("(costs at the top of each keep-rate range: no trial costs more)")
    print()
