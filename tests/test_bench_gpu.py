"""bench/gpu.py: its dry run goes through every check on the CPU, so the script works before a GPU does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

GPU_SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


@pytest.mark.slow
def test_the_dry_run_measures_every_check_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(GPU_SCRIPT), "--dry-run", "--no-record", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and set(result["seconds"]) == {"memory", "step", "packing"}
    # Memory: the model's prediction beside a measured peak, for each toy config (both kernels, both families).
    memory = result["memory"]
    assert [row["attention"] for row in memory] == ["fused", "fused", "fused", "eager", "fused", "fused", "fused"]
    assert [row["config"].split("-")[0] for row in memory] == ["vit_micro"] * 4 + ["swin_micro"] + ["vit_micro"] * 2
    # ... and the steps arranged to fit a small GPU: an ensemble's members in turns, micro-batches.
    assert [row["arrangement"] for row in memory][-2:] == ["member turns", "micro-batch 4"]
    for row in memory:
        assert row["predicted_gb"] > 0 and row["measured_gb"] > 0
        assert row["error"] == pytest.approx(row["predicted_gb"] / row["measured_gb"] - 1)
    # Step time: three keep rates at two resolutions, each against keep 1 at its own resolution.
    steps = result["step"]
    assert sorted((r["px"], r["keep"]) for r in steps) == [(px, k) for px in (32, 64) for k in (0.25, 0.5, 1.0)]
    assert all(r["ms"] > 0 and 0 < r["flop_ratio"] <= 1 and r["sdpa"] for r in steps)
    assert all(r["time_ratio"] == 1.0 and r["flop_ratio"] == 1.0 for r in steps if r["keep"] == 1.0)
    # Packing: a real 4-trial sweep, each with the resources it held and its times.
    trials = result["packing"]["trials"]
    assert len(trials) == 4 and all(t["status"] == "completed" and t["started"] <= t["ended"] for t in trials)
    assert all("cpu" in t["resources"] for t in trials) and result["packing"]["most_at_once"] >= 1
    assert "| config | batch | precision |" in done.stdout and "Packing:" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_exits_2_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(GPU_SCRIPT), "--no-record", "--json-out", str(tmp_path / "gpu.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no CUDA GPU here" in done.stderr and "--dry-run" in done.stderr
    assert not (tmp_path / "gpu.json").exists()
