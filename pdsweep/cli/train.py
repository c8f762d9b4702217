"""``pdsweep train``: one config on a dataset, without Ray."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdsweep.cli._base import (Command, choices, config_of, dataset_with_window, default, json_flag, keep_flags, keep_values,
                               metric_flag, positive_float, set_flag, window_flag, with_metric)
from pdsweep.errors import PdsweepError

if TYPE_CHECKING:
    from pdsweep.config import Config
    from pdsweep.training.weights import WeightFile
    from pdsweep.space import TrainingSettings
    from pdsweep.training.metrics import TrainResult


class Train(Command):
    name = "train"
    help = "train one config, no Ray"
    description = ("Train one config (a ViT or a Swin, or an ensemble of either, with PatchDropout) on a dataset and report validation "
                   "and test accuracy and the robustness curve. Training settings come from --space's training "
                   "section (default: pdsweep's defaults), overridden by the flags here.")
    groups = ("one_config",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from pdsweep.cost import OptimizerName, Precision
        from pdsweep.sweep.settings import SweepSettings
        from pdsweep.training.device import DeviceName

        keep_flags(parser)
        parser.add_argument("--dataset", default=default(SweepSettings, "dataset"),
                            help="synthetic[:N] (default), folder:PATH, npz:PATH, parquet:PATH or csv:PATH (a manifest)")
        window_flag(parser)
        parser.add_argument("--space", help="take training settings from this space file or name")
        set_flag(parser, "a training setting (training.KEY) of --space or of the defaults")
        metric_flag(parser)
        parser.add_argument("--epochs", type=int, help="epochs")
        parser.add_argument("--batch-size", type=int, help="batch size")
        parser.add_argument("--warmup-epochs", type=int, help="epochs of linear learning-rate warm-up")
        parser.add_argument("--optimizer", choices=choices(OptimizerName), help="adamw or sgd (momentum 0.9)")
        parser.add_argument("--lr", type=positive_float, help="peak learning rate")
        parser.add_argument("--weight-decay", type=float, help="weight decay")
        parser.add_argument("--precision", choices=choices(Precision), help="bf16-mixed (GPU; a CPU uses fp32) or fp32")
        parser.add_argument("--seed", type=int, help="training seed (the data split keeps the space's seed)")
        parser.add_argument("--no-augment", action="store_true", help="no crops, flips, rotations or colour jitter")
        parser.add_argument("--pretrained", metavar="SOURCE",
                            help="start from these weights: a hub name (timm/deit_tiny_patch16_224.fb_in1k, read "
                                 "from the Hugging Face cache) or a local timm .safetensors/.pth file")
        parser.add_argument("--weights-cache", metavar="DIR",
                            help="Hugging Face hub cache for --pretrained (default $HF_HUB_CACHE or $HF_HOME/hub)")
        parser.add_argument("--save-weights", metavar="PATH",
                            help="write the trained model to PATH (.safetensors, timm-loadable; an ensemble's "
                                 "other members beside it as STEM-2, STEM-3, ...)")
        parser.add_argument("--checkpoint-dir", metavar="DIR", help="save a checkpoint each epoch; resume from it")
        parser.add_argument("--device", choices=choices(DeviceName), default="auto", help="default: a GPU if any")
        parser.add_argument("--cache-dir", metavar="DIR",
                            help="dataset cache (default $PDSWEEP_CACHE or ~/.cache/pdsweep)")
        json_flag(parser, "print one JSON object")

    def take_action(self, args: argparse.Namespace) -> int:
        from dataclasses import asdict, replace
        from pathlib import Path

        from pdsweep.objective import check_scorable
        from pdsweep.space import load_training
        from pdsweep.training.data import DatasetSpec, load_dataset
        from pdsweep.training.faults import fault_line, fault_status
        from pdsweep.cost import describe
        from pdsweep.training.loop import fit_to_device, train
        config = _config_of(args)  # validated now, before any data is read; classes come from the dataset
        pretrained = _weights_of(args, config)
        save_to = _save_path(args.save_weights) if args.save_weights else None
        checkpoint_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else None
        if checkpoint_dir is not None and checkpoint_dir.exists() and not checkpoint_dir.is_dir():
            raise PdsweepError(f"--checkpoint-dir {str(checkpoint_dir)!r} is a file; give a folder.")
        base = load_training(args.space, with_metric(args.overrides, args.metric))
        settings = _settings_of(args, base)
        spec = DatasetSpec.parse(dataset_with_window(args.dataset, args.window))
        arranged, _ = fit_to_device(config, settings, args.device)  # before minutes of decoding (the head hardly matters)
        # The split depends on the space's seed only, as in a sweep: --seed varies the training alone.
        dataset = load_dataset(spec, config.resolution, seed=base.seed, cache_dir=Path(args.cache_dir) if args.cache_dir else None)
        config = replace(config, num_classes=dataset.num_classes)
        check_scorable(dataset, settings.metric, settings.eval_groups)  # bad input, before the first line of progress
        groups = "/".join(str(g) for _, g in dataset.counts().values()) if dataset.train.groups is not None else ""
        print(
            f"{config.name}: {dataset.num_classes} classes, {len(dataset.train)}/{len(dataset.val)}/{len(dataset.test)} "
            f"train/val/test images" + (f" in {groups} groups" if groups else "") + f", {settings.epochs} epochs"
            + (f", {describe(arranged.step)} to fit the device" if describe(arranged.step) != "-" else ""),
            file=sys.stderr,
        )

        def progress(metrics: Any, checkpoint_dir: Any) -> None:
            memory = f"  {metrics.peak_memory_gb:.2f} GB" if metrics.peak_memory_gb is not None else ""
            o = settings.objective
            shown = f"val {metrics.val_accuracy:.1%}" + ("" if o.metric == "accuracy" else f", {o.label} {o.format(metrics.val(o.metric))}")
            print(
                f"epoch {metrics.epoch}/{settings.epochs}  loss {metrics.train_loss:.4f}  {shown}"
                f"  {metrics.images_per_second:,.0f} img/s  {metrics.seconds:.1f} s{memory}",
                file=sys.stderr,
            )

        try:
            result = train(
                config, dataset, settings, device=args.device,
                checkpoint_dir=checkpoint_dir, pretrained=pretrained, weights_cache=args.weights_cache,
                save_weights_to=save_to, on_epoch_end=progress,
            )
        except Exception as error:
            status = fault_status(error)
            if status == "error" or args.debug:
                raise
            # Not bad input (exit 2) but a run that failed (exit 1): one line, and the JSON says so.
            history = getattr(error, "history", ())
            print(f"pdsweep: {config.name} {status}: {fault_line(error)}", file=sys.stderr)
            if args.json:
                print(json.dumps({"status": status, "error": fault_line(error), "config": config.to_dict(),
                                  "epochs": len(history), "history": [asdict(m) for m in history]},
                                 indent=2, allow_nan=False, default=str))
            return 1
        _print_result(result, settings, dataset.class_names, args.json)
        return 0


def _config_of(args: argparse.Namespace) -> Config:
    return config_of(args, **keep_values(args), init="pretrained" if args.pretrained else "random")


def _weights_of(args: argparse.Namespace, config: Config) -> WeightFile | None:
    """The weights ``--pretrained`` names, found and checked against the model (before any data)."""
    if not args.pretrained:
        if args.weights_cache:
            raise PdsweepError("--weights-cache is for --pretrained; add --pretrained SOURCE or drop it.")
        return None
    from pdsweep.space.weights import WeightSource
    from pdsweep.training.weights import inspect

    try:
        weights = inspect(WeightSource.parse(args.pretrained).absolute(), args.weights_cache)
        weights.check_fits(config.model, config.preset)
    except PdsweepError as error:
        raise PdsweepError(f"--pretrained for {config.model}: {error}") from None
    return weights


def _save_path(text: str) -> Path:
    path = Path(text).expanduser()
    if path.is_dir():
        raise PdsweepError(f"--save-weights {text!r} is a folder; give a file path ending in .safetensors.")
    if path.suffix != ".safetensors":
        raise PdsweepError(f"--save-weights {text!r} must end in .safetensors (timm loads that format).")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise PdsweepError(f"--save-weights {text!r}: {parent} is not a writable folder; choose another path.")
    return path


def _settings_of(args: argparse.Namespace, base: TrainingSettings) -> TrainingSettings:
    """The space's training settings with the flags given on top."""
    from dataclasses import replace

    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size, "warmup_epochs": args.warmup_epochs,
        "optimizer": args.optimizer, "lr": args.lr,
        "weight_decay": args.weight_decay, "precision": args.precision, "seed": args.seed,
        "augment": False if args.no_augment else None,
    }
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _print_result(result: TrainResult, settings: TrainingSettings, class_names: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        print(json.dumps({**result.to_dict(), "metric": settings.metric, "class_names": list(class_names)},
                         indent=2, allow_nan=False))
    else:
        curve = ", ".join(f"{rate:g}: {acc:.1%}" for rate, acc in result.robustness.items())
        print(f"{result.config.name}  test accuracy {result.test_accuracy:.1%}  (val {result.val_accuracy:.1%}, best "
              f"{result.best_val_accuracy:.1%})  {result.train_gflops:.4g} train GFLOPs  {result.seconds:.0f} s")
        o, over = settings.objective, "groups" if result.scored_by == "mean" else "images"
        interval = result.test_intervals.get(o.metric)
        print(f"test {o.label} {o.format(result.test_scores.get(o.metric))}"
              + (f" (95% bootstrap interval over the test {over}: {o.format(interval[0])} to {o.format(interval[1])})"
                 if interval else "") + f"; best val {o.label} {o.format(result.best_val(o.metric))}")
        recall = ", ".join(f"{name} {value:.1%}" if value is not None else f"{name} -"
                           for name, value in zip(class_names, result.class_recall))
        print(f"test recall per class: {recall}")
        print(f"robustness (test-time keep rate: accuracy): {curve}")
        print(f"attention kernel: {result.attention_backend}")
        if result.weights is not None:
            print(f"started from {result.weights.source} (sha256 {result.weights.sha256[:12]}), "
                  f"{result.pretrained_blocks} of {result.config.blocks} blocks")
        for path in result.saved_weights:
            print(f"saved weights: {path}")
