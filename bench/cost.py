"""Benchmark: the analytic cost model against fvcore, and the planner's speed.

    python bench/cost.py [--fvcore-configs 40] [--seed 0] [--no-record]

Prints tables and records them in bench/RESULTS.md (the section between the cost markers):
1. FLOPs: analytic vs fvcore (meta-device trace of the real timm model) on configs sampled
   from the paper space and ten Swin configs: largest relative difference, configs per second each, their ratio.
2. The planner: `pdsweep plan --budget-gflops 17.6` over the whole paper space, wall time of
   the whole command (process start included), best of 3.
3. Memory: predicted vs measured on the CPU (saved-for-backward bytes + real parameter,
   gradient and optimizer tensors; and the profiler's peak of a training step).
"""

from __future__ import annotations

import argparse
import platform
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from pdsweep.config import Config
from pdsweep.cost import StepSetup, eq1_flops, estimate, memory, train_flops
from pdsweep.space import load_space

from results import record



def sample_configs(count: int, seed: int) -> list[Config]:
    """Paper-space architectures at random keep rates in [0.05, 1]."""
    rng = random.Random(seed)
    architectures = load_space("paper").architectures()
    return [replace(rng.choice(architectures), keep_rate=round(rng.uniform(0.05, 1.0), 4)) for _ in range(count)]


# Swin (window-structured PatchDropout): three presets, two resolutions, the rates a window expresses.
SWIN_CONFIGS = [
    Config(model, resolution, 4, keep_rate=(n / 7) ** 2, depth=depth)
    for model, resolution, n, depth in [
        ("swin_tiny", 224, 7, None), ("swin_tiny", 224, 5, None), ("swin_tiny", 448, 4, None), ("swin_tiny", 224, 3, 10),
        ("swin_small", 224, 6, None), ("swin_small", 448, 7, None), ("swin_base", 224, 4, None),
        ("swin_base", 448, 5, None), ("swin_base", 224, 1, None), ("swin_micro", 56, 3, None),
    ]
]


def bench_flops(configs: list[Config]) -> tuple[list[str], dict[str, float]]:
    from pdsweep.training.verify import fvcore_flops

    fvcore_flops(configs[0])  # warm-up: imports, first trace
    rows, worst, fvcore_seconds = [], 0.0, 0.0
    for config in configs:
        start = time.perf_counter()
        counted = fvcore_flops(config)
        fvcore_seconds += time.perf_counter() - start
        analytic = train_flops(config)
        diff = abs(counted / analytic - 1)
        worst = max(worst, diff)
        eq1 = eq1_flops(config)
        rows.append(
            f"| {config.name} | {analytic / 1e9:.4f} | {counted / 1e9:.4f} | {diff:.2e} | "
            f"{'n/a (Swin)' if eq1 is None else f'{eq1 / analytic:.3f}'} |"
        )
    # Analytic throughput: train + inference GFLOPs + memory for many configs, objects prebuilt.
    many = sample_configs(20_000, seed=1)
    start = time.perf_counter()
    for config in many:
        estimate(config, StepSetup(64))
    analytic_rate = len(many) / (time.perf_counter() - start)
    start = time.perf_counter()
    for config in many:
        train_flops(config)
    flops_rate = len(many) / (time.perf_counter() - start)
    fvcore_rate = len(configs) / fvcore_seconds
    return rows, {
        "configs": len(configs),
        "worst_relative_difference": worst,
        "analytic_flops_per_s": flops_rate,
        "analytic_estimate_per_s": analytic_rate,
        "fvcore_per_s": fvcore_rate,
        "speedup": analytic_rate / fvcore_rate,
    }


def bench_plan() -> float:
    command = [str(Path(sys.executable).parent / "pdsweep"), "plan", "--budget-gflops", "17.6"]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


MEMORY_GRID = [
    (Config("vit_micro", 32, 4, keep_rate=0.5, depth=2), 8),
    (Config("vit_micro", 64, 4, keep_rate=0.3, depth=2), 32),
    (Config("vit_micro", 64, 4, keep_rate=0.05, depth=2), 4),
    (Config("vit_micro", 64, 8, keep_rate=0.25, depth=2, ensemble_size=2), 16),
    (Config("vit_micro", 32, 8, keep_rate=0.5, depth=3, ensemble_size=3), 2),
    (Config("deit_tiny", 64, 8, keep_rate=0.5, depth=2), 16),
    (Config("deit_tiny", 112, 16, keep_rate=0.75, depth=4), 32),
    (Config("deit_small", 64, 8, keep_rate=0.4, depth=2), 16),
]


def cpu_features() -> str:
    """The CPU features oneDNN's bf16 kernels depend on, as /proc/cpuinfo lists them."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return ""
    found = [name for name in ("avx512_bf16", "amx_bf16") if name in flags]
    return f" with {', '.join(found)}" if found else " without AVX512-BF16 or AMX"


def bench_memory() -> tuple[list[str], float, dict[str, float]]:
    from pdsweep.training.verify import measure_memory

    rows, worst_states, worst_peak = [], 0.0, {"fp32": 0.0, "bf16-mixed": 0.0}
    for config, batch_size in MEMORY_GRID:
        for precision in ("fp32", "bf16-mixed"):
            setup = StepSetup(batch_size, precision, "sgd")
            measured = measure_memory(config, setup)
            predicted = memory(config, setup)
            states = (predicted.states + predicted.activations) / measured.states_plus_activations - 1
            peak = predicted.total / measured.peak - 1
            worst_states = max(worst_states, abs(states))
            worst_peak[precision] = max(worst_peak[precision], abs(peak))
            phase = max(predicted.peak_phases, key=predicted.peak_phases.get)
            rows.append(
                f"| {config.name} | {batch_size} | {precision} | {measured.peak / 1e6:.2f} | "
                f"{predicted.total / 1e6:.2f} | {peak:+.1%} | {states:+.2%} | {phase} |"
            )
    return rows, worst_states, worst_peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fvcore-configs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    flop_rows, flops = bench_flops(sample_configs(args.fvcore_configs, args.seed) + SWIN_CONFIGS)
    plan_seconds = bench_plan()
    memory_rows, worst_states, worst_peak = bench_memory()

    lines = [
        f"## Cost model (`python bench/cost.py`, {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} CPU{cpu_features()}, {platform.python_version()})",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| configs checked against fvcore | {flops['configs']} (paper space at keep rates 0.05-1, and {len(SWIN_CONFIGS)} Swin configs) |",
        f"| largest relative difference, train GFLOPs | {flops['worst_relative_difference']:.2e} |",
        f"| analytic train FLOPs, configs/s | {flops['analytic_flops_per_s']:,.0f} |",
        f"| analytic train+inference GFLOPs+memory, configs/s | {flops['analytic_estimate_per_s']:,.0f} |",
        f"| fvcore (meta-device trace), configs/s | {flops['fvcore_per_s']:.2f} |",
        f"| analytic (full estimate) / fvcore speed | {flops['speedup']:,.0f}x |",
        f"| `pdsweep plan --budget-gflops 17.6`, paper space, whole command | {plan_seconds:.2f} s |",
        f"| memory: largest error, states + saved activations | {worst_states:.2%} |",
        f"| memory: largest error, predicted vs profiler peak, fp32 (what a CPU trains) | {worst_peak['fp32']:.1%} |",
        f"| memory: largest error, predicted vs profiler peak, bf16-mixed on this CPU | {worst_peak['bf16-mixed']:.1%} |",
        "",
        "FLOPs per config (Eq. 1 / exact shows how much the paper's approximation undercounts):",
        "",
        "| config | analytic GF | fvcore GF | rel. diff | Eq. 1 / exact |",
        "| --- | --- | --- | --- | --- |",
        *flop_rows,
        "",
        "Memory on the CPU, SGD, one training step (MB = 10^6 bytes). pdsweep trains in fp32 on a CPU; the",
        "bf16-mixed rows show what oneDNN's bf16 kernels allocate on this CPU, which differs by CPU (on one",
        "with AMX they allocate more), so the tests hold only fp32 here and bf16 against a GPU:",
        "",
        "| config | batch | precision | measured peak | predicted | error | states+saved error | peak phase |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *memory_rows,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record("cost", text)


if __name__ == "__main__":
    main()
