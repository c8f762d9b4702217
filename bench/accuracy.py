"""Benchmark: accuracy on real data, keep rate 1 vs 0.5, with wall time and cost.

    python bench/accuracy.py [--only fashion-mnist|sign-language-digits] [--no-record]

A tiny ViT (vit_micro: 64 wide, 4 blocks) trained from scratch on the CPU:
- Fashion-MNIST (Debian's dataset-fashion-mnist), 28 px, patch 4: 55,000 train / 5,000 val /
  10,000 test. The goal: >= 85% test accuracy in under 15 CPU minutes, and keep 0.5 within
  2 points of keep 1 at lower cost.
- Sign Language Digits (../shared/data), real photographs, 64 px, patch 8, a stratified
  70/15/15 split of 2,062 images.
Records the table in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pdsweep.config import Config
from pdsweep.training.data import load_dataset
from pdsweep.space import TrainingSettings
from pdsweep.training.loop import train

from datasets import SIGN_LANGUAGE_DIGITS, fashion_mnist_npz
from results import record


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    resolution: int
    patch_size: int
    settings: TrainingSettings


def tasks(cache: Path) -> list[Task]:
    return [
        Task(
            "fashion-mnist", f"npz:{fashion_mnist_npz(cache)}", 28, 4,
            TrainingSettings(epochs=12, batch_size=128, optimizer="adamw", lr=2e-3, weight_decay=0.05,
                             warmup_epochs=1, precision="fp32", augment=False),
        ),
        Task(
            "sign-language-digits", f"folder:{SIGN_LANGUAGE_DIGITS}", 64, 8,
            TrainingSettings(epochs=60, batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.05,
                             warmup_epochs=3, precision="fp32", augment=True),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["fashion-mnist", "sign-language-digits"])
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "pdsweep-bench-cache")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    rows = []
    for task in tasks(args.cache_dir):
        if args.only and task.name != args.only:
            continue
        dataset = load_dataset(task.dataset, task.resolution, cache_dir=args.cache_dir)
        results = {}
        for keep_rate in (1.0, 0.5):
            config = Config("vit_micro", task.resolution, task.patch_size, keep_rate=keep_rate, num_classes=dataset.num_classes)
            results[keep_rate] = result = train(config, dataset, task.settings, device="cpu")
            rows.append(
                f"| {task.name} | {len(dataset.train):,}/{len(dataset.val):,}/{len(dataset.test):,} | {task.resolution} px, p{task.patch_size} | "
                f"{keep_rate} | {result.train_gflops * 1e3:.2f} | {task.settings.epochs} | {result.best_val_accuracy:.1%} | "
                f"{result.test_accuracy:.1%} | {result.seconds / 60:.1f} |"
            )
            print(rows[-1], flush=True)
        drop = results[1.0].test_accuracy - results[0.5].test_accuracy
        saved = 1 - results[0.5].seconds / results[1.0].seconds
        rows.append(f"| {task.name}: keep 0.5 vs 1 | | | | | | | {-drop:+.1%} points | {saved:.0%} less time |")

    lines = [
        f"## Accuracy on real data (`python bench/accuracy.py`, {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads)",
        "",
        "vit_micro (64 wide, 4 blocks, 2 heads) from scratch, AdamW; train MFLOPs per image at the keep rate.",
        "",
        "| dataset | train/val/test | input | keep | train MFLOPs | epochs | best val | test | minutes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record and not args.only:
        record("accuracy", text)


if __name__ == "__main__":
    main()
