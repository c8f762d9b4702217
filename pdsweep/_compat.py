"""The private state of Ray, Optuna, torch and argparse that pdsweep reads, all of it here.

Each use says what it is for and the version it was checked on; ``tests/test_compat.py``
checks each against the installed packages, so an upgrade that changes one fails there, by
name, rather than somewhere in a sweep. Everything else in pdsweep uses public APIs only.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna


def optuna_trial(study: optuna.Study, number: int) -> optuna.Trial:
    """The study's trial ``number`` as a :class:`optuna.Trial`, to report on or suggest for.

    Optuna 5.0.0: ``study.tell`` takes a number, but reporting an intermediate value on a trial
    other than the one ``ask`` just returned needs a ``Trial``, whose constructor takes the
    storage's id, kept on ``FrozenTrial._trial_id``.
    """
    import optuna

    return optuna.Trial(study, study.get_trials(deepcopy=False)[number]._trial_id)


def optuna_number(study: optuna.Study, trial_id: int) -> int | None:
    """The number of the trial with storage id ``trial_id``, None if the journal lost it.

    Optuna 5.0.0 (``FrozenTrial._trial_id``). Only for searcher states saved by pdsweep before it
    kept numbers (they held storage ids).
    """
    for frozen in study.get_trials(deepcopy=False):
        if frozen._trial_id == trial_id:
            return frozen.number
    return None


def asha_rungs(scheduler: Any) -> tuple[dict[float, dict[str, float]], float]:
    """The rungs of an ``AsyncHyperBandScheduler`` with one bracket (milestone -> trial id ->
    value recorded there) and its reduction factor.

    Ray 2.60.0 (``AsyncHyperBandScheduler._brackets``, ``_Bracket._rungs`` and ``_Bracket.rf``).
    Only for tiered schedulers pickled by pdsweep before it kept rungs of its own.
    """
    bracket = scheduler._brackets[0]
    return {float(milestone): dict(recorded) for milestone, recorded in bracket._rungs}, float(bracket.rf)


def autoscaling_cluster() -> bool:
    """Whether the Ray this process joined may add nodes: one the cluster launcher started (Ray
    Tune's own test, ``ray.tune.execution.cluster_info._is_ray_cluster``: the launcher's bootstrap
    config on the head; Ray 2.60.0), or one KubeRay runs (``RAY_USAGE_STATS_KUBERAY_IN_USE``,
    which KubeRay sets in its pods; its autoscaler may be on)."""
    import os

    from ray.tune.execution.cluster_info import _is_ray_cluster

    return bool(_is_ray_cluster()) or os.environ.get("RAY_USAGE_STATS_KUBERAY_IN_USE") == "1"


_ENDED_AT_ONCE: set[str] = set()  # trial ids end_at_once ended, in this driver
_FAILURE_RULES: dict[str, list[Callable[[BaseException], bool]]] = {"end": [], "uncounted": []}


def end_at_once(predicate: Callable[[BaseException], bool]) -> None:
    """Make Ray Tune end a trial at its first failure for which ``predicate`` holds (a worker
    Ray's memory monitor killed: retrying repeats the allocation that killed it), instead of
    retrying it up to ``FailureConfig.max_failures`` times; other failures keep their retries.
    :func:`ended_at_once` says which trials it ended (the searcher tells Optuna of them)."""
    _failure_rule("end", predicate)


def retry_uncounted(predicate: Callable[[BaseException], bool]) -> None:
    """Make Ray Tune retry a trial after a failure for which ``predicate`` holds without counting
    it toward ``FailureConfig.max_failures`` (the node's fault, not the trial's: a node without the
    sweep's weights, which the driver's watch stops the sweep for)."""
    _failure_rule("uncounted", predicate)


def _failure_rule(kind: str, predicate: Callable[[BaseException], bool]) -> None:
    """Tune has no per-error hook: ``TuneController._process_trial_failure`` calls
    ``Trial.handle_error``, which counts the failure in ``run_metadata.num_failures``, then
    ``Trial.should_recover`` (Ray 2.60.0). ``Trial.handle_error`` is wrapped, once per driver
    process, to move that count as the rules say."""
    from ray.tune.experiment.trial import Trial

    if predicate not in _FAILURE_RULES[kind]:
        _FAILURE_RULES[kind].append(predicate)
    original = Trial.handle_error
    if getattr(original, "pdsweep_rules", False):
        return

    def handle_error(self: Any, exc: BaseException | None = None) -> None:
        original(self, exc)
        if exc is None or self.max_failures < 0:
            return
        if any(rule(exc) for rule in _FAILURE_RULES["end"]):
            self.run_metadata.num_failures = max(self.run_metadata.num_failures, self.max_failures + 1)
            _ENDED_AT_ONCE.add(self.trial_id)
        elif any(rule(exc) for rule in _FAILURE_RULES["uncounted"]):
            self.run_metadata.num_failures = max(0, self.run_metadata.num_failures - 1)
        else:
            return
        self.run_metadata.invalidate_cache()

    handle_error.pdsweep_rules = True  # type: ignore[attr-defined]
    Trial.handle_error = handle_error  # type: ignore[method-assign]


def ended_at_once(trial_id: str) -> bool:
    """Whether :func:`end_at_once` ended this trial at its first failure."""
    return trial_id in _ENDED_AT_ONCE


def rebase_trial_storage(trial: Any, experiment_fs_path: str) -> bool:
    """Point a new trial of a restored Tune experiment at where the experiment is now.

    Ray 2.60: ``TuneController._restore_trials`` rebases the storage of the trials it restores
    (``trial.storage``: a ``StorageContext`` whose ``storage_fs_path`` and
    ``experiment_dir_name`` make up the experiment's path), but the restored
    ``SearchGenerator`` keeps the ``Experiment`` it pickled, so the trials it creates after a
    moved experiment resumes are stored at the old path, which no longer exists. This does
    for a new trial what ``_restore_trials`` does for the old ones. Returns whether it moved.
    """
    import copy

    storage = trial.storage
    if storage is None or f"{storage.storage_fs_path.rstrip('/')}/{storage.experiment_dir_name}" == experiment_fs_path:
        return False
    moved = copy.copy(storage)
    moved.storage_fs_path, _, moved.experiment_dir_name = experiment_fs_path.rpartition("/")
    trial.set_storage(moved)
    return True


@contextlib.contextmanager
def tune_interruption() -> Iterator[list[bool]]:
    """Whether a ``Tuner.fit`` in the block was stopped by a signal (Ctrl-C, or SIGTERM as
    pdsweep handles it): ``flag[0]`` after the block.

    Ray 2.60: ``tune.run`` installs a SIGINT handler (``tune._setup_signal_catching``) that
    stops the run gracefully and puts back the handler it found, and it never puts it back
    otherwise; after such a stop the ``ResultGrid`` shows the running trials as terminated, and
    nothing public says the run was cut short. So a marker handler is installed first: it is
    back in place after the fit exactly when Tune's handler ran.
    """
    import os
    import signal
    import threading

    flag = [False]
    if threading.current_thread() is not threading.main_thread() or int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0")):
        yield flag  # no handler of Tune's: a Ctrl-C raises KeyboardInterrupt through the fit
        return

    def marker(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, marker)
    try:
        yield flag
    finally:
        flag[0] = signal.getsignal(signal.SIGINT) is marker
        signal.signal(signal.SIGINT, previous)


def memory_timeline(prof: Any) -> list[int]:
    """The byte changes of a ``torch.profiler.profile(profile_memory=True)`` run, in order:
    an allocation (or a tensor alive before the profile) adds its size, a free subtracts it.

    torch 2.14 (``profile._memory_profile()`` and ``torch.profiler._memory_profiler.Action``, which
    ``export_memory_timeline`` reads too); torch has no public per-event timeline.
    """
    from torch.profiler._memory_profiler import Action

    signs = {Action.PREEXISTING: 1, Action.CREATE: 1, Action.DESTROY: -1}
    return [signs[action] * size for _, action, _, size in prof._memory_profile().timeline if action in signs]


def dispatched_ops() -> Any:
    """A context manager whose value is the set of ATen ops (``aten._scaled_dot_product_flash_attention.default``)
    run inside it, seen below autograd and autocast: which SDPA backend ran, without the profiler
    (which prints from C++ on hosts without a GPU and cancels a user's own trace).

    torch 2.14 (``torch.utils._python_dispatch.TorchDispatchMode``, the documented hook of
    ``__torch_dispatch__``; torch has no public mode class).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpNames(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self.names.add(str(func))
            return func(*args, **(kwargs or {}))

        def __enter__(self) -> set[str]:  # type: ignore[override]
            super().__enter__()
            return self.names

    return OpNames()


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option a parser takes (``--budget-gflops``...), for "did you mean" hints.

    CPython 3.10-3.13 (``ArgumentParser._actions``); argparse has no public listing of them.
    """
    return [option for action in parser._actions for option in action.option_strings]


# Modules of pdsweep 0.1 before its subpackages, and the modules that hold their names now.
# Ray Tune unpickles a sweep's searcher, scheduler and callback by their old names on resume.
LEGACY_MODULES: dict[str, tuple[str, ...]] = {
    "pdsweep.searcher": ("pdsweep.sweep.searcher", "pdsweep.sweep.schedulers"),
    "pdsweep.sampler": ("pdsweep.sweep.sampler",),
    "pdsweep.progress": ("pdsweep.sweep.callback",),
    "pdsweep.store": ("pdsweep.sweep.store",),
    "pdsweep.trainable": ("pdsweep.sweep.trainable",),
    "pdsweep.plan": ("pdsweep.space.plan",),
}


def alias_legacy_modules() -> None:
    """Make the old module names importable, as modules holding the new modules' names."""
    for old, new in LEGACY_MODULES.items():
        if old in sys.modules:
            continue
        alias = types.ModuleType(old, f"pdsweep 0.1's {old}, for unpickling sweeps it saved")
        for name in new:
            alias.__dict__.update({k: v for k, v in vars(importlib.import_module(name)).items() if not k.startswith("__")})
        sys.modules[old] = alias


def restore_with_defaults(obj: Any, state: dict[str, Any]) -> None:
    """``__setstate__`` of a frozen dataclass that older pdsweep versions pickled (in Ray Tune's
    saved searcher): fields added since take their defaults, so a sweep started before them resumes."""
    import dataclasses

    for f in dataclasses.fields(obj):
        if f.name not in state:
            if f.default is not dataclasses.MISSING:
                state[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                state[f.name] = f.default_factory()
    for name, value in state.items():
        object.__setattr__(obj, name, value)
