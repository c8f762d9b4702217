"""Training one config, without Ray: data -> model(s) -> train/eval loop -> metrics.

Read top to bottom: :func:`train` builds the ensemble and its optimizer, resumes from a
checkpoint if one is there, runs the epochs (each: shuffled batches, augmentation on the
device, :func:`train_step`, validation, a checkpoint, a callback), then tests with every patch
and with fewer (the robustness curve). SGD with momentum 0.9 or AdamW, linear warm-up then
cosine decay per step, label smoothing, gradient clipping, bf16 autocast on a GPU, seeded.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pdsweep import cost
from pdsweep.augment import augment, normalize, to_float
from pdsweep.config import Config, OptimizerName, Precision
from pdsweep.data import Dataset, Split
from pdsweep.errors import PdsweepError
from pdsweep.results import ROBUSTNESS_KEEP_RATES
from pdsweep.models import Ensemble, build_model, dropping_at_test, load_pretrained
from pdsweep.space import TrainingSettings

MOMENTUM = 0.9
CHECKPOINT_FILE = "checkpoint.pt"
DeviceName = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch reports (to the progress line, the callback, and Ray Tune)."""

    epoch: int  # 1-based
    train_loss: float
    val_accuracy: float
    val_auc: float | None  # binary tasks only
    lr: float  # at the end of the epoch
    images_per_second: float  # training throughput, evaluation excluded
    seconds: float  # the whole epoch
    peak_memory_gb: float | None  # CUDA's max_memory_allocated; None on a CPU


EpochCallback = Callable[[EpochMetrics, "Path | None"], None]


@dataclass(frozen=True)
class TrainResult:
    config: Config
    dataset: str
    num_classes: int
    train_gflops: float
    inference_gflops: float
    history: tuple[EpochMetrics, ...]
    test_accuracy: float
    test_auc: float | None
    robustness: dict[float, float]  # test-time keep rate -> test accuracy
    seconds: float
    device: str
    resumed_from_epoch: int = 0
    skipped_images: int = 0
    predicted_memory_gb: float = 0.0

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def val_accuracy(self) -> float:
        return self.history[-1].val_accuracy if self.history else float("nan")

    @property
    def best_val_accuracy(self) -> float:
        return max((m.val_accuracy for m in self.history), default=float("nan"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "dataset": self.dataset,
            "num_classes": self.num_classes,
            "train_gflops": self.train_gflops,
            "inference_gflops": self.inference_gflops,
            "epochs": self.epochs,
            "val_accuracy": self.val_accuracy,
            "best_val_accuracy": self.best_val_accuracy,
            "test_accuracy": self.test_accuracy,
            "test_auc": self.test_auc,
            "robustness": {str(rate): acc for rate, acc in self.robustness.items()},
            "seconds": self.seconds,
            "device": self.device,
            "resumed_from_epoch": self.resumed_from_epoch,
            "skipped_images": self.skipped_images,
            "predicted_memory_gb": self.predicted_memory_gb,
            "history": [asdict(m) for m in self.history],
        }


def train(
    config: Config,
    dataset: Dataset,
    settings: TrainingSettings = TrainingSettings(),
    *,
    device: DeviceName = "auto",
    checkpoint_dir: Path | None = None,
    pretrained: Path | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train ``config`` on ``dataset``; resume from ``checkpoint_dir`` if it holds a checkpoint."""
    started = time.perf_counter()
    if config.num_classes != dataset.num_classes:
        raise PdsweepError(
            f"the config has {config.num_classes} classes but dataset {dataset.name} has "
            f"{dataset.num_classes}; build the config with num_classes={dataset.num_classes}."
        )
    if dataset.resolution != config.resolution:
        raise PdsweepError(f"dataset {dataset.name} is at {dataset.resolution} px, the config at {config.resolution}.")
    target = _device(device)
    precision: Precision = settings.precision if target.type == "cuda" else "fp32"
    predicted_gb = check_fits(config, settings, device)

    torch.manual_seed(settings.seed)
    model = build_model(config)
    if pretrained is not None:
        for member in model.members:
            load_pretrained(member, pretrained)
    model.to(target)
    optimizer = make_optimizer(model, settings.optimizer, lr=settings.lr, weight_decay=settings.weight_decay)
    batch_size = min(settings.batch_size, len(dataset.train))
    steps_per_epoch = len(dataset.train) // batch_size
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(settings.warmup_epochs * steps_per_epoch, settings.epochs * steps_per_epoch)
    )
    history: list[EpochMetrics] = []
    start_epoch = 0
    if checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT_FILE).is_file():
        start_epoch, history = load_checkpoint(checkpoint_dir / CHECKPOINT_FILE, config, settings, model, optimizer, scheduler)

    for epoch in range(start_epoch + 1, settings.epochs + 1):
        epoch_started = time.perf_counter()
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats(target)
        loss, images_per_second = _train_epoch(model, optimizer, scheduler, dataset.train, settings, precision, epoch, batch_size, target)
        val_accuracy, val_auc = evaluate(model, dataset.val, batch_size=batch_size, device=target, precision=precision)
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=loss,
            val_accuracy=val_accuracy,
            val_auc=val_auc,
            lr=scheduler.get_last_lr()[0],
            images_per_second=images_per_second,
            seconds=time.perf_counter() - epoch_started,
            peak_memory_gb=torch.cuda.max_memory_allocated(target) / 1e9 if target.type == "cuda" else None,
        )
        history.append(metrics)
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir / CHECKPOINT_FILE, config, settings, epoch, model, optimizer, scheduler, history)
        if on_epoch_end is not None:
            on_epoch_end(metrics, checkpoint_dir)

    test_accuracy, test_auc = evaluate(model, dataset.test, batch_size=batch_size, device=target, precision=precision)
    robustness = {1.0: test_accuracy}
    for rate in ROBUSTNESS_KEEP_RATES[1:]:
        torch.manual_seed(settings.seed)  # the same dropped patches on every run
        with dropping_at_test(model, rate):
            robustness[rate] = evaluate(model, dataset.test, batch_size=batch_size, device=target, precision=precision)[0]
    return TrainResult(
        config=config,
        dataset=dataset.name,
        num_classes=dataset.num_classes,
        train_gflops=cost.train_gflops(config),
        inference_gflops=cost.inference_gflops(config),
        history=tuple(history),
        test_accuracy=test_accuracy,
        test_auc=test_auc,
        robustness=robustness,
        seconds=time.perf_counter() - started,
        device=str(target),
        resumed_from_epoch=start_epoch,
        skipped_images=dataset.skipped,
        predicted_memory_gb=predicted_gb,
    )


def _train_epoch(
    model: Ensemble,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    split: Split,
    settings: TrainingSettings,
    precision: Precision,
    epoch: int,
    batch_size: int,
    device: torch.device,
) -> tuple[float, float]:
    """One pass over the shuffled training split; returns (mean loss, images per second)."""
    model.train()
    # Order and augmentation depend only on (seed, epoch), so a resumed run replays them.
    order_rng = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
    augment_rng = torch.Generator(device=device).manual_seed(settings.seed * 100_019 + epoch)
    order = torch.randperm(len(split), generator=order_rng).numpy()
    losses = []
    seen = 0
    started = time.perf_counter()
    for start in range(0, len(order) - batch_size + 1, batch_size):  # full batches only
        images, labels = _batch(split, order[start : start + batch_size], device)
        images = to_float(images)
        if settings.augment:
            images = augment(images, augment_rng)
        loss = train_step(
            model, optimizer, normalize(images), labels,
            precision=precision, label_smoothing=settings.label_smoothing, grad_clip=settings.grad_clip,
        )
        scheduler.step()
        losses.append(loss)
        seen += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return float(np.mean(losses)), seen / (time.perf_counter() - started)


def _batch(split: Split, indices: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, R, R, 3) uint8 images and (B,) labels, read from the memory map in file order."""
    indices = np.sort(indices)
    images = torch.from_numpy(np.ascontiguousarray(split.images[indices]))
    labels = torch.from_numpy(split.labels[indices])
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def train_step(
    model: Ensemble,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    precision: Precision,
    label_smoothing: float = 0.1,
    grad_clip: float | None = None,
) -> float:
    """One optimizer step on a batch; returns the members' mean loss.

    images: (B, 3, R, R), labels: (B,). Members train on the same batch one backward at a time,
    so only one member's activations are alive at once (the memory model counts it so).
    """
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for member in model.members:
        with autocast(images.device, precision):
            logits = member(images)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        loss.backward()
        total += loss.item()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return total / len(model.members)


@torch.no_grad()
def evaluate(
    model: Ensemble, split: Split, *, batch_size: int, device: torch.device, precision: Precision = "fp32"
) -> tuple[float, float | None]:
    """(top-1 accuracy of the members' mean softmax, ROC AUC for a binary task else None)."""
    model.eval()
    probabilities, labels = [], []
    for start in range(0, len(split), batch_size):
        images, batch_labels = _batch(split, np.arange(start, min(start + batch_size, len(split))), device)
        with autocast(device, precision):
            probabilities.append(model.predict_proba(normalize(to_float(images))).float())
        labels.append(batch_labels)
    if not labels:
        return float("nan"), None
    proba, target = torch.cat(probabilities), torch.cat(labels)
    accuracy = (proba.argmax(dim=1) == target).float().mean().item()
    auc = binary_auc(proba[:, 1], target) if proba.shape[1] == 2 else None
    return accuracy, auc


def binary_auc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties given their mean rank."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    values, inverse, counts = torch.unique(scores.double().cpu(), return_inverse=True, return_counts=True)
    first_rank = torch.cumsum(counts, 0) - counts + 1  # 1-based rank of each distinct score
    mean_rank = first_rank + (counts - 1) / 2
    rank_sum = mean_rank[inverse][labels.cpu() == 1].sum().item()
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


# ---- optimizer, schedule, precision --------------------------------------------------------


def make_optimizer(
    model: nn.Module, name: OptimizerName, *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD with momentum 0.9, or AdamW; no weight decay on norms, biases and embeddings.

    ``foreach`` on every device (torch picks it on GPUs only), so the step's memory is the same
    on a CPU as on the GPU the memory model is for.
    """
    decay, no_decay = [], []
    for name_, param in model.named_parameters():
        skip = param.ndim <= 1 or name_.endswith(("pos_embed", "cls_token"))
        (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=MOMENTUM, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, foreach=True)
    raise PdsweepError(f"unknown optimizer {name!r}; choose one of: sgd, adamw.")


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor: linear from ~0 to 1 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    """bf16 autocast for ``bf16-mixed``; nothing for ``fp32``."""
    if precision == "bf16-mixed":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def _device(name: DeviceName) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PdsweepError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu or auto.")
    if name not in ("cpu", "cuda"):
        raise PdsweepError(f"unknown device {name!r}; choose one of: auto, cpu, cuda.")
    return torch.device(name)


def check_fits(config: Config, settings: TrainingSettings, device: DeviceName = "auto") -> float:
    """The predicted peak memory in GB; an error if it exceeds what the device has free."""
    target = _device(device)
    precision: Precision = settings.precision if target.type == "cuda" else "fp32"
    needed_gb = cost.memory(config, batch_size=settings.batch_size, precision=precision, optimizer=settings.optimizer).gb
    free_gb = _free_memory_gb(target)
    if free_gb is not None and needed_gb > free_gb:
        raise PdsweepError(
            f"{config.name} needs about {needed_gb:.2f} GB at batch {settings.batch_size} ({precision}), more than "
            f"the {free_gb:.2f} GB free on {target}; lower --batch-size or --ensemble-size, or pick a smaller model."
        )
    return needed_gb


def _free_memory_gb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 1e9
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return None


# ---- checkpoints -------------------------------------------------------------------------


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
    changed = [k for k, v in asdict(settings).items() if state.get("settings", {}).get(k) != v]
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
