"""Generated bad input, for every command a user types: a valid result, or one line naming the
problem and the fix with exit 2; never a traceback, and nothing left behind by a refused command.

Cases come from ``hypothesis`` with a fixed seed (the ``pdsweep`` profile, tests/conftest.py);
``pytest --hypothesis-profile pdsweep-long`` runs ten times as many, from fresh seeds. Commands
run in-process through ``pdsweep.cli.main``, as the shell would call it.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from conftest import cases
from pdsweep.cli import main
from pdsweep.presets import PRESETS

pytestmark = pytest.mark.filterwarnings("ignore")

_counter = itertools.count()


# ---- what every outcome must be -------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse's own --help/--version only
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


def check_outcome(argv: tuple[str, ...], code: int, out: str, err: str, *, ok: tuple[int, ...] = (0,)) -> None:
    """A valid result (``ok`` codes; JSON that parses when --json was asked), or exit 2 with one
    line on stderr, ``pdsweep...: error: ...``, and nothing on stdout."""
    assert "Traceback" not in err, (argv, err)
    event(f"exit {code}")  # --hypothesis-show-statistics: how many cases were refused, how many ran
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, (argv, err)
        assert lines[0].startswith("pdsweep") and ": error: " in lines[0], (argv, lines[0])
        assert len(lines[0].split(": error: ", 1)[1]) > 10, (argv, lines[0])  # says what, not just "error"
        assert out == "", (argv, out)
        return
    assert code in ok, (argv, code, err)
    if "--json" in argv and code == 0:
        json.loads(out)


def snapshot(folder: Path) -> set[tuple[str, int]]:
    """Every path under ``folder`` with its size: what a refused command may not change."""
    return {(str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("bad-input")
    previous, cache = Path.cwd(), os.environ.get("PDSWEEP_CACHE")
    os.chdir(folder)  # a default --runs-dir lands here, where the test can see it
    os.environ["PDSWEEP_CACHE"] = str(folder / "cache")  # the dry runs' dataset probes cache here
    try:
        yield folder
    finally:
        os.chdir(previous)
        if cache is None:
            os.environ.pop("PDSWEEP_CACHE", None)
        else:
            os.environ["PDSWEEP_CACHE"] = cache


def fresh(work: Path, name: str) -> Path:
    folder = work / f"{name}-{next(_counter)}"
    folder.mkdir()
    return folder


# ---- values ---------------------------------------------------------------------------------

WORDS = ["", " ", "vit_micro", "deit_tiny", "deit_base", "1e20", "16e320", "0x10", "NaN", "-inf", "-1", "0",
         "pretrained", "random", "fused", "uniform", "fixed", "grid", "structured", "sgd", "adamw", "fp32",
         "bf16-mixed", "timm/deit_tiny_patch16_224.fb_in1k", "a/b", "../x.safetensors", "/etc/passwd",
         "é中文🙂", "\x00", "\t", "yes", "~", "null", "[1, 2]", "{low: 1}"]
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2.0, max_value=2.0),
    st.text(max_size=12), st.sampled_from(WORDS),
)
keys = st.one_of(st.sampled_from(["low", "high", "step", "log", "values", "model", "epochs", "<<"]),
                 st.text(max_size=8), st.integers(-2, 2))
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=8)
ranges = st.builds(lambda low, high, extra: {"low": low, "high": high, **extra},
                   st.one_of(st.floats(-1, 2), st.integers(-5, 500)), st.one_of(st.floats(-1, 2), st.integers(-5, 500)),
                   st.dictionaries(st.sampled_from(["step", "log", "values", "lo"]), scalars, max_size=2))


# ---- space files ----------------------------------------------------------------------------

BASE = {
    "description": "generated",
    "axes": {"model": "vit_micro", "resolution": [32, 48], "patch_size": 8, "depth": [1, 2],
             "keep_rate": {"low": 0.25, "high": 1.0}},
    "training": {"epochs": 2, "batch_size": 16},
}
PATHS = ["description", "axes", "axes.model", "axes.resolution", "axes.patch_size", "axes.depth", "axes.keep_rate",
         "axes.ensemble_size", "axes.sampling", "axes.keep_mode", "axes.init", "axes.colour", "training",
         "training.epochs", "training.batch_size", "training.lr", "training.seed", "training.precision",
         "training.optimizer", "training.weight_decay", "training.warmup_epochs", "training.augment",
         "training.label_smoothing", "finetune", "finetune.lr", "finetune.epochs", "finetune.optimizer", "weights",
         "weights.vit_micro", "weights.deit_tiny", "weights.nonsense", "x-anchor", "extra", ""]


def _set(document: dict, path: str, value: Any, action: str) -> None:
    *parents, leaf = path.split(".")
    node: Any = document
    for key in parents:
        if not isinstance(node, dict):
            return
        node = node.setdefault(key, {})
    if not isinstance(node, dict):
        return
    if action == "delete":
        node.pop(leaf, None)
    elif action == "rename" and leaf in node:
        node[leaf + "s"] = node.pop(leaf)
    else:
        node[leaf] = value


mutation = st.tuples(st.sampled_from(PATHS), st.one_of(junk, ranges), st.sampled_from(["set", "set", "delete", "rename"]))


@st.composite
def space_documents(draw: st.DrawFn) -> str:
    """A space file's text: the base space with a few keys changed, removed or misspelled."""
    document = json.loads(json.dumps(BASE))
    for path, value, action in draw(st.lists(mutation, min_size=1, max_size=4)):
        if path:
            _set(document, path, value, action)
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


ANCHORED = """\
x-base: &base
  epochs: {epochs}
  batch_size: {batch}
axes:
  model: vit_micro
  resolution: {resolution}
  patch_size: 8
  keep_rate: {keep}
training:
  <<: *base
  {key}: {value}
"""


@st.composite
def anchored_documents(draw: st.DrawFn) -> str:
    """Anchors, aliases and merge keys, valid YAML that ``yaml.safe_load`` reads (or not)."""
    def flow(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()

    def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return draw(st.integers(0, 3).flatmap(lambda i: good if i else bad))

    alias = st.just("*base")
    text = ANCHORED.format(
        epochs=flow(mostly(st.integers(1, 5), scalars)), batch=flow(mostly(st.integers(1, 64), st.integers(-1, 0))),
        resolution=flow(mostly(st.sampled_from([32, [32, 48]]), st.one_of(alias, junk))),
        keep=flow(mostly(st.sampled_from([1.0, 0.5, [0.5, 1.0]]), st.one_of(alias, junk))),
        key=draw(st.sampled_from(["epochs", "lr", "lr", "seed", "<<", "nope"])),
        value=flow(mostly(st.sampled_from([0.01, 3, 7]), st.one_of(scalars, alias))),
    )
    return text.replace("'*base'", "*base")  # an alias, not the text


raw_files = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    junk.map(lambda value: yaml.safe_dump(value, allow_unicode=True).encode()),  # lists, scalars: not a mapping
    st.integers(1, 3000).map(lambda depth: ("[" * depth).encode()),
    st.integers(1, 3000).map(lambda depth: ("axes:\n  model: " + "[" * depth + "\n").encode()),
    st.sampled_from([b"", b"---\n", b"axes: *nothing\n", b"a: &x 1\nb: *x\n<<: 3\n", b"axes:\n  <<: [1, 2]\n",
                     b"\xff\xfe\x00a", b"axes: !!python/object:os.system {}\n", b"%YAML 9.9\n---\n{}"]),
)
budgets = st.one_of(st.sampled_from(["1", "0.05", "17.6", "1,2", "0", "-1", "nan", "inf", "1e400", "abc", "", "1,,2",
                                     "1e-12", "1e12", "٣"]),
                    st.floats(allow_nan=True).map(str), st.text(max_size=6))


def _plan_space(work: Path, content: bytes, budget: str, as_json: bool) -> None:
    folder = fresh(work, "space")
    space = folder / "space.yaml"
    space.write_bytes(content)
    before = snapshot(folder)
    argv = ("plan", "--space", str(space), "--budget-gflops", budget, *(["--json"] if as_json else []))
    check_outcome(argv, *run_cli(*argv))
    assert snapshot(folder) == before  # plan writes nothing


@settings(max_examples=cases(300))
@given(text=space_documents(), budget=budgets, as_json=st.booleans())
def test_generated_space_files(work: Path, text: str, budget: str, as_json: bool) -> None:
    _plan_space(work, text.encode(), budget, as_json)


@settings(max_examples=cases(100))
@given(text=anchored_documents(), as_json=st.booleans())
def test_anchors_and_merge_keys(work: Path, text: str, as_json: bool) -> None:
    _plan_space(work, text.encode(), "1", as_json)


@settings(max_examples=cases(100))
@given(content=raw_files)
def test_files_that_are_not_space_files(work: Path, content: bytes) -> None:
    _plan_space(work, content, "1", False)


def test_a_merge_key_is_read_as_yaml_reads_it(work: Path, cli) -> None:  # noqa: ANN001
    space = fresh(work, "merge") / "space.yaml"
    space.write_text(ANCHORED.format(epochs=3, batch=8, resolution=32, keep=1.0, key="lr", value=0.01))
    result = cli("plan", "--space", str(space), "--budget-gflops", "1", "--json")
    assert result.code == 0, result.err
    from pdsweep.space import load_space

    training = load_space(space).training
    assert (training.epochs, training.batch_size, training.lr) == (3, 8, 0.01)  # merged, then overridden


# ---- flags ----------------------------------------------------------------------------------

numbers = st.one_of(st.integers(-3, 2000).map(str), st.sampled_from(["0", "1", "-1", "1e3", "nan", "x", "", "2.5",
                                                                  "99999999999999999999", "0x10"]))
rates = st.one_of(st.floats(-0.5, 1.5).map(lambda v: f"{v:.3g}"), st.sampled_from(["0", "1", "nan", "inf", "-0", "x"]))
models = st.one_of(st.sampled_from(list(PRESETS)), st.sampled_from(["vit", "DEIT_TINY", "", "swin_tiny"]))


def flag(name: str, values: st.SearchStrategy[str], good: st.SearchStrategy[str] | None = None,
         required: bool = False) -> st.SearchStrategy[list[str]]:
    """``--name value`` from ``good`` (a value that works) or ``values`` (anything), or absent;
    rarely the value missing or the flag misspelled. Bad forms are rare, so that a case
    that works (or fails on one thing only) is common too."""
    given = (good if good is not None else values).map(lambda v: [name, v])
    forms = [given, given, values.map(lambda v: [name, v]), st.just([name]), values.map(lambda v: [name + "s", v])]
    return st.integers(0, 9).flatmap(
        lambda i: forms[0] if i < 5 else forms[2] if i < 7 else (forms[0] if required else st.just([])) if i < 8 else forms[i - 5])


def sometimes(strategy: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    """An optional flag: absent in 7 cases of 10 (so a case with many flags can still be valid)."""
    return st.integers(0, 9).flatmap(lambda i: st.just([]) if i < 7 else strategy)


def flag_set(*flags: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    return st.tuples(*flags).map(lambda parts: [word for part in parts for word in part])


switches = st.integers(0, 9).flatmap(lambda i: st.just([]) if i < 8 else st.lists(
    st.sampled_from(["--json", "--debug-no", "--help-me", "-x", "--", "extra"]), min_size=1, max_size=1))

small = st.sampled_from(["1", "2", "3", "4"])
flops_flags = flag_set(
    flag("--model", models, st.sampled_from(list(PRESETS)), required=True),
    flag("--resolution", numbers, st.sampled_from(["32", "64", "224", "448"]), required=True),
    flag("--patch-size", numbers, st.sampled_from(["4", "8", "16"]), required=True),
    flag("--keep-rate", rates, st.sampled_from(["1", "0.5", "0.25", "0.1"])), flag("--depth", numbers, small),
    flag("--ensemble-size", numbers, small), flag("--num-classes", numbers, st.sampled_from(["2", "10", "1000"])),
    flag("--batch-size", numbers, st.sampled_from(["1", "16", "128"])),
    flag("--precision", st.sampled_from(["fp32", "bf16-mixed", "fp16"])),
    flag("--optimizer", st.sampled_from(["sgd", "adamw", "adam"])), switches,
)


@settings(max_examples=cases(250))
@given(flags=flops_flags, as_json=st.booleans())
def test_generated_flops_flags(work: Path, flags: list[str], as_json: bool) -> None:
    argv = ("flops", *flags, *(["--json"] if as_json and "--json" not in flags else []))
    check_outcome(argv, *run_cli(*argv))


good_budgets = st.sampled_from(["1", "4.6", "17.6", "1.3,4.6", "0.05"])
# --set KEY.PATH=VALUE: keys of every section, and paths that go too far; YAML values, good and bad.
override_keys = st.sampled_from(["training.epochs", "training.lr", "training.epoch", "axes.model", "axes.resolution",
                                 "axes.resolution.0", "axes.keep_rate.low", "axes.patch_size.x", "weights.deit_tiny",
                                 "finetune.lr", "description", "nope", "training..epochs", "", "axes"])
override_values = st.one_of(st.sampled_from(["2", "0", "-1", "1e-3", "[32, 64]", "[]", "{low: 0.9, high: 0.5}", "[1,",
                                             "deit_tiny", "null", "''", "true", "0x10", "*a", "{a: 1}"]), st.text(max_size=8))
good_overrides = st.sampled_from(["training.epochs=2", "axes.patch_size=16", "axes.keep_rate={low: 0.3, high: 1}",
                                  "training.lr=1e-3"])
overrides = st.one_of(st.tuples(override_keys, override_values).map(lambda kv: f"{kv[0]}={kv[1]}"), st.text(max_size=12))
plan_flags = flag_set(
    sometimes(flag("--set", overrides, good_overrides)), sometimes(flag("--set", overrides, good_overrides)),
    flag("--budget-gflops", budgets, good_budgets, required=True),
    flag("--budget-memory-gb", st.one_of(numbers, rates), st.sampled_from(["1", "8", "80"])),
    flag("--space", st.sampled_from(["paper", "tiny", "nope", ""]), st.sampled_from(["paper", "finetune"])),
    flag("--keep-policy", st.sampled_from(["fill", "search", "all"])), flag("--num-classes", numbers, st.sampled_from(["2", "10"])),
    switches,
)


@settings(max_examples=cases(100))
@given(flags=plan_flags)
def test_generated_plan_flags(work: Path, flags: list[str]) -> None:
    argv = ("plan", *flags)
    check_outcome(argv, *run_cli(*argv))


TINY_SPACE = """\
axes:
  model: vit_micro
  resolution: [32]
  patch_size: [8]
  depth: [1]
  keep_rate: [0.5, 1.0]
training: {epochs: 1, batch_size: 8}
"""

run_flags = flag_set(
    flag("--budget-gflops", budgets, st.sampled_from(["0.01", "0.003,0.01", "1"]), required=True),
    sometimes(flag("--trials", numbers, small)), sometimes(flag("--concurrency", numbers, small)),
    sometimes(flag("--search", st.sampled_from(["tpe", "random", "grid", "bayes"]))),
    sometimes(flag("--scheduler", st.sampled_from(["asha", "none", "pbt"]))),
    sometimes(flag("--grace-period", numbers, small)), sometimes(flag("--reduction-factor", rates, st.sampled_from(["2", "3"]))), sometimes(flag("--repeats", numbers, small)),
    sometimes(flag("--top-k", numbers, small)), sometimes(flag("--max-tflop", rates, st.sampled_from(["1e-6", "100"]))), sometimes(flag("--max-device-hours", rates, st.sampled_from(["1e-9", "10"]))),
    flag("--dataset", st.sampled_from(["synthetic:64", "synthetic", "synthetic:0", "synthetic:x", "folder:/nonexistent",
                                       "fashion-mnist:/nonexistent", "imagenet", ""]), st.just("synthetic:64"), required=True),
    sometimes(flag("--name", st.one_of(st.sampled_from(["ok", "../evil", "a/b", ".hidden", "", "é"]), st.text(max_size=8)))),
    sometimes(flag("--cpus-per-trial", numbers, st.sampled_from(["1", "2", "64"]))), sometimes(flag("--max-failures", numbers, st.sampled_from(["0", "3"]))), sometimes(flag("--trial-memory-cap-gb", rates, st.sampled_from(["0.001", "4"]))),
    sometimes(flag("--checkpoint-every-s", rates, st.sampled_from(["0", "60"]))),
    sometimes(flag("--keep-policy", st.sampled_from(["fill", "search", "none"]))),
    st.integers(0, 9).flatmap(lambda i: st.just([]) if i < 8 else flag(
        "--address", st.sampled_from(["127.0.0.1:1", "nohost", "ray://127.0.0.1:1", "auto:x", ":"]))),
    st.integers(0, 9).flatmap(lambda i: st.just([]) if i < 8 else flag(
        "--mlflow-uri", st.sampled_from(["http://127.0.0.1:1", "sqlite:////nonexistent-root/x/mlflow.db", "ftp://x", "sqlite:///"]))),
)


@settings(max_examples=cases(120))
@given(flags=run_flags)
def test_generated_run_flags_up_to_the_preflight(work: Path, ray_session, flags: list[str]) -> None:  # noqa: ANN001
    """``run --dry-run`` does every check and the pre-flight; no case trains, and a refused one
    (or a dry run) leaves no sweep folder, no MLflow store and no run behind."""
    folder = fresh(work, "run")
    (folder / "space.yaml").write_text(TINY_SPACE)
    runs = folder / "runs"
    argv = ("run", "--space", str(folder / "space.yaml"), "--runs-dir", str(runs), "--dry-run", "--no-estimate", *flags)
    check_outcome(argv, *run_cli(*argv))
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))


train_flags = flag_set(
    flag("--model", models), flag("--resolution", numbers), flag("--patch-size", numbers), flag("--keep-rate", rates),
    flag("--depth", numbers), flag("--ensemble-size", numbers), flag("--epochs", numbers), flag("--batch-size", numbers),
    flag("--lr", rates), flag("--seed", numbers), flag("--keep-mode", st.sampled_from(["fixed", "uniform", "x"])),
    flag("--keep-range", st.sampled_from(["0.5,1", "1,0.5", "0.5", "a,b", "0,1", "0.5,1,2"])),
    flag("--sampling", st.sampled_from(["random", "structured", "block", "grid", "x"])),
    flag("--pretrained", st.sampled_from(["/etc/passwd", "a/b", "nope", "x.safetensors", "timm/none@v1", "hf-hub:"])),
    flag("--device", st.sampled_from(["cpu", "cuda", "auto", "tpu"])), flag("--space", st.sampled_from(["paper", "nope"])),
)


@settings(max_examples=cases(100))
@given(flags=train_flags)
def test_generated_train_flags(work: Path, flags: list[str]) -> None:
    """Argument checks: every case is refused (its dataset is missing), before any training,
    with one line; and it writes no checkpoint and no weights."""
    folder = fresh(work, "train")
    argv = ("train", "--dataset", f"folder:{folder / 'missing'}", "--checkpoint-dir", str(folder / "ckpt"),
            "--save-weights", str(folder / "w.safetensors"), *flags)
    code, out, err = run_cli(*argv)
    check_outcome(argv, code, out, err, ok=())
    assert sorted(folder.iterdir()) == []


@pytest.fixture(scope="module")
def runs_dir(work: Path) -> Path:
    """Sweep folders a user might point ``report`` and ``resume`` at: empty, damaged, half there."""
    runs = work / "sweeps"
    for name, files in {
        "empty": {},
        "garbage": {"sweep.json": b"\x00\xff not json", "results.parquet": b"PAR1 nope"},
        "wrong-json": {"sweep.json": b'{"version": 99, "settings": []}', "results.parquet": b""},
        "list-json": {"sweep.json": b"[1, 2, 3]"},
        "no-state": {"results.parquet": b"\x00" * 64},
    }.items():
        (runs / name).mkdir(parents=True)
        for file, content in files.items():
            (runs / name / file).write_bytes(content)
    return runs


names = st.one_of(st.sampled_from(["empty", "garbage", "wrong-json", "list-json", "no-state", "missing", "..", ".",
                                   "../sweeps", "", "a/b"]), st.text(max_size=8))


@settings(max_examples=cases(60))
@given(sweeps=st.lists(names, min_size=1, max_size=3), extra=flag_set(
    flag("--top-k", numbers), st.sampled_from([[], ["--json"], ["--to-mlflow"], ["--out", "/nonexistent-root/x"]])))
def test_generated_report_arguments(runs_dir: Path, sweeps: list[str], extra: list[str]) -> None:
    before = snapshot(runs_dir)
    argv = ("report", *sweeps, "--runs-dir", str(runs_dir), *extra)
    check_outcome(argv, *run_cli(*argv))
    assert snapshot(runs_dir) == before


@settings(max_examples=cases(60))
@given(name=names, extra=flag_set(
    flag("--address", st.sampled_from(["127.0.0.1:1", "nohost", ""])),
    flag("--mlflow-uri", st.sampled_from(["http://127.0.0.1:1", "sqlite:///"])),
    st.sampled_from([[], ["--no-mlflow"], ["--trust"], ["--json"]])))
def test_generated_resume_arguments(runs_dir: Path, name: str, extra: list[str]) -> None:
    before = snapshot(runs_dir)
    argv = ("resume", name, "--runs-dir", str(runs_dir), *extra)
    check_outcome(argv, *run_cli(*argv), ok=())  # none of these sweeps can be resumed
    assert snapshot(runs_dir) == before


@settings(max_examples=cases(50))
@given(address=st.one_of(st.sampled_from(["http://127.0.0.1:1", "127.0.0.1:8265", "http://:8265", "http://127.0.0.1:x",
                                          "http://127.0.0.1:99999", "ftp://127.0.0.1", "", "http://[::1", "https://127.0.0.1:1"]),
                         st.text(max_size=10)),
       runtime_env=st.one_of(st.none(), raw_files), inner=st.lists(st.sampled_from(["run", "--budget-gflops", "1", "plan"]),
                                                                    max_size=3))
def test_generated_submit_arguments(work: Path, address: str, runtime_env: bytes | None, inner: list[str]) -> None:
    folder = fresh(work, "submit")
    env = []
    if runtime_env is not None:
        (folder / "env.yaml").write_bytes(runtime_env)
        env = ["--runtime-env", str(folder / "env.yaml")]
    argv = ("submit", "--address", address, *env, "--", *inner)
    check_outcome(argv, *run_cli(*argv), ok=())  # nothing listens at any of these addresses


def test_a_dry_run_prints_the_preflight_and_writes_nothing(work: Path, ray_session, cli) -> None:  # noqa: ANN001
    folder = fresh(work, "dry")
    (folder / "space.yaml").write_text(TINY_SPACE)
    result = cli("run", "--space", folder / "space.yaml", "--budget-gflops", "0.01", "--runs-dir", folder / "runs",
                 "--dataset", "synthetic:64", "--no-estimate", "--dry-run", "--json")
    assert result.code == 0, result.err
    assert "estimated compute" in result.err and "dry run: every check passed" in result.err
    assert result.json()["dry_run"] is True and result.json()["planned_tflop"] > 0
    assert not (folder / "runs").exists()  # not even the runs dir or its SQLite store
