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


def test_flops_costs_a_uniform_keep_as_the_mean_over_its_draws_and_any_sampling(cli) -> None:
    """flops takes the keep flags train takes: a uniform config costs the mean of the fixed configs
    it draws (a ViT: every patch count in the range; a Swin: every n), and sampling changes what is kept."""
    from pdsweep.config import Config, patches_kept
    from pdsweep.cost import train_gflops

    vit = cli("flops", "--model", "vit_micro", "--resolution", "32", "--patch-size", "8", "--keep-mode", "uniform",
              "--keep-range", "0.25,1", "--json")
    assert vit.code == 0, vit.err
    fixed = [train_gflops(Config("vit_micro", 32, 8, keep_rate=count / 16)) for count in range(patches_kept(16, 0.25), 17)]
    assert vit.json()["train_gflops"] == pytest.approx(sum(fixed) / len(fixed), rel=1e-9)
    assert vit.json()["config"]["keep_mode"] == "uniform" and vit.json()["eq1_gflops"] is None
    swin = cli("flops", "--model", "swin_tiny", "--resolution", "224", "--keep-mode", "uniform", "--keep-range",
               "9/49,36/49", "--json")
    assert swin.code == 0, swin.err
    fixed = [train_gflops(Config("swin_tiny", 224, 4, keep_rate=(n / 7) ** 2)) for n in (3, 4, 5, 6)]
    assert swin.json()["train_gflops"] == pytest.approx(sum(fixed) / 4, rel=1e-9)
    structured = cli("flops", "--model", "vit_micro", "--resolution", "64", "--patch-size", "8", "--keep-rate", "0.3",
                     "--sampling", "structured", "--json").json()
    assert structured["patches_kept"] == Config("vit_micro", 64, 8, keep_rate=0.3, sampling="structured").patches_kept
    assert "drawn per step" in cli("flops", "--model", "swin_tiny", "--resolution", "224", "--keep-mode", "uniform",
                                   "--keep-range", "0.1837,1").out


@pytest.mark.parametrize(("args", "fragment"), [
    (("--keep-mode", "uniform", "--keep-range", "0.25,1", "--verify"), "--verify counts one forward pass"),
    (("--keep-range", "0.25,1"), "--keep-range is for --keep-mode uniform"),
    (("--keep-mode", "uniform"), "--keep-mode uniform needs --keep-range"),
    (("--keep-mode", "uniform", "--keep-range", "a,b"), "--keep-range takes LOW,HIGH"),
])
def test_flops_refuses_keep_flags_that_do_not_make_one_costable_config(cli, args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(cli("flops", "--model", "vit_micro", "--resolution", "32", "--patch-size", "8", *args), fragment)
    if "--verify" not in args:
        return
    curve = cli("flops", "--model", "vit_micro", "--curve", "--keep-mode", "uniform")
    assert_one_line_error(curve, "--curve spans every resolution", "drop --keep-mode")


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


def test_plan_text_tells_apart_rows_that_differ_in_sampling_or_keep_mode(cli, tmp_path: Path) -> None:
    space = _space(tmp_path, "axes: {model: vit_micro, resolution: 32, patch_size: 8, sampling: [random, structured],\n"
                             "       keep_mode: [fixed, uniform], keep_rate: {low: 0.25, high: 1.0}}\n")
    result = cli("plan", "--space", space, "--budget-gflops", "1")
    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()[1:6]
    assert header.split()[-1] == "sampling"
    # Four configs, four different rows: the uniform ones show their range, every row its sampling.
    assert len(set(rows)) == 4 and sum("0.250~1.000" in row for row in rows) == 2
    assert {row.split()[-1] for row in rows} == {"random", "structured"}
    assert "drawn per step from the range" in result.out
    plain = cli("plan", "--space", "quickstart", "--budget-gflops", "0.02").out
    assert "sampling" not in plain.splitlines()[1] and "~" not in plain  # the columns only where the space varies them


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


TRAIN = ["train", "--model", "vit_micro", "--resolution", "32", "--patch-size", "8", "--depth", "1", "--epochs", "1",
         "--dataset", "synthetic:40"]


def test_train_json(cli, tmp_path: Path) -> None:
    result = cli(*TRAIN, "--keep-rate", "0.5", "--cache-dir", tmp_path, "--json")
    assert result.code == 0, result.err
    r = result.json()
    for key in ("val_accuracy", "test_accuracy", "num_classes", "train_gflops", "epochs", "seconds", "robustness"):
        assert key in r
    assert r["num_classes"] == 4 and r["epochs"] == 1
    assert set(r["robustness"]) == {"1.0", "0.75", "0.5", "0.25"}
    assert "epoch 1/1" in result.err  # the progress line


def test_train_text_with_uniform_keep_mode_and_checkpoint(cli, tmp_path: Path) -> None:
    args = [*TRAIN, "--keep-mode", "uniform", "--keep-range", "0.25,1", "--sampling", "grid",
            "--cache-dir", tmp_path, "--checkpoint-dir", tmp_path / "ckpt"]
    result = cli(*args)
    assert result.code == 0, result.err
    assert "test accuracy" in result.out and (tmp_path / "ckpt" / "checkpoint.pt").is_file()


def _one_class(tmp_path: Path) -> Path:
    (tmp_path / "d" / "only").mkdir(parents=True)
    return tmp_path / "d"


def _empty_class(tmp_path: Path) -> Path:
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "d" / "a" / "x.png")
    return tmp_path / "d"


def _npz_no_keys(tmp_path: Path) -> Path:
    import numpy as np

    np.savez(tmp_path / "x.npz", x=np.zeros(3))
    return tmp_path / "x.npz"


def _npz_one_class(tmp_path: Path) -> Path:
    import numpy as np

    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.zeros((6, 8, 8), np.uint8)
        arrays[f"{split}_labels"] = np.zeros(6, np.int64)
    np.savez(tmp_path / "one.npz", **arrays)
    return tmp_path / "one.npz"


def _parquet_no_columns(tmp_path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1]}), tmp_path / "x.parquet")
    return tmp_path / "x.parquet"


@pytest.mark.parametrize(
    ("dataset", "fragments"),
    [
        (lambda t: "folder:" + str(t / "nope"), ["dataset path", "does not exist; check --dataset folder:"]),
        (lambda t: "folder:" + str(_one_class(t)), ["at least 2 classes, found only 'only'"]),
        (lambda t: "folder:" + str(_empty_class(t)), ["class folder", "has no images; add images or remove the folder"]),
        (lambda t: "npz:" + str(_npz_no_keys(t)), ["lacks train_images", "it has x"]),
        (lambda t: "npz:" + str(_npz_one_class(t)), ["has 1 class in train_labels; a classifier needs at least 2"]),
        (lambda t: "parquet:" + str(_parquet_no_columns(t)), ["has no column 'image', 'label'; its columns are a"]),
        (lambda t: "mnist", ["unknown dataset kind 'mnist'"]),
    ],
    ids=["missing", "one-class", "empty-class", "npz-keys", "npz-one-class", "parquet-columns", "kind"],
)
def test_train_bad_dataset_is_one_line_and_exit_2(cli, tmp_path: Path, dataset, fragments: list[str]) -> None:
    args = [a for a in TRAIN if a not in ("--dataset", "synthetic:40")]
    assert_one_line_error(cli(*args, "--dataset", dataset(tmp_path), "--cache-dir", tmp_path / "cache"), *fragments)


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--keep-mode", "uniform"], ["--keep-mode uniform needs --keep-range LOW,HIGH"]),
        (["--keep-range", "0.5,1"], ["--keep-range is for --keep-mode uniform"]),
        (["--keep-mode", "uniform", "--keep-range", "0.9,0.5"], ["keep mode uniform needs `0 < keep_range_low <= keep_rate`"]),
        (["--keep-mode", "uniform", "--keep-range", "half"], ["--keep-range takes LOW,HIGH such as 0.5,1"]),
        (["--sampling", "spiral"], ["invalid choice: 'spiral'"]),
        (["--space", "nope"], ["space file 'nope' not found"]),
    ],
)
def test_train_bad_flags_are_one_line_and_exit_2(cli, tmp_path: Path, extra: list[str], fragments: list[str]) -> None:
    assert_one_line_error(cli(*TRAIN, "--cache-dir", tmp_path, *extra), *fragments)


def test_train_ensemble_too_big_for_memory(cli, tmp_path: Path) -> None:
    # Over 200 GB even in member turns and micro-batches of one: refused before any image is made.
    args = ["train", "--model", "deit_large", "--resolution", "2048", "--patch-size", "8", "--depth", "48",
            "--ensemble-size", "4", "--dataset", "synthetic:12", "--cache-dir", tmp_path, "--epochs", "1"]
    assert_one_line_error(cli(*args), "needs about", "member turns, micro-batch 1", "GB free on cpu; lower --batch-size")


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--keep-mode", "uniform", "--keep-range", "0.5,1", "--keep-rate", "0.7"], ["give --keep-range", "or --keep-rate, not both"]),
        (["--seed", "-5"], ["training.seed: must be an integer >= 0, got int -5"]),
    ],
)
def test_train_conflicting_or_bad_values(cli, tmp_path: Path, extra: list[str], fragments: list[str]) -> None:
    assert_one_line_error(cli(*TRAIN, "--cache-dir", tmp_path, *extra), *fragments)


def test_train_checkpoint_dir_that_is_a_file(cli, tmp_path: Path) -> None:
    (tmp_path / "ckpt").write_text("not a folder")
    assert_one_line_error(cli(*TRAIN, "--cache-dir", tmp_path, "--checkpoint-dir", tmp_path / "ckpt"),
                          "--checkpoint-dir", "is a file; give a folder")
