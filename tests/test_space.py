from __future__ import annotations

from pathlib import Path

import pytest

from pdsweep.errors import PdsweepError
from pdsweep.space import Categorical, FloatRange, IntRange, load_space

VALID = """\
axes:
  model: [deit_tiny, deit_small]
  resolution: [64, 128]
  patch_size: 16
  depth: {low: 6, high: 12, step: 6}
  keep_rate: {low: 0.1, high: 1.0}
training:
  epochs: 3
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_paper_space_has_the_papers_axes() -> None:
    space = load_space("paper")
    assert space.axes["model"] == Categorical(("deit_tiny", "deit_small", "deit_base", "deit_large"))
    assert space.axes["resolution"].values() == (64, 112, 128, 224, 448, 896)
    assert space.axes["patch_size"].values() == (8, 16)
    assert space.axes["depth"].values() == (12, 24, 48)
    assert space.axes["ensemble_size"].values() == (1, 2, 4)
    assert space.keep_rate == FloatRange(0.05, 1.0)
    assert len(space.architectures()) == 4 * 6 * 2 * 3 * 3


def test_quickstart_space_loads_by_name_and_by_path() -> None:
    by_name = load_space("quickstart")
    by_path = load_space(Path(__file__).parent.parent / "search_spaces" / "quickstart.yaml")
    assert by_name.axes == by_path.axes
    assert by_name.training.precision == "fp32"  # it is meant for a CPU


def test_short_forms_and_defaults(tmp_path: Path) -> None:
    space = load_space(_write(tmp_path, VALID))
    assert space.axes["patch_size"] == Categorical((16,))
    assert space.axes["depth"] == IntRange(6, 12, 6)
    assert space.axes["ensemble_size"] == Categorical((1,))  # default
    assert space.training.epochs == 3 and space.training.batch_size == 64
    assert {c.blocks for c in space.architectures()} == {6, 12}
    assert len(space.architectures()) == 2 * 2 * 2


def test_depth_axis_may_be_omitted_for_the_presets_depth(tmp_path: Path) -> None:
    text = "axes:\n  model: deit_large\n  resolution: 224\n  patch_size: 16\n  keep_rate: 0.5\n"
    (arch,) = load_space(_write(tmp_path, text)).architectures()
    assert arch.depth is None and arch.blocks == 24


def test_stepped_keep_rate_range_lists_its_values() -> None:
    assert FloatRange(0.25, 1.0, step=0.25).values() == (0.25, 0.5, 0.75, 1.0)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("axes: [1, 2]\n", r"space.yaml: axes: this section must be a mapping"),
        ("- just a list\n", r"space.yaml: the file must be a mapping of keys"),
        (VALID + "extras: 1\n", r"space.yaml: extras: unknown key; valid keys: description, axes, configs, weights, training, finetune"),
        (VALID + "weights:\n  deit_tiny: deit tiny\n", r"weights.deit_tiny: weight source 'deit tiny' is neither a hub name"),
        (VALID + "weights:\n  deit_huge: timm/x\n", r"weights.deit_huge: unknown key; did you mean 'deit_large'\?"),
        (VALID + "weights:\n  deit_base: timm/x\n", r"weights.deit_base: the space has no model 'deit_base' \(axes.model: deit_tiny, deit_small\)"),
        (VALID + "weights: [timm/x]\n", r"weights: this section must be a mapping of keys"),
        (VALID.replace("  patch_size: 16", "  patch_size: 16\n  init: pretrained") + "weights:\n  deit_tiny: timm/x\n",
         r"axes.init: pretrained needs weights for every model, but deit_small has none; list a source under weights.deit_small"),
        (VALID.replace("  patch_size: 16", "  patch_size: 16\n  init: [scratch]"), r"axes.init\[0\]: must be one of random, pretrained, got str 'scratch'"),
        (VALID + "finetune:\n  optimizer: sgd\n", r"finetune: applies to pretrained trials, but no trial of this space starts pretrained"),
        (VALID + "weights:\n  deit_tiny: timm/x\nfinetune:\n  epochs: 9\n", r"finetune.epochs: is shared by pretrained and random trials"),
        (VALID + "weights:\n  deit_tiny: timm/x\nfinetune:\n  lr: -1\n", r"finetune.lr: must be a positive number, got int -1"),
        (VALID + "weights:\n  deit_tiny: timm/x\nfinetune:\n  momentum: 0.9\n", r"finetune.momentum: unknown key"),
        (VALID.replace("resolution:", "resolutoin:"), r"axes.resolutoin: unknown key; did you mean 'resolution'\?"),
        (VALID.replace("epochs: 3", "epoch: 3"), r"training.epoch: unknown key; did you mean 'epochs'\?"),
        (VALID.replace("{low: 0.1, high: 1.0}", "{low: 0.1, hi: 1.0}"), r"axes.keep_rate.hi: unknown key"),
        (VALID.replace("[64, 128]", "[64, big]"), r"axes.resolution\[1\]: must be a positive integer \(pixels\), got str 'big'"),
        (VALID.replace("[deit_tiny, deit_small]", "deit_huge"), r"axes.model: must be one of vit_micro, deit_tiny"),
        (VALID.replace("{low: 0.1, high: 1.0}", "1.5"), r"axes.keep_rate: must be a number in \(0, 1\], got float 1.5"),
        (VALID.replace("{low: 0.1, high: 1.0}", "{low: 0.9, high: 0.1}"), r"axes.keep_rate: `low <= high` must hold"),
        (VALID.replace("{low: 0.1, high: 1.0}", "{low: 0.1}"), r"axes.keep_rate.high: is missing"),
        (VALID.replace("[64, 128]", "[]"), r"axes.resolution: the list is empty"),
        (VALID.replace("[64, 128]", "[64, 64]"), r"axes.resolution: lists a value twice"),
        (VALID.replace("[deit_tiny, deit_small]", "{low: 1, high: 2}"), r"axes.model: takes a value or a list"),
        (VALID.replace("[64, 128]", "[64, 100]"), r"axes: every patch size must divide every resolution, but 100/16 do not"),
        (VALID.replace("  patch_size: 16\n", ""), r"axes.patch_size: is missing"),
        (VALID.replace("epochs: 3", "epochs: 0"), r"training.epochs: must be a positive integer, got int 0"),
        (VALID.replace("epochs: 3", "optimizer: lamb"), r"training.optimizer: must be one of sgd, adamw"),
        (VALID.replace("epochs: 3", "lr: fast"), r"training.lr: must be a positive number"),
        ("axes:\n  model: [deit_tiny\n", r"space.yaml: not valid YAML at line \d+, column \d+"),
        ("description: x\n", r"space.yaml: axes: is missing; a space needs at least: model, resolution, patch_size, keep_rate"),
        (VALID.replace("{low: 0.1, high: 1.0}", "{low: 0.1, high: 1.0, step: .inf}"), r"axes.keep_rate.step: must be a positive number, got float inf"),
        (VALID.replace("{low: 0.1, high: 1.0}", "{low: 0.1, high: 1.0, step: 0.0000001}"), r"axes.keep_rate: spans 9,000,001 values, more than 10,000"),
        (VALID.replace("[64, 128]", "{low: 16, high: 1000000000, step: 16}"), r"axes.resolution: spans 62,500,000 values"),
        (VALID.replace("[deit_tiny, deit_small]", "[[deit_tiny]]"), r"axes.model\[0\]: must be one of vit_micro.*got list \['deit_tiny'\]"),
        (VALID.replace("epochs: 3", "epochs: 3\n  epochs: 4"), r"not valid YAML at line 9, column 3: duplicate key 'epochs'"),
        (VALID.replace("training:\n  epochs: 3", "training: []"), r"training: this section must be a mapping of keys"),
        (VALID.replace("training:\n  epochs: 3", "training: false"), r"training: this section must be a mapping"),
        (VALID.replace("epochs: 3", "lr: .inf"), r"training.lr: must be a positive number, got float inf"),
        (VALID.replace("{low: 0.1, high: 1.0}", "{low: 5e-2, high: 1.0}"), r"axes.keep_rate.low: must be a number in \(0, 1\], got str '5e-2' \(YAML reads numbers like 5e-2 as text: write 5.0e-2 or 0.05\)"),
        (VALID.replace("{low: 0.1, high: 1.0}", "{low: 0.1, high: 1.0, step: 0.1, log: true}"), r"axes.keep_rate: takes step or log, not both"),
        (VALID.replace("{low: 0.1, high: 1.0}", "{low: 0.1, high: 1.0, log: null}"), r"axes.keep_rate.log: must be true or false, got nothing"),
        ("axes:\n  ? [a, b]\n  : 1\n", r"not valid YAML at line 2, column 5: a key must be text, not list"),
        (VALID.replace("[64, 128]", "{low: 8, high: 4096, step: 8}").replace("  patch_size: 16", "  patch_size: [8]\n  ensemble_size: {low: 1, high: 400}").replace("[deit_tiny, deit_small]", "[deit_tiny, deit_small]"),
         r"axes: 819,200 architectures is more than 100,000"),
    ],
)
def test_malformed_space_names_file_key_and_what_is_allowed(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(PdsweepError, match=match):
        load_space(_write(tmp_path, text))


def test_weights_init_and_finetune_sections(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    text = VALID + "weights:\n  deit_tiny: w/tiny.safetensors\n  deit_small: timm/deit_small_patch16_224.fb_in1k\nfinetune:\n  optimizer: sgd\n  lr: 0.01\n"
    space = load_space(_write(tmp_path, text))
    assert space.inits == ("pretrained",)  # no init axis: pretrained where weights are given
    assert space.weights["deit_tiny"].location == str(tmp_path / "w" / "tiny.safetensors")  # beside the space file
    assert space.weights["deit_small"].kind == "hub"
    assert {c.init for c in space.architectures()} == {"pretrained"}
    tuned = space.training_for("pretrained")
    assert (tuned.optimizer, tuned.lr, tuned.epochs) == ("sgd", 0.01, 3)  # the training section under the finetune one
    assert space.training_for("random") == space.training and space.training.optimizer == "adamw"
    half = load_space(_write(tmp_path, VALID + "weights:\n  deit_tiny: timm/x\n"))
    assert set(half.inits) == {"random", "pretrained"}
    assert {(c.model, c.init) for c in half.architectures()} == {("deit_tiny", "pretrained"), ("deit_small", "random")}
    both = load_space(_write(tmp_path, VALID.replace("  patch_size: 16", "  patch_size: 16\n  init: [pretrained, random]")
                             + "weights:\n  deit_tiny: timm/x\n  deit_small: timm/y\n"))
    assert len(both.architectures()) == 2 * len(half.architectures())


def test_missing_space_file_lists_the_bundled_spaces(tmp_path: Path) -> None:
    with pytest.raises(PdsweepError, match=r"space file '.*nope.yaml' not found; .*bundled space name \(finetune, paper, quickstart; the study.s recipes: paper/depth, "):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(PdsweepError, match=r"is a directory"):
        load_space(tmp_path)


def test_settings_and_spaces_built_in_code_follow_the_same_rules() -> None:
    from pdsweep.space import SearchSpace, TrainingSettings

    with pytest.raises(PdsweepError, match=r"training.batch_size: must be a positive integer, got int 0"):
        TrainingSettings(batch_size=0)
    with pytest.raises(PdsweepError, match=r"axes.keep_rate: is missing"):
        SearchSpace("x", {"model": Categorical(("deit_tiny",)), "resolution": Categorical((64,)), "patch_size": Categorical((8,))})


def test_bundled_space_by_file_name_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_space("paper.yaml").name == "paper"
    with pytest.raises(PdsweepError, match=r"no space given"):
        load_space("")
