"""``--set KEY.PATH=VALUE``: overrides of a space file, checked as the file is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from pdsweep.errors import PdsweepError
from pdsweep.space import Categorical, FloatRange, load_space
from pdsweep.space.overrides import Override, apply_overrides, parse_overrides

VALID = """\
axes:
  model: [deit_tiny, deit_small]
  resolution: [64, 128]
  patch_size: 16
  keep_rate: {low: 0.1, high: 1.0}
training:
  epochs: 3
"""


def _write(tmp_path: Path, text: str = VALID) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_overrides_change_the_values_they_name_and_nothing_else(tmp_path: Path) -> None:
    path = _write(tmp_path)
    space = load_space(path, ["training.epochs=2", "axes.model=deit_tiny", "axes.resolution=[32,64]",
                              "axes.keep_rate.low=0.25", "training.lr=1e-3"])
    assert space.training.epochs == 2 and space.training.lr == 1e-3
    assert space.axes["model"] == Categorical(("deit_tiny",))
    assert space.axes["resolution"] == Categorical((32, 64))
    assert space.axes["keep_rate"] == FloatRange(0.25, 1.0)
    plain = load_space(path)
    assert plain.axes["patch_size"] == space.axes["patch_size"] and plain.training.batch_size == space.training.batch_size
    assert plain.training.epochs == 3  # the file is not changed
    assert load_space(path, ["training.epochs=2", "training.epochs=5"]).training.epochs == 5  # the later wins


def test_an_override_can_add_a_section_the_file_lacks(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID.replace("training:\n  epochs: 3\n", ""))
    assert load_space(path, ["training.batch_size=8"]).training.batch_size == 8
    assert load_space(path, ["axes.depth={low: 6, high: 12, step: 6}"]).axes["depth"].values() == (6, 12)


@pytest.mark.parametrize(("override", "in_file"), [
    ("training.epoch=2", "training:\n  epoch: 2\n"),  # unknown key
    ("training.epochs=two", "training:\n  epochs: two\n"),  # wrong type
    ("axes.resolution=[]", "axes:\n  resolution: []\n"),  # empty list
    ("axes.keep_rate={low: 0.9, high: 0.5}", "axes:\n  keep_rate: {low: 0.9, high: 0.5}\n"),  # upside down
    ("axes.modle=deit_tiny", "axes:\n  modle: deit_tiny\n"),  # a misspelled axis
    ("optimizer=sgd", "optimizer: sgd\n"),  # an unknown top-level key
])
def test_a_bad_override_gets_the_files_own_message(tmp_path: Path, override: str, in_file: str) -> None:
    import yaml

    base = yaml.safe_load(VALID)
    for key, section in yaml.safe_load(in_file).items():
        base[key] = {**base[key], **section} if isinstance(section, dict) and isinstance(base.get(key), dict) else section
    (tmp_path / "file").mkdir()
    bad_file = _write(tmp_path / "file", yaml.safe_dump(base))
    with pytest.raises(PdsweepError) as from_file:
        load_space(bad_file)
    path = _write(tmp_path)
    with pytest.raises(PdsweepError) as from_flag:
        load_space(path, [override])
    # The same problem, named at the same key path; the source says the flag was applied.
    problem = str(from_file.value).removeprefix(f"{bad_file}: ")
    assert problem != str(from_file.value)
    assert str(from_flag.value) == f"{path} (with --set {override}): {problem}"


@pytest.mark.parametrize(("override", "fragment"), [
    ("axes.resolution.0=32", "axes.resolution is a list, and a key path cannot go into a list; set the whole list"),
    ("axes.patch_size.low=8", "axes.patch_size is int 16, not a section with keys"),
    ("training.epochs", "give KEY.PATH=VALUE, e.g. --set training.epochs=2"),
    ("=2", "give KEY.PATH=VALUE"),
    ("training..epochs=2", "has an empty part"),
    ("training.epochs=", "no value after '='"),
    ("axes.resolution=[32,", "is not a valid YAML value"),
])
def test_overrides_that_cannot_apply_are_one_clear_error(tmp_path: Path, override: str, fragment: str) -> None:
    with pytest.raises(PdsweepError) as error:
        load_space(_write(tmp_path), [override])
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_overrides_apply_to_a_copy_in_order() -> None:
    document = {"axes": {"model": "vit_micro"}, "training": None}
    changed = apply_overrides(document, parse_overrides(["training.epochs=1", "axes.model=[vit_micro, deit_tiny]"]))
    assert changed == {"axes": {"model": ["vit_micro", "deit_tiny"]}, "training": {"epochs": 1}}
    assert document == {"axes": {"model": "vit_micro"}, "training": None}
    assert Override.parse("training.precision=bf16-mixed").value == "bf16-mixed"
    assert Override.parse("axes.keep_rate = 0.5").path == ("axes", "keep_rate")


def test_plan_and_run_take_overrides_and_name_a_bad_one(cli, tmp_path: Path) -> None:  # noqa: ANN001
    path = _write(tmp_path)
    shown = cli("plan", "--space", path, "--budget-gflops", "5", "--json", "--set", "axes.model=deit_tiny",
                "--set", "axes.resolution=64")
    assert shown.code == 0, shown.err
    configs = shown.json()["configs"]
    assert configs and {(c["model"], c["resolution"]) for c in configs} == {("deit_tiny", 64)}
    bad = cli("plan", "--space", path, "--budget-gflops", "5", "--set", "training.epoch=2")
    assert_one_line_error(bad, "training.epoch: unknown key; did you mean 'epochs'?", "(with --set training.epoch=2)")
    refused = cli("run", "--space", path, "--budget-gflops", "5", "--runs-dir", tmp_path / "runs",
                  "--set", "axes.resolution.0=32")
    assert_one_line_error(refused, "a key path cannot go into a list")
    assert not (tmp_path / "runs").exists()


def test_train_takes_training_overrides_only(cli, tmp_path: Path) -> None:  # noqa: ANN001
    train = ["train", "--model", "vit_micro", "--resolution", "32", "--patch-size", "8", "--depth", "1",
             "--dataset", "synthetic:40", "--cache-dir", tmp_path, "--json"]
    done = cli(*train, "--set", "training.epochs=1", "--set", "training.batch_size=8")
    assert done.code == 0, done.err
    assert done.json()["epochs"] == 1 and "epoch 1/1" in done.err
    refused = cli(*train, "--set", "axes.model=deit_tiny")
    assert_one_line_error(refused, "--set axes.model: train trains the config its flags give", "training.KEY")
    wrong = cli(*train, "--set", "training.epochs=0")
    assert_one_line_error(wrong, "training.epochs", "(with --set training.epochs=0)")


def test_a_sweep_records_its_overrides_and_its_trials_follow_them(ray_session, tmp_path: Path) -> None:  # noqa: ANN001
    from mlflow.tracking import MlflowClient

    from pdsweep.results import rows as results
    from pdsweep.sweep import SweepSettings, run_sweep
    from pdsweep.sweep.run import space_of
    from pdsweep.sweep.settings import read_state
    from test_sweep import TINY_SPACE

    space = _write(tmp_path, TINY_SPACE)
    overrides = ("training.epochs=1", "axes.resolution=16")
    settings = SweepSettings(name="o", space=str(space), budgets=(0.0008,), trials=2, dataset="synthetic:40",
                             runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), scheduler="none",
                             estimate=False, policy="search", overrides=overrides)  # two keep rates of one architecture
    run_sweep(settings, out=lambda _: None, err=lambda _: None)
    rows = results.read_rows(settings.absolute().sweep_dir / results.RESULTS_FILE)
    assert len(rows) == 2 and {(r.epochs_planned, r.config.resolution) for r in rows} == {(1, 16)}
    state = read_state(settings.absolute().store)
    assert state.settings.overrides == overrides
    assert json.loads((settings.absolute().sweep_dir / "sweep.json").read_text())["settings"]["overrides"] == list(overrides)
    resumed = space_of(state)  # what `resume` trains: the file's text it kept, the overrides again
    assert resumed.training.epochs == 1 and resumed.axes["resolution"].values() == (16,)
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name("space").experiment_id])
                 if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.params["overrides"] == "training.epochs=1 axes.resolution=16"
