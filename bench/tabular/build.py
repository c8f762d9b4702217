"""Build a tabular benchmark: every config of a small space, trained for real, per-epoch accuracy kept.

    python bench/tabular/build.py TABLE [--seeds N] [--workers 2]

TABLE is one of the tables below. Each has its space file beside this script (``TABLE.yaml``),
a real dataset that works offline, and the budget tiers ``bench/search.py`` replays it at. Every
config of the space (each architecture at each listed keep rate) whose train cost fits the
largest tier is trained with each of ``--seeds`` training seeds, one CPU thread per run and
``--workers`` runs at a time. Each run's validation accuracy after every epoch, its test accuracy
and its seconds per epoch go into ``bench/tabular/TABLE.parquet``, with the tiers, the space and
the dataset in the table's metadata (``bench/tabular/README.md`` documents the layout). Finished
runs are kept in a ``.jsonl`` beside the table, so an interrupted build continues where it stopped.

- ``fashion_mnist``: a fixed subset of Fashion-MNIST (Debian's ``dataset-fashion-mnist``; 4,000
  train / 2,000 val / 2,000 test images), 4 epochs, two widths.
- ``fashion_long``: the same subset, vit_micro only, 12 epochs with 3 of warm-up and augmentation.
- ``sign_digits``: the Sign Language Digits photographs (``../shared/data/sign-language-digits``,
  Apache-2.0; pdsweep's seeded stratified folder split), 32 and 64 px, 14 epochs with 2 of warm-up.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/datasets.py

SPLITS = {"train": 4000, "val": 2000, "test": 2000}


@dataclass(frozen=True)
class TableSpec:
    name: str
    dataset: str  # "fashion-subset" or a pdsweep dataset spec
    described: str  # the dataset, in words, for the table's metadata
    tiers: tuple[float, ...]  # GFLOPs; the largest bounds the configs trained
    seeds: int

    @property
    def space(self) -> Path:
        return HERE / f"{self.name}.yaml"

    @property
    def path(self) -> Path:
        return HERE / f"{self.name}.parquet"


TABLES = {
    spec.name: spec
    for spec in (
        TableSpec("fashion_mnist", "fashion-subset",
                  "fashion-mnist subset " + "/".join(f"{v}" for v in SPLITS.values()) + " train/val/test",
                  (0.004, 0.01, 0.03), 3),
        TableSpec("fashion_long", "fashion-subset",
                  "fashion-mnist subset " + "/".join(f"{v}" for v in SPLITS.values()) + " train/val/test, 12 epochs",
                  (0.002, 0.006, 0.016), 2),
        TableSpec("sign_digits", "folder:" + str(HERE.parents[2] / "shared" / "data" / "sign-language-digits"),
                  "sign language digits photos 1444/308/310 train/val/test", (0.002, 0.005, 0.018), 3),
    )
}


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


def dataset_of(spec: TableSpec, cache: Path) -> str:
    return f"npz:{subset_npz(cache)}" if spec.dataset == "fashion-subset" else spec.dataset


def configs(spec: TableSpec) -> list:
    """Every config of the table's space (each architecture at each listed keep rate) under its largest tier."""
    import pdsweep
    from pdsweep.cost import Budget
    from pdsweep.sweep.sampler import BudgetSampler

    space = pdsweep.load_space(str(spec.space))
    return BudgetSampler(space, Budget(max(spec.tiers)), "fill", num_classes=10).grid()


def _run(job: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    from pdsweep import load_space
    from pdsweep.training.data import load_dataset
    from pdsweep.training.loop import train

    config, seed, space, dataset_spec, cache = job
    settings = replace(load_space(str(space)).training, seed=seed)
    dataset = load_dataset(dataset_spec, config.resolution, cache_dir=cache)
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


def write_table(path: Path, rows: list[dict], meta: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(sorted(rows, key=lambda r: (r["train_gflops"], r["config"], r["seed"])))
    table = table.replace_schema_metadata({"pdsweep.tabular": json.dumps(meta)})
    pq.write_table(table, path, compression="zstd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=sorted(TABLES))
    parser.add_argument("--seeds", type=int, help="training seeds per config (default: the table's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "pdsweep-bench-cache")
    args = parser.parse_args()

    spec = TABLES[args.table]
    seeds = args.seeds or spec.seeds
    dataset = dataset_of(spec, args.cache_dir)
    from pdsweep.sweep.searcher import longest_first

    jobs = [(c, seed, spec.space, dataset, args.cache_dir) for c in longest_first(configs(spec)) for seed in range(seeds)]
    partial = spec.path.with_suffix(".jsonl")
    done = [json.loads(line) for line in partial.read_text().splitlines()] if partial.is_file() else []
    finished = {(r["config"], r["seed"]) for r in done}
    todo = [job for job in jobs if (job[0].name, job[1]) not in finished]
    print(f"{len(jobs)} runs ({len(jobs) // seeds} configs x {seeds} seeds), {len(todo)} to go", flush=True)
    started = time.perf_counter()
    # Each data resolution is cached once before the workers start, so they never build it twice.
    from pdsweep.training.data import load_dataset

    for resolution in sorted({c.resolution for c, *_ in jobs}):
        load_dataset(dataset, resolution, cache_dir=args.cache_dir)
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool, partial.open("a") as log:
        for count, row in enumerate(pool.imap_unordered(_run, todo), 1):
            log.write(json.dumps(row) + "\n")
            log.flush()
            done.append(row)
            print(f"[{count}/{len(todo)} {time.perf_counter() - started:.0f} s] {row['config']} seed {row['seed']}: "
                  f"val {row['val_accuracy'][-1]:.1%} test {row['test_accuracy']:.1%}", flush=True)
    meta = {
        "dataset": spec.described, "space": spec.space.name, "tiers": list(spec.tiers),
        "max_gflops": max(spec.tiers), "seeds": seeds, "threads_per_run": 1, "workers": args.workers,
        "machine": f"{platform.machine()} CPU", "built": time.strftime("%Y-%m-%d"),
    }
    write_table(spec.path, done, meta)
    print(f"wrote {spec.path} ({len(done)} runs) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
