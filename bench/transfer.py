"""Benchmark: does pretraining help a small real dataset, and does PatchDropout's saving hold when
fine-tuning?

    python bench/transfer.py [--epochs 30] [--repeats 3] [--no-record]

1. Pretrain vit_micro on Fashion-MNIST (Debian's dataset-fashion-mnist; 28 px, patch 4) with
   ``pdsweep train --save-weights``.
2. Sweep the Sign Language Digits photos (../shared/data, 64 px, patch 8) with ``pdsweep run``
   over ``init: [pretrained, random]`` x keep rates 1, 0.5, 0.25 (a grid, every config with
   ``--repeats`` seeds). The weights are resampled to the new grid and patch size; pretrained
   trials fine-tune with the study's SGD recipe, random ones train with AdamW. Each pair compares
   at equal train GFLOPs.

Records the table (from the sweep's report) in bench/RESULTS.md, with a sentence derived from
the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datasets import SIGN_LANGUAGE_DIGITS, fashion_mnist_npz
from results import record

from pdsweep.results import report
from pdsweep.results.rows import RESULTS_FILE, read_rows

SPACE = """\
description: bench/transfer.py, Sign Language Digits from Fashion-MNIST weights
axes:
  model: vit_micro
  resolution: 64
  patch_size: 8
  keep_rate: [1.0, 0.5, 0.25]
  init: [pretrained, random]
weights:
  vit_micro: {weights}
training:
  epochs: {epochs}
  batch_size: 64
  optimizer: adamw
  lr: 0.001
  weight_decay: 0.05
  warmup_epochs: 3
  precision: fp32
  augment: true
finetune:            # the study's fine-tuning recipe
  optimizer: sgd
  lr: 0.01
  weight_decay: 0.0001
  warmup_epochs: 2
  label_smoothing: 0.1
"""


def pdsweep(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pdsweep", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pdsweep {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30, help="fine-tuning / training epochs on the photos")
    parser.add_argument("--repeats", type=int, default=3, help="seeds per config")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "pdsweep-bench-cache")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pdsweep-transfer-"))
    weights = work / "fashion-mnist-vit_micro.safetensors"
    started = time.perf_counter()
    pretrained = json.loads(pdsweep(
        "train", "--model", "vit_micro", "--resolution", "28", "--patch-size", "4", "--keep-rate", "0.5",
        "--dataset", f"npz:{fashion_mnist_npz(args.cache_dir)}", "--epochs", str(args.pretrain_epochs),
        "--batch-size", "128", "--lr", "0.002", "--no-augment", "--precision", "fp32",
        "--cache-dir", str(args.cache_dir), "--save-weights", str(weights), "--json",
    ))
    pretrain_minutes = (time.perf_counter() - started) / 60
    print(f"pretrained on Fashion-MNIST: test {pretrained['test_accuracy']:.1%} in {pretrain_minutes:.1f} min", flush=True)

    space = work / "transfer.yaml"
    space.write_text(SPACE.format(weights=weights, epochs=args.epochs))
    started = time.perf_counter()
    pdsweep("run", "--space", str(space), "--budget-gflops", "0.02", "--search", "grid", "--scheduler", "none",
            "--repeats", str(args.repeats), "--top-k", "6", "--dataset", f"folder:{SIGN_LANGUAGE_DIGITS}",
            "--runs-dir", str(work / "runs"), "--name", "transfer", "--cache-dir", str(args.cache_dir),
            "--no-estimate", "--json")
    sweep_minutes = (time.perf_counter() - started) / 60
    rows = read_rows(work / "runs" / "transfer" / RESULTS_FILE)
    built = report.build("transfer", rows, top_k=6)
    text = section(built, rows, pretrained, pretrain_minutes, sweep_minutes, args)
    print(text)
    if not args.no_record:
        record("transfer", text)


def section(built: report.Report, rows: list, pretrained: dict, pretrain_minutes: float, sweep_minutes: float,
            args: argparse.Namespace) -> str:
    seconds = {}  # mean training seconds per config
    for row in rows:
        if row.train_seconds is not None:
            seconds.setdefault(row.config, []).append(row.train_seconds)
    table = [
        "| keep | train MFLOPs | pretrained val | random val | difference (95% Welch) | pretrained test | random test | "
        "s/trial (pretrained, random) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    pairs = sorted(built.inits, key=lambda p: -p.random.config.keep_rate)
    for pair in pairs:
        p, r = pair.pretrained, pair.random
        mean = lambda config: sum(seconds[config]) / len(seconds[config])  # noqa: E731
        table.append(
            f"| {r.config.keep_rate:g} | {r.train_gflops * 1e3:.2f} | {_pct(p.metric, p.spread)} | {_pct(r.metric, r.spread)} | "
            f"{pair.margin:+.1%} {_interval(pair.difference)} | {_pct(p.test_accuracy)} | "
            f"{_pct(r.test_accuracy)} | {mean(p.config):.0f}, {mean(r.config):.0f} |"
        )
    return "\n".join([
        f"## Pretrained vs random initialisation (`python bench/transfer.py`, {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} CPU)",
        "",
        f"vit_micro pretrained on Fashion-MNIST (28 px, patch 4, keep 0.5, {args.pretrain_epochs} epochs, "
        f"`pdsweep train --save-weights`): test {pretrained['test_accuracy']:.1%}, {pretrain_minutes:.1f} min. Then "
        f"`pdsweep run --search grid --repeats {args.repeats}` on Sign Language Digits photos (64 px, patch 8: the "
        "weights' position and patch embeddings resampled), "
        f"{args.epochs} epochs, `init: [pretrained, random]` x keep 1, 0.5, 0.25: pretrained trials fine-tune with SGD "
        "(lr 0.01, momentum 0.9, weight decay 1e-4, 2 warm-up epochs), random ones train with AdamW (lr 1e-3). "
        f"{len(rows)} trials, {sweep_minutes:.1f} min. Val: mean ± sd of best validation accuracy over seeds.",
        "",
        *table,
        "",
        verdict(pairs),
        "Each init trains with its own recipe (the study's), so a difference is that of weights and recipe together; "
        "Fashion-MNIST (grey clothing at 28 px) is far from hand photographs, so this is a weak, cheap pretraining.",
    ])


def verdict(pairs: list[report.InitPair]) -> str:
    """Two sentences from the numbers: did pretraining help, and did the keep-rate saving hold
    (fine-tuned at a lower keep rate against keep 1, by the Welch interval over seeds)."""
    helped = [p for p in pairs if p.difference is not None and p.difference[0] > 0]
    hurt = [p for p in pairs if p.difference is not None and p.difference[1] < 0]
    text = (f"Pretraining helped at {len(helped)} of {len(pairs)} keep rates (keep "
            f"{', '.join(f'{p.random.config.keep_rate:g}' for p in helped)}: 95% interval of the difference above 0)"
            if helped else "Pretraining did not separate from random initialisation at any keep rate")
    text += f" and hurt at {len(hurt)}." if hurt else "."
    full = next((p for p in pairs if p.random.config.keep_rate == 1.0), None)
    if full is None:
        return text
    parts = []
    for p in pairs:
        if p.random.config.keep_rate == 1.0:
            continue
        delta = p.pretrained.metric - full.pretrained.metric
        interval = report.welch(p.pretrained.values, full.pretrained.values)
        held = "within noise" if interval is not None and interval[0] <= 0 <= interval[1] else "a real loss"
        parts.append(f"keep {p.random.config.keep_rate:g} at {p.random.train_gflops / full.random.train_gflops:.0%} of "
                     f"the FLOPs {delta:+.1%} ({_interval(interval)}, {held})")
    return text + " Fine-tuned with fewer tokens against keep 1: " + "; ".join(parts) + "."


def _pct(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%} ± {spread:.1%}" if spread is not None else f"{value:.1%}"


def _interval(interval: tuple[float, float] | None) -> str:
    return f"[{interval[0]:+.1%}, {interval[1]:+.1%}]" if interval else "(one seed)"


if __name__ == "__main__":
    main()
