"""Build the tabular benchmark: every config of a small space, trained for real, per-epoch accuracy kept.

    python bench/tabular/build.py [--seeds 3] [--workers 2] [--max-gflops 0.03]

Trains every config of ``bench/tabular/space.yaml`` whose train cost fits the largest budget tier
(``--max-gflops``) on a fixed subset of Fashion-MNIST (Debian's ``dataset-fashion-mnist``; 4,000
train / 2,000 val / 2,000 test images), with each of ``--seeds`` training seeds, one CPU thread per
run and ``--workers`` runs at a time. Each run's validation accuracy after every epoch, its test
accuracy and its seconds per epoch go into ``bench/tabular/fashion_mnist.parquet``, which
``bench/search.py`` replays as the ground truth (a searcher is judged by the true mean accuracy of
the config it would report). Finished runs are kept in a ``.jsonl`` beside the table, so an
interrupted build continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/datasets.py

SPACE = HERE / "space.yaml"
TABLE = HERE / "fashion_mnist.parquet"
SPLITS = {"train": 4000, "val": 2000, "test": 2000}


def subset_npz(cache: Path) -> Path:
    """A fixed subset of Fashion-MNIST in pdsweep's npz layout (the first images of each split)."""
    import numpy as np

    from datasets import fashion_mnist_npz

    out = cache / "fashion-mnist-tabular.npz"
    if not out.is_file():
        full = np.load(fashion_mnist_npz(cache))
        np.savez(out, **{f"{split}_{part}": full[f"{split}_{part}"][:count]
                         for split, count in SPLITS.items() for part in ("images", "labels")})
    return out


def configs(max_gflops: float) -> list:
    """Every config of the space (each architecture at each listed keep rate) under ``max_gflops``."""
    import pdsweep
    from pdsweep.cost import Budget
    from pdsweep.sweep.sampler import BudgetSampler

    space = pdsweep.load_space(str(SPACE))
    return BudgetSampler(space, Budget(max_gflops), "fill", num_classes=10).grid()


def _run(job: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    from pdsweep import load_space
    from pdsweep.training.data import load_dataset
    from pdsweep.training.loop import train

    config, seed, npz, cache = job
    settings = replace(load_space(str(SPACE)).training, seed=seed)
    dataset = load_dataset(f"npz:{npz}", config.resolution, cache_dir=cache)
    result = train(config, dataset, settings, device="cpu")
    return {
        "config": config.name, "model": config.model, "resolution": config.resolution,
        "patch_size": config.patch_size, "depth": config.depth, "keep_rate": config.keep_rate,
        "ensemble_size": config.ensemble_size, "train_gflops": result.train_gflops, "seed": seed,
        "train_images": len(dataset.train),
        "val_accuracy": [m.val_accuracy for m in result.history],
        "epoch_seconds": [m.seconds for m in result.history],
        "test_accuracy": result.test_accuracy,
    }


def write_table(rows: list[dict], meta: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(sorted(rows, key=lambda r: (r["train_gflops"], r["config"], r["seed"])))
    table = table.replace_schema_metadata({"pdsweep.tabular": json.dumps(meta)})
    pq.write_table(table, TABLE, compression="zstd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-gflops", type=float, default=0.03)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "pdsweep-bench-cache")
    args = parser.parse_args()

    npz = subset_npz(args.cache_dir)
    from pdsweep.sweep.searcher import longest_first

    jobs = [(c, seed, npz, args.cache_dir) for c in longest_first(configs(args.max_gflops)) for seed in range(args.seeds)]
    partial = TABLE.with_suffix(".jsonl")
    done = [json.loads(line) for line in partial.read_text().splitlines()] if partial.is_file() else []
    finished = {(r["config"], r["seed"]) for r in done}
    todo = [job for job in jobs if (job[0].name, job[1]) not in finished]
    print(f"{len(jobs)} runs ({len(jobs) // args.seeds} configs x {args.seeds} seeds), {len(todo)} to go", flush=True)
    started = time.perf_counter()
    # Each data resolution is cached once before the workers start, so they never build it twice.
    from pdsweep.training.data import load_dataset

    for resolution in sorted({c.resolution for c, *_ in jobs}):
        load_dataset(f"npz:{npz}", resolution, cache_dir=args.cache_dir)
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool, partial.open("a") as log:
        for count, row in enumerate(pool.imap_unordered(_run, todo), 1):
            log.write(json.dumps(row) + "\n")
            log.flush()
            done.append(row)
            print(f"[{count}/{len(todo)} {time.perf_counter() - started:.0f} s] {row['config']} seed {row['seed']}: "
                  f"val {row['val_accuracy'][-1]:.1%} test {row['test_accuracy']:.1%}", flush=True)
    meta = {
        "dataset": "fashion-mnist subset " + "/".join(f"{v}" for v in SPLITS.values()) + " train/val/test",
        "space": SPACE.name, "max_gflops": args.max_gflops, "seeds": args.seeds,
        "threads_per_run": 1, "workers": args.workers, "machine": f"{platform.machine()} CPU",
        "built": time.strftime("%Y-%m-%d"),
    }
    write_table(done, meta)
    print(f"wrote {TABLE} ({len(done)} runs) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
