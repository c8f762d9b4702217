"""How a config's step is arranged on the device when it does not fit as it is.

Two arrangements change where memory goes and nothing a step computes (the training loop
gives the same losses and weights, :mod:`pdsweep.training.loop`):

- **member turns**: an ensemble trains one member at a time, an epoch each in turn, the others'
  weights and optimizer state on the host; the device holds one member's state.
- **micro-batches**: the batch runs as micro-batches whose gradients accumulate; the device holds
  one micro-batch's activations.

:func:`arrange` picks the first arrangement that fits, in order of cost in time: as it is; the
members in turns; then micro-batches of half the batch, a third, ... down to one image, each
with the members together and then in turns. What a :class:`~pdsweep.cost.StepSetup` fixes
(``micro_batch_size``, ``member_turns`` not None: ``training.micro_batch_size``,
``training.member_turns``) is kept. No torch import here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from pdsweep.config import Config
from pdsweep.cost.flops import param_count
from pdsweep.cost.memory import memory
from pdsweep.cost.memory_estimate import _FP32, _OPTIMIZER_STATES
from pdsweep.cost.setup import StepSetup

# Host <-> GPU copies of pageable memory over PCIe 4 x16 run at about this many GB/s.
HOST_LINK_GB_S = 10.0


def arrange(config: Config, setup: StepSetup, memory_gb: float | None) -> StepSetup | None:
    """``setup`` with its arrangement decided: the first (:func:`candidates`) whose step fits
    ``memory_gb`` (None: no cap, so the step as it is); None when none fits."""
    for candidate in candidates(setup, config.ensemble_size):
        if memory_gb is None or memory(config, candidate).gb <= memory_gb:
            return candidate
    return None


def candidates(setup: StepSetup, ensemble_size: int) -> Iterator[StepSetup]:
    """Every arrangement ``setup`` leaves open, the cheapest in time first, each fully decided."""
    turns = [setup.member_turns] if setup.member_turns is not None else [False, True] if ensemble_size > 1 else [False]
    for micro in _micro_batches(setup):
        for turn in turns:
            yield replace(setup, micro_batch_size=micro, member_turns=turn)


def loosest(setup: StepSetup, ensemble_size: int) -> StepSetup:
    """The arrangement ``setup`` leaves open that needs the least memory (the last candidate)."""
    return replace(setup, micro_batch_size=_micro_batches(setup)[-1],
                   member_turns=setup.member_turns if setup.member_turns is not None else ensemble_size > 1)


def _micro_batches(setup: StepSetup) -> list[int]:
    """The micro-batch sizes to try, largest first: the batch cut into 1, 2, 3, ... parts."""
    if setup.micro_batch_size is not None:
        return [setup.micro]
    B = setup.batch_size
    return sorted({-(-B // parts) for parts in range(1, B + 1)}, reverse=True)


def turn_seconds(config: Config, setup: StepSetup) -> float:
    """Seconds an epoch of member turns spends moving weights and optimizer state to the GPU
    and back (each member both ways, at :data:`HOST_LINK_GB_S`); 0 when the members train together."""
    if not setup.member_turns or config.ensemble_size == 1:
        return 0.0
    state = _FP32 * (1 + _OPTIMIZER_STATES[setup.optimizer]) * param_count(config)  # every member's
    return 2 * state / 1e9 / HOST_LINK_GB_S


def describe(setup: StepSetup) -> str:
    """How a decided setup arranges its step, for tables: ``-`` for as it is."""
    parts = (["member turns"] if setup.member_turns else []) + (
        [f"micro-batch {setup.micro}"] if setup.accumulates else [])
    return ", ".join(parts) or "-"
