"""Benchmark: what only a GPU can show, in one command of a few minutes.

    python bench/gpu.py [--dry-run] [--json-out bench/gpu.json] [--no-record] [--skip memory,step,packing]

Four checks, each timed and written out as it finishes (a run cut short keeps what it measured):

1. **Memory model vs ``torch.cuda.max_memory_allocated``**: twelve configs (DeiT-Ti/S/B, 224
   and 448 px, keep 1/0.5/0.25, an ensemble of 2, batch 32-128, bf16-mixed and fp32, SGD and
   AdamW): the predicted peak (``pdsweep.cost.memory``), the measured peak of a training step
   (``pdsweep.training.verify.measure_cuda_peak``: the second step, from the allocation before
   the model existed), and the error. Goal: within 15%.
2. **Step time vs FLOPs**: DeiT-B/16 at 224 and 448 px, keep 1, 0.5, 0.25, bf16, batch 64,
   measured interleaved (1, 0.5, 0.25, 1, ...; the median per point): the time ratio against the
   FLOP ratio (goal: within 10%), and the model-FLOPs utilisation, 6 x train FLOPs per image x
   images per second / the GPU's dense bf16 peak (``train_flops`` is one forward at the training
   keep rate, in fvcore's multiply-adds: a training step is 3 forwards' work, 2 FLOPs each).
   Goal: >= 40% at keep 0.5, 224 px. Below that, the profiler's top kernels of one step say
   where the time goes.
3. **Packing**: a 4-trial sweep of small configs (``run_sweep`` on local Ray, GPU shares sized by
   the memory model): the share each trial held, its start and end (did they overlap on the one
   GPU?), and its measured peak against its share of the GPU's memory.
4. **The SDPA backend** that ran at each step-time point (flash, memory-efficient, cuDNN or the
   math fallback), from the profiler's op names.

``--dry-run`` runs the same code on the CPU at toy sizes (tiny models, 32-64 px, a few steps;
memory is the profiler's CPU peak instead of CUDA's), so the script is known to work before a
GPU is at hand. Without ``--dry-run`` on a machine with no CUDA GPU it exits 2 with one line.
Writes every number to ``--json-out`` and a Markdown section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results import record

# Dense bf16 peak (no sparsity) in TFLOP/s, by a name torch.cuda.get_device_name contains.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
                    "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "RTX 4090": 165.0}


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the GPU's sizes, or the dry run's toys."""

    memory: list[tuple[Any, ...]]  # model, px, patch, keep, ensemble, batch, precision, optimizer[, attention,
    # micro-batch size, member turns]
    step: tuple[str, int, tuple[int, ...], int, str]  # model, patch, resolutions, batch, precision
    step_repeats: int
    packing: tuple[str, int, int]  # model, px, patch of the packing sweep
    packing_dataset: str
    packing_cpus: int  # local Ray's CPUs: 4 trials at once on the GPU; the dry run fits its host's 2 cores


GPU = Sizes(
    memory=[
        ("deit_tiny", 224, 16, 1.0, 1, 128, "bf16-mixed", "adamw"),
        ("deit_tiny", 448, 16, 0.5, 1, 64, "bf16-mixed", "adamw"),
        ("deit_tiny", 224, 16, 0.25, 2, 128, "fp32", "sgd"),
        ("deit_small", 224, 16, 1.0, 1, 64, "fp32", "adamw"),
        ("deit_small", 224, 16, 0.5, 2, 64, "bf16-mixed", "adamw"),
        ("deit_small", 448, 16, 0.25, 1, 64, "bf16-mixed", "sgd"),
        ("deit_small", 448, 16, 1.0, 1, 32, "bf16-mixed", "adamw"),
        ("deit_base", 224, 16, 1.0, 1, 64, "bf16-mixed", "adamw"),
        ("deit_base", 224, 16, 0.5, 1, 128, "fp32", "adamw"),
        ("deit_base", 224, 16, 0.25, 2, 64, "bf16-mixed", "sgd"),
        ("deit_base", 448, 16, 0.5, 1, 32, "bf16-mixed", "adamw"),
        ("deit_base", 448, 16, 0.25, 1, 64, "fp32", "sgd"),
        # timm's unfused attention (training.attention: eager): each block keeps its T x T matrices
        ("deit_small", 448, 16, 1.0, 1, 32, "bf16-mixed", "adamw", "eager"),
        ("deit_base", 224, 16, 0.5, 1, 64, "bf16-mixed", "adamw", "eager"),
        ("deit_base", 224, 16, 1.0, 1, 32, "fp32", "sgd", "eager"),
        # Swin (window-structured dropout; the patch size is its own 4): the fused figure assumes the
        # CPU's math path, which a GPU may not take (docs/swin.md)
        ("swin_tiny", 224, 4, 1.0, 1, 64, "bf16-mixed", "adamw"),
        ("swin_tiny", 224, 4, 16 / 49, 1, 64, "bf16-mixed", "adamw"),
        ("swin_small", 224, 4, 25 / 49, 1, 32, "bf16-mixed", "adamw", "eager"),
        # arranged to fit a small GPU (pdsweep/cost/arrangement.py): micro-batch size, member turns
        ("deit_base", 224, 16, 0.5, 4, 64, "bf16-mixed", "adamw", "fused", None, True),
        ("deit_small", 448, 16, 1.0, 1, 64, "bf16-mixed", "adamw", "fused", 16, None),
        ("deit_base", 448, 16, 0.5, 2, 64, "bf16-mixed", "adamw", "fused", 8, True),
    ],
    step=("deit_base", 16, (224, 448), 64, "bf16-mixed"),
    step_repeats=10,
    packing=("deit_tiny", 64, 16),
    packing_dataset="synthetic:512",
    packing_cpus=4,
)
DRY = Sizes(
    memory=[
        ("vit_micro", 32, 8, 1.0, 1, 8, "fp32", "adamw"),
        ("vit_micro", 64, 8, 0.5, 2, 4, "fp32", "sgd"),
        ("vit_micro", 64, 8, 0.25, 1, 8, "fp32", "adamw"),
        ("vit_micro", 64, 4, 1.0, 1, 8, "fp32", "adamw", "eager"),
        ("swin_micro", 56, 4, 25 / 49, 1, 8, "fp32", "adamw"),
        ("vit_micro", 64, 8, 0.5, 2, 8, "fp32", "adamw", "fused", None, True),
        ("vit_micro", 64, 4, 0.5, 1, 16, "fp32", "adamw", "fused", 4, None),
    ],
    step=("vit_micro", 8, (32, 64), 8, "fp32"),
    step_repeats=2,
    packing=("vit_micro", 32, 8),
    packing_dataset="synthetic:64",
    packing_cpus=2,
)


def _config(model: str, px: int, patch: int, keep: float, ensemble: int = 1) -> Any:
    from pdsweep.config import Config

    return Config(model, px, patch, keep_rate=keep, ensemble_size=ensemble, num_classes=10)


def check_memory(sizes: Sizes, on_gpu: bool) -> list[dict[str, Any]]:
    """Predicted and measured peak of each config's training step."""
    import torch

    from pdsweep.cost import StepSetup, describe, memory
    from pdsweep.training.verify import measure_cuda_peak, measure_memory

    rows = []
    for model, px, patch, keep, ensemble, batch, precision, optimizer, *rest in sizes.memory:
        config = _config(model, px, patch, keep, ensemble)
        attention, micro, turns = (*rest, *("fused", None, None)[len(rest) :])
        setup = StepSetup(batch, precision, optimizer, attention, micro, turns)  # type: ignore[arg-type]
        predicted = memory(config, setup).gb
        measured = (measure_cuda_peak(config, setup) if on_gpu else measure_memory(config, setup).peak) / 1e9
        if on_gpu:
            torch.cuda.empty_cache()
        rows.append({"config": config.name, "batch": batch, "precision": precision, "optimizer": optimizer,
                     "attention": attention, "arrangement": describe(setup), "predicted_gb": predicted, "measured_gb": measured, "error": predicted / measured - 1})
    return rows


def _sdpa_backend(step: Callable[[], None]) -> str:
    from pdsweep.training.kernels import attention_backend

    return attention_backend(step)


def _top_kernels(step: Callable[[], None], on_gpu: bool, count: int = 8) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        step()
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)[:count]
    return [{"name": e.key[:80], "ms": getattr(e, key, 0) / 1000} for e in events]


def check_step_time(sizes: Sizes, on_gpu: bool, peak_tflops: float | None) -> list[dict[str, Any]]:
    """Median step time per (resolution, keep rate), measured interleaved; ratios against keep 1."""
    import torch

    from pdsweep.cost import train_flops
    from pdsweep.training.loop import make_optimizer, train_step
    from pdsweep.training.models import build_model

    device = torch.device("cuda" if on_gpu else "cpu")
    model_name, patch, resolutions, batch, precision = sizes.step
    rows = []
    for px in resolutions:
        setups = {}
        for keep in (1.0, 0.5, 0.25):
            torch.manual_seed(0)
            config = _config(model_name, px, patch, keep)
            model = build_model(config).to(device).train()
            setups[keep] = (config, model, make_optimizer(model, "adamw", lr=1e-4, weight_decay=0.05))
        images = torch.randn(batch, 3, px, px, device=device)
        labels = torch.randint(0, 10, (batch,), device=device)

        def step(keep: float) -> None:
            _, model, optimizer = setups[keep]
            train_step(model, optimizer, (images, labels), precision=precision)
            if on_gpu:
                torch.cuda.synchronize()

        times: dict[float, list[float]] = {keep: [] for keep in setups}
        for repeat in range(sizes.step_repeats + 2):  # two warm-up rounds
            for keep in setups:
                began = time.perf_counter()
                step(keep)
                if repeat >= 2:
                    times[keep].append(time.perf_counter() - began)
        full = statistics.median(times[1.0])
        for keep, (config, _, _) in setups.items():
            seconds = statistics.median(times[keep])
            flops = train_flops(config)
            mfu = 6 * flops * batch / seconds / (peak_tflops * 1e12) if peak_tflops else None
            rows.append({"config": config.name, "px": px, "keep": keep, "batch": batch, "ms": seconds * 1000,
                         "flop_ratio": flops / train_flops(setups[1.0][0]), "time_ratio": seconds / full,
                         "mfu": mfu, "sdpa": _sdpa_backend(lambda: step(keep))})
        if on_gpu:
            low = next(r for r in rows if r["px"] == px and r["keep"] == 0.5)
            if low["mfu"] is not None and low["mfu"] < 0.4:
                low["top_kernels"] = _top_kernels(lambda: step(0.5), on_gpu)
        setups.clear()  # the models' memory back before the next resolution
        if on_gpu:
            torch.cuda.empty_cache()
    return rows


PACKING_SPACE = """\
axes:
  model: {model}
  resolution: {px}
  patch_size: {patch}
  depth: 1
  keep_rate: 1.0
  sampling: [random, structured, block, grid]
training:
  epochs: 2
  batch_size: 32
  precision: {precision}
  augment: false
"""


def check_packing(sizes: Sizes, on_gpu: bool, gpu_memory_gb: float | None) -> dict[str, Any]:
    """A 4-trial sweep on local Ray: shares, overlap in time, and peak memory against the share."""
    import ray

    from pdsweep.cost import train_gflops
    from pdsweep.results.rows import RESULTS_FILE, read_rows
    from pdsweep.sweep import SweepSettings, run_sweep

    model, px, patch = sizes.packing
    with tempfile.TemporaryDirectory(prefix="pdsweep-bench-gpu-") as folder:
        root = Path(folder)
        space = root / "packing.yaml"
        space.write_text(PACKING_SPACE.format(model=model, px=px, patch=patch,
                                              precision="bf16-mixed" if on_gpu else "fp32"))
        budget = train_gflops(_config(model, px, patch, 1.0)) * 1.01
        settings = SweepSettings(name="packing", space=str(space), budgets=(budget,), search="grid", trials=4,
                                 scheduler="none", dataset=sizes.packing_dataset, runs_dir=str(root / "runs"),
                                 cache_dir=str(root / "cache"), estimate=False, concurrency=4,
                                 gpu_memory_gb=gpu_memory_gb)
        lines: list[str] = []
        ray.init(num_cpus=sizes.packing_cpus, include_dashboard=False, log_to_driver=False)
        try:
            from pdsweep.sweep.cluster import resources_for
            from pdsweep.space import load_space

            training = load_space(str(space)).training
            shares = resources_for(settings, load_space(str(space)))
            run_sweep(settings, out=lines.append, err=lines.append)
        finally:
            ray.shutdown()
        rows = read_rows(settings.absolute().sweep_dir / RESULTS_FILE)
    from pdsweep.sweep.spec import TrialContext, TrialSpec

    trials = []
    for row in sorted(rows, key=lambda r: r.started_at.timestamp() if r.started_at else 0.0):
        context = TrialContext(training, settings.dataset, 0)  # the space's training: its batch, precision, optimizer
        held = shares(TrialSpec(row.config, row.budget_gflops, "search", row.seed, context).to_dict())
        share_gb = held.get("gpu", 0) * gpu_memory_gb if gpu_memory_gb and "gpu" in held else None
        trials.append({"trial": row.trial_id, "config": row.config.name, "status": row.status, "resources": held,
                       "started": row.started_at.timestamp() if row.started_at else None,
                       "ended": row.ended_at.timestamp() if row.ended_at else None,
                       "predicted_gb": row.predicted_memory_gb, "measured_gb": row.measured_memory_gb,
                       "share_gb": share_gb})
    spans = [(t["started"], t["ended"]) for t in trials if t["started"] and t["ended"]]
    overlap = max((sum(1 for s, e in spans if s <= start < e) for start, _ in spans), default=0)
    return {"trials": trials, "most_at_once": overlap, "tail": lines[-2:]}


def _markdown(result: dict[str, Any]) -> str:
    head = (f"## GPU checks (`python bench/gpu.py{' --dry-run' if result['dry_run'] else ''}`, {result['date']}, "
            f"{result['device']})")
    out = [head, ""]
    if result.get("memory"):
        out += ["Memory model vs measured peak of one training step (goal: within 15%):", "",
                "| config | batch | precision | optimizer | attention | arranged | predicted GB | measured GB | error |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {r['config']} | {r['batch']} | {r['precision']} | {r['optimizer']} | {r.get('attention', 'fused')} "
                f"| {r.get('arrangement', '-')} | {r['predicted_gb']:.3f} "
                f"| {r['measured_gb']:.3f} | {r['error']:+.1%} |" for r in result["memory"]]
        out.append("")
    if result.get("step"):
        out += ["Step time vs train FLOPs, against keep 1 at the same resolution (goal: time ratio within 10% of "
                "the FLOP ratio; MFU >= 40% at keep 0.5, 224 px):", "",
                "| config | batch | ms/step | FLOP ratio | time ratio | MFU | SDPA backend |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {r['config']} | {r['batch']} | {r['ms']:.1f} | {r['flop_ratio']:.3f} | {r['time_ratio']:.3f} "
                f"| {'-' if r['mfu'] is None else format(r['mfu'], '.1%')} | {r['sdpa']} |" for r in result["step"]]
        for r in result["step"]:
            if r.get("top_kernels"):
                out += ["", f"Top kernels of one step of {r['config']} (MFU below 40%):", ""]
                out += [f"- {k['name']}: {k['ms']:.2f} ms" for k in r["top_kernels"]]
        out.append("")
    if result.get("packing"):
        packing = result["packing"]
        out += [f"Packing: a 4-trial sweep on the local {'GPU' if not result['dry_run'] else 'CPU'}; at most "
                f"{packing['most_at_once']} trials ran at once.", "",
                "| trial | config | resources | start s | end s | predicted GB | measured GB | share GB |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        zero = min((t["started"] for t in packing["trials"] if t["started"]), default=0)

        def num(value: float | None, digits: str = ".3f") -> str:
            return "-" if value is None else format(value, digits)

        out += [f"| {t['trial']} | {t['config']} | {t['resources']} | {num(t['started'] and t['started'] - zero, '.1f')} "
                f"| {num(t['ended'] and t['ended'] - zero, '.1f')} | {num(t['predicted_gb'])} | {num(t['measured_gb'])} "
                f"| {num(t['share_gb'])} |" for t in packing["trials"]]
        out.append("")
    out.append(f"Wall time per check: {', '.join(f'{k} {v:.0f} s' for k, v in result['seconds'].items())}.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU at toy sizes")
    parser.add_argument("--json-out", type=Path, default=Path(__file__).resolve().parent / "gpu.json")
    parser.add_argument("--skip", default="", help="checks to leave out: memory, step, packing (comma-separated)")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args(argv)
    import torch

    on_gpu = not args.dry_run
    if on_gpu and not torch.cuda.is_available():
        print("bench/gpu.py: error: no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU "
              "machine, or with --dry-run for the CPU path.", file=sys.stderr)
        return 2
    sizes = GPU if on_gpu else DRY
    name = torch.cuda.get_device_name(0) if on_gpu else f"{platform.machine()} CPU (dry run)"
    peak = next((tflops for key, tflops in BF16_PEAK_TFLOPS.items() if key in name), None) if on_gpu else None
    gpu_memory = torch.cuda.get_device_properties(0).total_memory / 1e9 if on_gpu else None
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    result: dict[str, Any] = {"dry_run": not on_gpu, "device": name, "date": time.strftime("%Y-%m-%d"),
                              "torch": torch.__version__, "cuda": torch.version.cuda, "bf16_peak_tflops": peak,
                              "gpu_memory_gb": gpu_memory, "seconds": {}}
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("memory", lambda: check_memory(sizes, on_gpu)),
        ("step", lambda: check_step_time(sizes, on_gpu, peak)),
        ("packing", lambda: check_packing(sizes, on_gpu, gpu_memory)),
    ]
    for key, check in checks:
        if key in skip:
            continue
        began = time.perf_counter()
        result[key] = check()
        result["seconds"][key] = time.perf_counter() - began
        args.json_out.write_text(json.dumps(result, indent=1, default=str))  # what was measured so far survives
        print(f"{key}: {result['seconds'][key]:.0f} s", file=sys.stderr, flush=True)
    section = _markdown(result)
    print(section)
    if not args.no_record:
        record("gpu", section, device="cpu-dry-run" if not on_gpu else "cuda")
    return 0


if __name__ == "__main__":
    sys.exit(main())
