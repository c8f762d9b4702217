"""Benchmark: what Ray Tune and pdsweep add around the trials' own work.

    python bench/sweep_overhead.py [--trials 16] [--concurrency 2] [--epochs 8] [--images 2400] [--no-record]

Runs a real sweep (local Ray, the synthetic dataset, a tiny ViT, no early stopping) and reads
each trial's own training seconds (``train_seconds``: model, epochs, test and robustness
evaluation) from results.parquet. Overhead ratio = sweep wall time x concurrency / sum of the
trials' own seconds (1.0 is none); per-trial overhead = the difference, per trial. Ray's start
is timed apart. The overhead per trial is what to compare across machines; the ratio depends on
how long the trials are (about 10 s each by default). Records the table in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pdsweep import results
from pdsweep.sweep import SweepSettings, run_sweep

from results import record

SPACE = """\
axes:
  model: vit_micro
  resolution: 32
  patch_size: [4, 8]
  depth: [1, 2]
  keep_rate: {{low: 0.25, high: 1.0}}
training:
  epochs: {epochs}
  batch_size: 32
  precision: fp32
  augment: false
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--images", type=int, default=2400)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="pdsweep-overhead-"))
    space = work / "space.yaml"
    space.write_text(SPACE.format(epochs=args.epochs))
    started = time.perf_counter()
    ray.init(num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    rows_out = []
    for reuse in (True, False):
        settings = SweepSettings(
            name=f"overhead-reuse-{reuse}", space=str(space), budgets=(1.0,), search="random", trials=args.trials,
            concurrency=args.concurrency, scheduler="none", dataset=f"synthetic:{args.images}",
            runs_dir=str(work / "runs"), cache_dir=str(work / "cache"), reuse_actors=reuse,
        )
        run_sweep(replace(settings, name=f"warm-{reuse}", trials=args.concurrency), out=lambda _: None, err=lambda _: None)
        started = time.perf_counter()
        run_sweep(settings, out=lambda _: None, err=lambda _: None)
        wall = time.perf_counter() - started
        rows = results.read_rows(settings.sweep_dir / results.RESULTS_FILE)
        own = sum(r["train_seconds"] for r in rows)
        rows_out.append(
            f"| {'yes' if reuse else 'no'} | {len(rows)} | {wall:.1f} | {own:.1f} | {own / len(rows):.2f} | "
            f"{wall * args.concurrency / own:.3f} | {(wall * args.concurrency - own) / len(rows):.2f} |"
        )
        print(rows_out[-1], flush=True)
    lines = [
        f"## Sweep overhead (`python bench/sweep_overhead.py`, {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} CPU, {os.cpu_count()} cores)",
        "",
        f"{len(rows)} trials (vit_micro, 32 px, {args.epochs} epochs on {args.images} synthetic images), "
        f"concurrency {args.concurrency}, no early stopping, actors reused.",
        "",
        f"Ray's own start (ray.init, local): {ray_start:.1f} s, not counted below. Each sweep follows a warm-up",
        "sweep on the same Ray (the dataset cache is built there), so both start alike.",
        "",
        "| actors reused | trials | sweep wall s | trials' own s | mean own s | overhead ratio | overhead per trial s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows_out,
    ]
    text = "\n".join(lines)
    print(text)
    ray.shutdown()
    if not args.no_record:
        record("sweep_overhead", text)


if __name__ == "__main__":
    main()
