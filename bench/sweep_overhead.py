"""Benchmark: what Ray Tune and pdsweep add around the trials' own work, and where it goes.

    python bench/sweep_overhead.py [--trials 16,64] [--concurrency 2] [--epochs 8,16] [--images 2400] [--no-record]

Runs real sweeps (local Ray, the synthetic dataset, a tiny ViT, random search, no early
stopping) and reads each trial's own training seconds (``train_seconds``: model, epochs, test and
robustness evaluation) and its worker clocks (``started_at``, ``ended_at``) from results.parquet.
Overhead ratio = sweep wall time x concurrency / sum of the trials' own seconds (1.0 is none).
The overhead, in slot-seconds (wall x concurrency - own), splits into:

- start-up: from the call to each slot's first trial running (driver set-up, Tune, a fresh
  worker process importing torch and timm);
- between trials: a slot's idle time from one trial's end to the next one's start;
- in trial: a trial's time on its worker outside training (dataset load, reporting);
- idle tail: slots that finished their last trial while another still ran (load imbalance;
  random search issues its trials longest first by predicted cost, which narrows it but cannot
  make the last trials end together);
- wrap-up: from the last trial's end to the call's return (report, plot, MLflow artifacts).

Ray's start is timed apart. Each sweep follows a warm-up sweep on the same Ray (the dataset cache
is built there). Records the table in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pdsweep.results import rows as results
from pdsweep.results.rows import ResultRow
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


def breakdown(rows: list[ResultRow], began: float, returned: float, slots: int) -> dict[str, float]:
    """The overhead of one sweep in slot-seconds, split as the module docstring says.

    Start-up counts the first ``slots`` starts and the idle tail the last ``slots`` ends, one per
    slot (true when every slot is busy from its first trial to its last); "between trials" is
    what remains, so the parts sum to the total by construction."""
    rows = [r for r in rows if r.started_at and r.ended_at and r.train_seconds is not None]
    starts = sorted(r.started_at.timestamp() for r in rows)  # type: ignore[union-attr]
    ends = sorted(r.ended_at.timestamp() for r in rows)  # type: ignore[union-attr]
    on_worker = sum(r.ended_at.timestamp() - r.started_at.timestamp() for r in rows)  # type: ignore[union-attr]
    own = sum(r.train_seconds for r in rows)  # type: ignore[misc]
    start_up = sum(s - began for s in starts[:slots])
    tail = sum(ends[-1] - e for e in ends[-slots:])
    wrap_up = slots * (returned - ends[-1])
    total = (returned - began) * slots - own
    return {"own": own, "total": total, "start_up": start_up, "in_trial": on_worker - own, "tail": tail,
            "wrap_up": wrap_up, "between": total - start_up - (on_worker - own) - tail - wrap_up}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="16,64", help="sweep sizes (comma-separated): the first is measured with "
                        "fresh actors and every trial length too, the others with reused actors at the first length")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--epochs", default="8,16", help="trial lengths to compare, as epochs (comma-separated)")
    parser.add_argument("--images", type=int, default=2400)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    lengths = [int(e) for e in args.epochs.split(",")]
    sizes = [int(n) for n in args.trials.split(",")]

    import ray

    work = Path(tempfile.mkdtemp(prefix="pdsweep-overhead-"))
    started = time.perf_counter()
    ray.init(num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    c = args.concurrency
    rows_out = []
    for trials, epochs, reuse in [(sizes[0], lengths[0], True), (sizes[0], lengths[0], False),
                                  *((sizes[0], e, True) for e in lengths[1:]), *((n, lengths[0], True) for n in sizes[1:])]:
        space = work / f"space-{epochs}.yaml"
        space.write_text(SPACE.format(epochs=epochs))
        settings = SweepSettings(
            name=f"overhead-{trials}-{epochs}-reuse-{reuse}", space=str(space), budgets=(1.0,), search="random",
            trials=trials, concurrency=c, scheduler="none", dataset=f"synthetic:{args.images}",
            runs_dir=str(work / "runs"), cache_dir=str(work / "cache"), reuse_actors=reuse,
            # Keep rates searched: four architectures give as many distinct configs as trials (a
            # tier trains no config twice); no wall-time estimate: its ~2 s is pdsweep's, not Ray's.
            policy="search", estimate=False,
        )
        run_sweep(replace(settings, name=f"warm-{trials}-{epochs}-{reuse}", trials=c), out=lambda _: None, err=lambda _: None)
        began = time.time()
        run_sweep(settings, out=lambda _: None, err=lambda _: None)
        returned = time.time()
        rows = results.read_rows(settings.sweep_dir / results.RESULTS_FILE)
        n, wall = len(rows), returned - began
        b = breakdown(rows, began, returned, c)
        rows_out.append(
            f"| {'yes' if reuse else 'no'} | {epochs} | {n} | {b['own'] / n:.1f} | {wall:.1f} | "
            f"{wall * c / b['own']:.3f} | {b['total'] / n:.2f} | {b['start_up']:.1f} | "
            f"{b['between'] / max(1, n - c):.2f} | {b['in_trial'] / n:.2f} | {b['tail']:.1f} | {b['wrap_up']:.1f} |"
        )
        print(rows_out[-1], flush=True)
    lines = [
        f"## Sweep overhead (`python bench/sweep_overhead.py`, {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} CPU, {os.cpu_count()} cores)",
        "",
        f"Sweeps of {' and '.join(map(str, sizes))} trials (vit_micro, 32 px, patch 4 or 8, depth 1 or 2, on "
        f"{args.images} synthetic images), random search, concurrency {c}, no early stopping. Ray's own start "
        f"(ray.init, local): {ray_start:.1f} s, not counted.",
        "",
        "Start-up is paid once per slot per sweep, mostly a fresh worker process importing ray.tune, torch and "
        "timm (about 5 s on this machine, `python -X importtime`); the idle tail once per sweep; what each trial "
        "adds is 'between trials' and 'in trial'. So the ratio falls toward 1 + (those two) / trial seconds as "
        "a sweep grows.",
        "",
        "Overhead ratio = wall x concurrency / trials' own seconds. The overhead (wall x concurrency - own, in "
        "slot-seconds) splits into start-up (call to each slot's first trial), between trials (per trial), "
        "in trial outside training (per trial), the idle tail (slots done while the last trial runs) and "
        "wrap-up (report and MLflow artifacts after the last trial).",
        "",
        "| actors reused | epochs | trials | mean own s | sweep wall s | overhead ratio | overhead per trial s "
        "| start-up slot-s | between trials s/trial | in trial s/trial | idle tail slot-s | wrap-up slot-s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows_out,
    ]
    text = "\n".join(lines)
    print(text)
    ray.shutdown()
    if not args.no_record:
        record("sweep_overhead", text)


if __name__ == "__main__":
    main()
