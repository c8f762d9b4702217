"""Benchmark: does dropping patches save the time its FLOPs promise?

    python bench/step_time.py [--model deit_tiny] [--patch-size 16] [--batch-size 16]
                              [--repeats 5] [--device auto] [--no-record]
    python bench/step_time.py --model swin_tiny --resolutions 112,224
    python bench/step_time.py --arrangements [--model deit_tiny --resolutions 224 --batch-size 32]

For each resolution, one training step (forward, backward, optimizer step; pdsweep's own
``train_step``) at keep rates 1, 0.5 and 0.25 (a Swin: the rates its window expresses, 1, 36/49,
25/49, 16/49 and 9/49), measured interleaved (1, 0.5, 0.25, 1, 0.5, ...) so drifts of a noisy
machine hit all alike; the median per keep rate gives the time ratio k/1, printed beside the
train-FLOP ratio k/1. Records the table in bench/RESULTS.md (a Swin's as ``step_time_swin``).

On a CPU it runs twice, in child processes: with glibc's default allocator settings, and with
its mmap and trim thresholds raised (``GLIBC_TUNABLES``). By default glibc hands large freed
blocks back to the kernel, so every step of a long sequence page-faults its activations anew
(at 448 px, keep 1: ~356,000 minor faults and ~1.9 s of system time per 5.9 s step); that is
time the FLOPs do not predict, and it falls on the full-length step only.

``--arrangements``: the time of each way a step is arranged to fit memory
(:mod:`pdsweep.cost.arrangement`) against the plain step, for an ensemble of two at keep 0.5:
the members in turns (a step of each member's turn, one after the other; on a GPU the copies to
and from the host, once an epoch, are timed apart) and the batch in 2, 4 and 8 micro-batches,
measured interleaved; with each one's predicted peak memory. Records ``step_time_arrangements``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from pdsweep.config import Config
from pdsweep.cost import train_flops
from pdsweep.training.models import build_model
from pdsweep.cost import StepSetup, memory
from pdsweep.training.loop import make_optimizer, member_step, on_device, train_step

from results import record

VIT_KEEP_RATES = (1.0, 0.5, 0.25)
SWIN_KEEP_RATES = tuple((n / 7) ** 2 for n in (7, 6, 5, 4, 3))


SWIN_READING = [
    "A Swin keeps n of 7 rows and columns per window in every stage, so its saving holds to the last",
    "stage; what does not shrink is the patch embedding on the full grid and the optimizer step over",
    "parameters that sit mostly in the late stages: at 112 px those weigh most at the lowest keep rates.",
]


def keep_rates(model: str) -> tuple[float, ...]:
    return SWIN_KEEP_RATES if Config(model, 224, 4).family == "swin" else VIT_KEEP_RATES
TUNED = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


_TABLE_HEAD = [
    "| px | tokens at keep 1 | keep k | ms at 1 | ms at k | FLOP ratio k/1 | time ratio k/1 | time over FLOPs |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
]


def measure(config: Config, batch_size: int, repeats: int, device: torch.device) -> dict[float, float]:
    """Median seconds per training step for each keep rate, measured interleaved."""
    precision = "bf16-mixed" if device.type == "cuda" else "fp32"
    setups = {}
    rates = keep_rates(config.model)
    for keep_rate in rates:
        torch.manual_seed(0)
        c = Config(config.model, config.resolution, config.patch_size, keep_rate=keep_rate, depth=config.depth)
        model = build_model(c).to(device).train()
        setups[keep_rate] = (model, make_optimizer(model, "adamw", lr=1e-4, weight_decay=0.05))
    images = torch.randn(batch_size, 3, config.resolution, config.resolution, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    times: dict[float, list[float]] = {k: [] for k in rates}
    for rep in range(repeats + 1):
        for keep_rate, (model, optimizer) in setups.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            train_step(model, optimizer, (images, labels), precision=precision)  # .item() syncs
            if rep:  # the first round warms up allocators and kernels
                times[keep_rate].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def measure_arrangements(config: Config, batch_size: int, repeats: int,
                         device: torch.device) -> tuple[dict[str, float], float, dict[str, float]]:
    """Median seconds per ensemble step of each arrangement, measured interleaved; the seconds of
    one turn's copies to the device and back (0 on a CPU); each arrangement's predicted peak GB."""
    precision = "bf16-mixed" if device.type == "cuda" else "fp32"
    torch.manual_seed(0)
    model = build_model(config).to(device).train()
    optimizer = make_optimizer(model, "adamw", lr=1e-4, weight_decay=0.05)
    images = torch.randn(batch_size, 3, config.resolution, config.resolution, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    parts = [p for p in (2, 4, 8) if p <= batch_size]

    def turns() -> None:
        for member in model.members:  # each its own step, as in its turn (the others' state idle)
            optimizer.zero_grad(set_to_none=True)
            member_step(member, (images, labels), precision=precision)
            optimizer.step()

    arrangements = {"as it is": lambda: train_step(model, optimizer, (images, labels), precision=precision),
                    "member turns": turns}
    for n in parts:
        micro = -(-batch_size // n)
        arrangements[f"{n} micro-batches of {micro}"] = (
            lambda micro=micro: train_step(model, optimizer, (images, labels), precision=precision, micro_batch_size=micro))
    times: dict[str, list[float]] = {name: [] for name in arrangements}
    for rep in range(repeats + 1):
        for name, step in arrangements.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()  # .item() syncs
            if rep:
                times[name].append(time.perf_counter() - start)
    copies = 0.0
    if device.type == "cuda":
        model.cpu()
        start = time.perf_counter()
        with on_device(model.members[0], device, optimizer):
            torch.cuda.synchronize(device)
        copies = (time.perf_counter() - start) * len(model.members)
    setup = StepSetup(batch_size, precision, "adamw")
    predicted = {"as it is": memory(config, setup).gb, "member turns": memory(config, StepSetup(
        batch_size, precision, "adamw", member_turns=True)).gb}
    for n in parts:
        predicted[f"{n} micro-batches of {-(-batch_size // n)}"] = memory(config, StepSetup(
            batch_size, precision, "adamw", micro_batch_size=-(-batch_size // n))).gb
    return {k: statistics.median(v) for k, v in times.items()}, copies, predicted


def _arrangements(args: argparse.Namespace, where: str, device: torch.device) -> None:
    lines = [
        f"## Arranged steps against the plain step (`python bench/step_time.py --arrangements`, "
        f"{time.strftime('%Y-%m-%d')}, {where})",
        "",
        f"{args.model}, patch {args.patch_size}, an ensemble of 2 at keep 0.5, batch {args.batch_size}, AdamW; median of "
        f"{args.repeats} interleaved ensemble steps per arrangement; memory as the model predicts it.",
        "",
    ]
    for resolution in map(int, args.resolutions.split(",")):
        config = Config(args.model, resolution, args.patch_size, keep_rate=0.5, ensemble_size=2)
        seconds, copies, predicted = measure_arrangements(config, args.batch_size, args.repeats, device)
        base = seconds["as it is"]
        lines += [f"{resolution} px ({config.tokens_kept} tokens kept):", "",
                  "| arrangement | ms per step | time ratio | predicted peak GB |", "| --- | --- | --- | --- |"]
        lines += [f"| {name} | {s * 1e3:.0f} | {s / base:.3f} | {predicted[name]:.3f} |" for name, s in seconds.items()]
        lines += ["", f"Member turns' copies to the device and back, once an epoch: {copies * 1e3:.0f} ms"
                  + (" (a CPU trains where the host keeps them: none)." if device.type == "cpu" else "."), ""]
    lines += [
        "Reading: every arrangement computes the same step (tests/test_arrangement.py); what differs is",
        "time. Member turns run the same member steps one after the other: on a CPU the same work. Micro-",
        "batches run more, smaller forwards and backwards: per-call overhead grows with their number, and",
        "on a GPU a small micro-batch leaves the device underused.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record("step_time_arrangements", text, device=device.type)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit_tiny")
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--resolutions", default="128,224,448")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--arrangements", action="store_true", help="time each way a step is arranged to fit memory")
    parser.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)  # a child run
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu" if args.device == "auto" else args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    if args.arrangements:
        _arrangements(args, where, device)
        return

    if device.type == "cpu" and not args.rows_only:
        allocators = {"glibc defaults": "", "glibc thresholds raised": TUNED}
        sections = []
        for label, tunables in allocators.items():
            env = {**os.environ, "GLIBC_TUNABLES": tunables} if tunables else {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
            child = [sys.executable, __file__, *sys.argv[1:], "--rows-only", "--no-record"]
            output = subprocess.run(child, env=env, check=True, capture_output=True, text=True).stdout
            sections.append((label, [line for line in output.splitlines() if line.startswith("| ") and line[2].isdigit()]))
            print(f"{label}:", *sections[-1][1], sep="\n", flush=True)
        _report(args, where, device, sections)
        return

    rows = []
    for resolution in map(int, args.resolutions.split(",")):
        base = Config(args.model, resolution, args.patch_size)
        seconds = measure(base, args.batch_size, args.repeats, device)
        full_flops = train_flops(base)
        for keep_rate in keep_rates(args.model)[1:]:
            flop_ratio = train_flops(Config(args.model, resolution, args.patch_size, keep_rate=keep_rate)) / full_flops
            time_ratio = seconds[keep_rate] / seconds[1.0]
            rows.append(
                f"| {resolution} | {base.tokens_kept} | {keep_rate:.4g} | {seconds[1.0] * 1e3:.0f} | "
                f"{seconds[keep_rate] * 1e3:.0f} | {flop_ratio:.3f} | {time_ratio:.3f} | {time_ratio / flop_ratio - 1:+.1%} |"
            )
            print(rows[-1], flush=True)
    if not args.rows_only:
        _report(args, where, device, [("", rows)])


def _report(args: argparse.Namespace, where: str, device: torch.device, sections: list[tuple[str, list[str]]]) -> None:
    tables = []
    for label, rows in sections:
        tables += [f"{label}:" if label else "", "", *_TABLE_HEAD, *rows, ""]
    lines = [
        f"## Train-step time vs FLOPs (`python bench/step_time.py`, {time.strftime('%Y-%m-%d')}, {where})",
        "",
        f"{args.model}, patch {Config(args.model, 224, args.patch_size).patch_size}, batch {args.batch_size}, one step = forward + backward + AdamW "
        f"step; median of {args.repeats} interleaved steps per keep rate.",
        "",
        *tables,
        "Reading: a positive last column is time that does not shrink with the tokens: the optimizer",
        "step (every parameter), the patch embedding (every patch: dropping comes after it) and per-step",
        "Python work; it dominates short sequences (128 px). A negative one is time the full-length step",
        "loses that the shorter ones do not: with glibc's defaults, page faults of its freshly allocated",
        "activations (see the docstring); with the thresholds raised, what remains is the CPU's lower",
        "throughput on the longest sequences' larger working set.",
        *(SWIN_READING if keep_rates(args.model) == SWIN_KEEP_RATES else []),
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record("step_time_swin" if keep_rates(args.model) == SWIN_KEEP_RATES else "step_time", text, device=device.type)


if __name__ == "__main__":
    main()
