"""A training run's checkpoint: model, optimizer, schedule, epoch, RNG state and history, so
the same command resumes and replays the same loss curve."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from pdsweep.config import Config
from pdsweep.errors import PdsweepError
from pdsweep.space import TrainingSettings
from pdsweep.training.metrics import EpochMetrics

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(
    path: Path,
    config: Config,
    settings: TrainingSettings,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    history: list[EpochMetrics],
) -> None:
    """Model, optimizer, scheduler, epoch and RNG state; written atomically."""
    state = {
        "config": config.to_dict(),
        "settings": asdict(settings),
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "history": [asdict(m) for m in history],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


# Settings that change no training step and no recorded epoch: a checkpoint resumes across them
# (every metric is recorded whatever the objective; eval_groups changes what an epoch's scores are over).
# So do the step's arrangement (micro-batches, member turns: the same results), which may differ
# on the device a trial resumes on.
EVALUATION_ONLY = ("test_keep_rates", "metric")
RESULT_NEUTRAL = (*EVALUATION_ONLY, "micro_batch_size", "member_turns")


def load_checkpoint(
    path: Path,
    config: Config,
    settings: TrainingSettings,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, list[EpochMetrics]]:
    """Restore a checkpoint (``weights_only=True``); returns (epoch done, metrics so far)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a corrupt or foreign file
        raise PdsweepError(f"checkpoint {str(path)!r} cannot be loaded ({error}); delete it to start afresh.") from None
    saved = Config(**state["config"])
    if saved != config:
        raise PdsweepError(
            f"checkpoint {str(path)!r} is for {saved.name}, not {config.name}; use another --checkpoint-dir."
        )
    saved_settings = {**asdict(TrainingSettings()), **state.get("settings", {})}  # settings added since: their default
    changed = [k for k, v in asdict(settings).items()
               if k not in RESULT_NEUTRAL and _plain(saved_settings.get(k)) != _plain(v)]
    if changed:  # another schedule, batch size or seed would continue a different run
        raise PdsweepError(
            f"checkpoint {str(path)!r} was trained with other settings ({', '.join(changed)}); resume with the "
            "same ones, or use another --checkpoint-dir."
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["epoch"]), [EpochMetrics(**m) for m in state["history"]]


def _plain(value: object) -> object:
    """A saved setting as compared: lists and tuples alike (a checkpoint may hold either)."""
    return tuple(value) if isinstance(value, list | tuple) else value
