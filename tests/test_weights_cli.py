"""``pdsweep train --pretrained/--save-weights`` and ``pdsweep weights check|fetch``: hub names
from a Hugging Face cache written under a temporary HF_HOME, offline, and every bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from pdsweep.config import Config
from pdsweep.training.models import build_member
from pdsweep.training.weights import save_weights
from weights_cache import micro_state, write_hub_weights

REPO = "pdsweep-test/vit_micro_p4"
TRAIN = ["train", "--model", "vit_micro", "--resolution", "32", "--patch-size", "8", "--depth", "1", "--epochs", "1",
         "--dataset", "synthetic:40", "--json"]


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HF_HOME, offline, holding vit_micro weights (depth 2) under REPO."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PDSWEEP_CACHE", str(tmp_path / "data"))
    write_hub_weights(home / "hub", REPO, micro_state(), model_args={"num_heads": 2})
    return home


def test_train_by_hub_name_from_the_default_cache_offline(cli, hf_home: Path) -> None:
    result = cli(*TRAIN, "--pretrained", REPO)
    assert result.code == 0, result.err
    out = result.json()
    assert out["config"]["init"] == "pretrained"
    assert out["weights"]["source"]["location"] == REPO and out["weights"]["path"].startswith(str(hf_home / "hub"))
    assert out["pretrained_blocks"] == 1  # a depth-1 config takes the checkpoint's first block


def test_saved_weights_train_again_and_name_their_file(cli, tmp_path: Path, hf_home: Path) -> None:
    saved = tmp_path / "out" / "w.safetensors"
    first = cli(*TRAIN, "--ensemble-size", "2", "--save-weights", saved)
    assert first.code == 0, first.err
    assert first.json()["saved_weights"] == [str(saved), str(saved.with_name("w-2.safetensors"))]
    # The files are the trained ensemble: loaded back, it scores what the run reported, to the image.
    import torch

    from pdsweep.training.data import load_dataset
    from pdsweep.training.loop import evaluate
    from pdsweep.training.models import build_model
    from pdsweep.training.weights import load_into, read_state

    dataset = load_dataset("synthetic:40", 32, cache_dir=tmp_path / "data")
    model = build_model(Config("vit_micro", 32, 8, depth=1, ensemble_size=2, num_classes=dataset.num_classes))
    for member, path in zip(model.members, first.json()["saved_weights"]):
        load_into(member, read_state(Path(path), path)[0], head=True)
    assert evaluate(model, dataset.test, batch_size=64, device=torch.device("cpu"))["accuracy"] == first.json()["test_accuracy"]
    again = cli(*TRAIN[:-1], "--pretrained", saved, "--resolution", "64")
    assert again.code == 0, again.err
    assert "started from" in again.out and "1 of 1 blocks" in again.out


def _wide(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.safetensors"
    save_weights([build_member(Config("deit_tiny", 32, 8, depth=1))], path, model="deit_tiny", num_heads=3)
    return path


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    return path


@pytest.mark.parametrize(("extra", "fragments"), [
    (lambda t: ["--pretrained", t / "gone.safetensors"], ["--pretrained for vit_micro: weight file", "gone.safetensors' not found"]),
    (lambda t: ["--pretrained", "timm/not_cached"], ["--pretrained for vit_micro: weights timm/not_cached are not in the "
                                                    "Hugging Face cache", "pdsweep weights fetch"]),
    (lambda t: ["--pretrained", "/etc/passwd"], ["--pretrained for vit_micro: weight file '/etc/passwd' must be a timm "
                                               "state dict ending in .safetensors"]),
    (lambda t: ["--pretrained", _text(t)], ["notes.pth", "cannot be read as a state dict"]),
    (lambda t: ["--pretrained", _wide(t)], ["are a ViT of width 192, but vit_micro has width 64"]),
    (lambda t: ["--save-weights", t / "w.pt"], ["--save-weights", "must end in .safetensors"]),
    (lambda t: ["--save-weights", t], ["is a folder; give a file path ending in .safetensors"]),
    (lambda t: ["--weights-cache", t], ["--weights-cache is for --pretrained"]),
], ids=["missing-file", "not-cached", "etc-passwd", "not-a-state-dict", "other-width", "suffix", "folder", "cache-alone"])
def test_bad_weights_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path: Path, hf_home: Path, extra, fragments) -> None:
    before = set(tmp_path.rglob("*"))
    assert_one_line_error(cli(*TRAIN, *extra(tmp_path)), *fragments)
    written = {p for p in set(tmp_path.rglob("*")) - before if p.name not in ("tiny.safetensors", "notes.pth")}
    assert written == set()  # no dataset decoded, no weights saved


SPACE = """\
axes:
  model: vit_micro
  resolution: 32
  patch_size: 4
  depth: 2
  keep_rate: 1.0
weights:
  vit_micro: {source}
training:
  epochs: 1
"""


def test_weights_check_says_present_and_missing(cli, tmp_path: Path, hf_home: Path) -> None:
    present = tmp_path / "present.yaml"
    present.write_text(SPACE.format(source=REPO))
    result = cli("weights", "check", present)
    assert result.code == 0, result.err
    assert f"vit_micro: {REPO}  present" in result.out and "(2 blocks, width 64, 2 heads)" in result.out
    found = cli("weights", "check", present, "--json").json()["weights"][0]
    assert found["present"] and len(found["sha256"]) == 64 and found["size_bytes"] > 0
    missing = tmp_path / "missing.yaml"
    missing.write_text(SPACE.format(source="timm/not_cached"))
    result = cli("weights", "check", missing, "--cache-dir", tmp_path / "empty")
    assert result.code == 1
    assert "MISSING" in result.out and f"pdsweep weights fetch {missing} --cache-dir {tmp_path / 'empty'}" in result.out


def test_weights_fetch_offline_says_what_cannot_be_fetched(tmp_path: Path, hf_home: Path) -> None:
    space = tmp_path / "missing.yaml"
    space.write_text(SPACE.format(source="timm/not_cached"))
    done = subprocess.run([sys.executable, "-m", "pdsweep", "weights", "fetch", str(space)], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "MISSING" in done.stdout and "cannot be fetched" in done.stdout and "Traceback" not in done.stderr


def test_weights_of_another_width_and_spaces_without_weights(cli, tmp_path: Path, hf_home: Path) -> None:
    wide = tmp_path / "wide.yaml"
    wide.write_text(SPACE.format(source=_wide(tmp_path)))
    result = cli("weights", "check", wide)  # bad input: exit 2, the line names the model and the fix
    assert result.code == 2 and "Traceback" not in result.err
    assert "vit_micro: " in result.out and "UNUSABLE  vit_micro: weights" in result.out
    assert "are a ViT of width 192, but vit_micro has width 64; give vit_micro weights of width 64" in result.out
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    both = tmp_path / "both.yaml"
    both.write_text(SPACE.replace("  model: vit_micro", "  model: [vit_micro, deit_tiny]").format(source=junk)
                    .replace("training:", f"  deit_tiny: {REPO}\ntraining:"))
    result = cli("weights", "check", both)  # every source is reported, the unreadable one too
    assert result.code == 2
    assert "vit_micro: " in result.out and "cannot be read as a state dict" in result.out
    assert "deit_tiny: pdsweep-test/vit_micro_p4  UNUSABLE  deit_tiny: weights" in result.out
    plain = tmp_path / "plain.yaml"
    plain.write_text(SPACE.replace("weights:\n  vit_micro: {source}\n", ""))
    result = cli("weights", "check", plain)
    assert result.code == 0 and "lists no weights" in result.out


@pytest.mark.parametrize(("space", "fragments"), [
    (SPACE.format(source="timm/not_cached"), ["vit_micro: weights timm/not_cached are not in the Hugging Face cache",
                                              "pdsweep weights fetch"]),
    (SPACE.format(source="/nowhere/w.safetensors"), ["vit_micro: weight file '/nowhere/w.safetensors' not found"]),
    (SPACE.replace("  depth: 2\n", "  depth: 2\n  init: pretrained\n").replace("weights:\n  vit_micro: {source}\n", ""),
     ["axes.init: pretrained needs weights for every model, but vit_micro has none"]),
], ids=["not-cached", "missing-file", "no-weights"])
def test_run_refuses_missing_weights_before_anything_is_written(cli, tmp_path: Path, hf_home: Path, space: str,
                                                               fragments: list[str]) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(space)
    result = cli("run", "--space", path, "--budget-gflops", "1", "--runs-dir", tmp_path / "runs", "--dataset", "synthetic:40")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "runs").exists()
