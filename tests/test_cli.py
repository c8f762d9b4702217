from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_line_error

FLOPS = ["flops", "--model", "deit_base", "--resolution", "224", "--patch-size", "16", "--keep-rate", "0.5"]


def test_flops_json(cli) -> None:
    result = cli(*FLOPS, "--json")
    assert result.code == 0
    r = result.json()
    assert r["tokens_kept"] == 196 // 2 + 1
    assert r["patches_kept"] == 98
    assert 0 < r["train_gflops"] < r["inference_gflops"]
    assert r["memory_gb"] > 0 and r["memory"]["batch_size"] == 64
    assert r["params"] > 80e6  # DeiT-B has ~86 M


def test_flops_verify_agrees_with_fvcore(cli) -> None:
    r = cli(*FLOPS, "--depth", "2", "--ensemble-size", "2", "--verify", "--json").json()
    assert r["fvcore_train_gflops"] == pytest.approx(r["train_gflops"], rel=1e-4)
    assert r["fvcore_inference_gflops"] == pytest.approx(r["inference_gflops"], rel=1e-4)


def test_flops_text_output(cli) -> None:
    result = cli(*FLOPS)
    assert result.code == 0
    assert result.out.startswith("deit_base-224px-p16-d12-k0.5-x1")
    assert "train GFLOPs" in result.out and "memory" in result.out


def test_plan_json_lists_only_configs_within_budget(cli) -> None:
    r = cli("plan", "--budget-gflops", "17.6", "--json").json()
    assert r["budget_gflops"] == 17.6 and r["architectures"] == 432
    assert r["feasible"] == len(r["configs"]) > 0
    keys = {"model", "resolution", "patch_size", "depth", "ensemble_size", "keep_rate", "train_gflops",
            "inference_gflops", "memory_gb"}
    for config in r["configs"]:
        assert keys <= config.keys()
        assert config["train_gflops"] <= 17.6


def test_plan_tiers_give_one_list_per_budget(cli) -> None:
    r = cli("plan", "--budget-gflops", "1.3,4.6,17.6", "--budget-memory-gb", "10", "--json").json()
    assert [t["budget_gflops"] for t in r["tiers"]] == [1.3, 4.6, 17.6]
    for tier in r["tiers"]:
        assert all(c["train_gflops"] <= tier["budget_gflops"] and c["memory_gb"] <= 10 for c in tier["configs"])
    sizes = [t["feasible"] for t in r["tiers"]]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_plan_text_and_search_policy(cli) -> None:
    result = cli("plan", "--budget-gflops", "0.02", "--space", "quickstart", "--keep-policy", "search")
    assert result.code == 0
    assert "of 36 architectures fit 0.02 GFLOPs" in result.out


def _space(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["flops", "--model", "deit_huge", "--resolution", "224", "--patch-size", "16"],
         ["unknown model 'deit_huge'", "deit_base"]),
        (["flops", "--model", "deit_base", "--resolution", "224", "--patch-size", "15"],
         ["patch size 15 does not divide resolution 224"]),
        (["flops", "--model", "deit_base", "--resolution", "224", "--patch-size", "16", "--keep-rate", "1.2"],
         ["`0 < keep_rate <= 1` must hold, but got keep_rate=1.2"]),
        (["flops", "--model", "deit_base", "--resolution", "224", "--patch-size", "16", "--keep-rate", "0"],
         ["`0 < keep_rate <= 1` must hold"]),
        (["flops", "--model", "deit_base", "--resolution", "224", "--patch-size", "16", "--batch-size", "0"],
         ["`batch_size >= 1` must hold"]),
        (["flops", "--model", "deit_base", "--resolution", "big", "--patch-size", "16"],
         ["pdsweep flops: error: argument --resolution: invalid int value: 'big'", "--help"]),
        (["plan", "--budget-gflops", "0.001"],
         ["the cheapest is deit_tiny-64px-p16-d12-k0.05-x1 at 0.01304 GFLOPs", "raise --budget-gflops to at least 0.01304,"]),
        (["plan", "--budget-gflops", "-1"], ["expected a positive number or comma-separated positive numbers"]),
        (["plan", "--budget-gflops", "inf"], ["expected a positive number", "got 'inf'"]),
        (["plan", "--budget-gflops", "1,nan"], ["got '1,nan'"]),
        (["plan", "--budget-gflops", "1", "--budget-memory-gb", "inf"], ["must be a positive, finite number, got 'inf'"]),
        (["plan", "--budget-gflops", "1", "--num-classes", "0"], ["`num_classes` must be a positive integer"]),
        (["plan", "--budget-gflops", "17.6", "--budget-memory-gb", "0.001"],
         ["the one needing least memory is", "raise --budget-memory-gb to at least 0.08"]),
        (["plan", "--budget-gflops", "1", "--space", "missing.yaml"],
         ["space file 'missing.yaml' not found", "paper, quickstart"]),
        (["plan", "--budget-gflops", "1", "--budgt-memory-gb", "2"],
         ["unrecognized arguments: --budgt-memory-gb 2 (did you mean --budget-memory-gb?)"]),
        (["plan", "--budget-gflops", "1", "--keep-policy", "max"], ["invalid choice: 'max'"]),
        ([], ["choose a command: flops, plan"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(cli(*args), *fragments)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("axes:\n  model: deit_tiny\n  resolution: 64\n  patch_size: 16\n  keep_rate: 1\n  colour: red\n",
         ["bad.yaml: axes.colour: unknown key; valid keys: model, resolution"]),
        ("axes: {model: deit_tiny, resolution: 64, patch_size: [16, 8], keep_rate: 2}\n",
         ["bad.yaml: axes.keep_rate: must be a number in (0, 1], got int 2"]),
        ("axes:\n  model: [deit_tiny\n", ["bad.yaml: not valid YAML at line"]),
    ],
)
def test_bad_space_file_is_one_line_and_exit_2(cli, tmp_path: Path, text: str, fragments: list[str]) -> None:
    assert_one_line_error(cli("plan", "--budget-gflops", "1", "--space", _space(tmp_path, text)), *fragments)


def _console_script() -> str:
    script = Path(sys.executable).parent / "pdsweep"
    return str(script) if script.exists() else shutil.which("pdsweep") or "pdsweep"


def test_console_script_exit_code_and_debug_traceback() -> None:
    args = [_console_script(), "plan", "--budget-gflops", "0.001"]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.count("\n") == 1
    debug = subprocess.run([*args, "--debug"], capture_output=True, text=True, timeout=60)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "PdsweepError" in debug.stderr


def test_plan_does_not_import_torch() -> None:
    # The planner must start instantly: torch takes seconds to import.
    code = "import sys; from pdsweep.cli import main; main(['plan', '--budget-gflops', '17.6', '--json']); print('torch' in sys.modules, file=sys.stderr)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr.strip().endswith("False")
