"""Each private attribute ``pdsweep._compat`` reads still means what it meant (Optuna 5.0,
Ray 2.60, CPython's argparse). An upgrade that changes one fails here, by name."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from pdsweep import _compat


def test_an_optuna_trial_by_number_is_that_trial() -> None:
    storage = optuna.storages.InMemoryStorage()
    other = optuna.create_study(study_name="other", storage=storage)
    other.ask()  # storage ids count across studies; numbers do not
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    first, second = study.ask(), study.ask()
    assert (first.number, second.number) == (0, 1) and second._trial_id != 1
    _compat.optuna_trial(study, 1).report(0.5, step=1)
    assert study.trials[1].intermediate_values == {1: 0.5} and not study.trials[0].intermediate_values
    assert _compat.optuna_number(study, second._trial_id) == 1
    assert _compat.optuna_number(study, 10_000) is None


def test_asha_rungs_are_read_with_what_they_recorded() -> None:
    from ray.tune.schedulers import AsyncHyperBandScheduler

    asha = AsyncHyperBandScheduler(time_attr="epoch", metric="acc", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    trial = SimpleNamespace(trial_id="t0", config={})
    asha.on_trial_add(None, trial)
    asha.on_trial_result(None, trial, {"epoch": 1, "acc": 0.25})
    rungs, reduction = _compat.asha_rungs(asha)
    assert reduction == 2 and set(rungs) == {1.0, 2.0, 4.0}
    assert rungs[1.0] == {"t0": 0.25} and rungs[2.0] == {}


def test_option_strings_include_those_of_parent_parsers() -> None:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true")
    parser = argparse.ArgumentParser(parents=[parent])
    parser.add_argument("--budget-gflops")
    assert set(_compat.option_strings(parser)) == {"-h", "--help", "--debug", "--budget-gflops"}


@pytest.mark.parametrize("old", sorted(_compat.LEGACY_MODULES))
def test_legacy_module_names_hold_the_classes_old_sweeps_pickled(old: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, old, raising=False)
    _compat.alias_legacy_modules()
    names = {"pdsweep.searcher": ("BudgetSearcher", "ListSearcher", "TieredASHA"), "pdsweep.sampler": ("BudgetSampler",),
             "pdsweep.progress": ("SweepCallback",), "pdsweep.store": ("SweepStore",), "pdsweep.trainable": ("run_trial",),
             "pdsweep.plan": ("plan", "PlannedConfig")}[old]
    for name in names:
        by_old_name = pickle.loads(f"c{old}\n{name}\n.".encode())  # a pickle's global, as the old pdsweep wrote it
        assert by_old_name is getattr(sys.modules[old], name) and by_old_name.__module__.startswith("pdsweep.")


def test_the_profiler_timeline_adds_allocations_and_subtracts_frees() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        kept = torch.ones(1024, 1024)  # 4 MiB that stays
        freed = torch.ones(512, 1024)  # 2 MiB that goes
        del freed
    changes = _compat.memory_timeline(prof)
    assert 4 * 2**20 in changes and 2 * 2**20 in changes and -2 * 2**20 in changes
    assert sum(changes) >= 4 * 2**20 and kept.numel() == 2**20


def test_dispatched_ops_sees_the_aten_ops_a_step_runs() -> None:
    import torch

    from pdsweep._compat import dispatched_ops

    with dispatched_ops() as names:
        torch.ones(2, 3) @ torch.ones(3, 4)
    assert any(name.startswith("aten.mm") for name in names), names


def test_autoscaling_is_read_as_ray_tune_reads_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ray.tune.execution import cluster_info

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_USAGE_STATS_KUBERAY_IN_USE", raising=False)
    cluster_info._is_ray_cluster.cache_clear()
    assert not _compat.autoscaling_cluster()
    (tmp_path / "ray_bootstrap_config.yaml").write_text("{}")  # what the cluster launcher leaves on the head
    cluster_info._is_ray_cluster.cache_clear()
    assert _compat.autoscaling_cluster()
    cluster_info._is_ray_cluster.cache_clear()
    (tmp_path / "ray_bootstrap_config.yaml").unlink()
    monkeypatch.setenv("RAY_USAGE_STATS_KUBERAY_IN_USE", "1")
    assert _compat.autoscaling_cluster()
    cluster_info._is_ray_cluster.cache_clear()
