"""Training one config, without Ray: data -> model(s) -> train/eval loop -> metrics.

Read top to bottom: :func:`train` builds the ensemble (from pretrained weights, if given) and
its optimizer, resumes from a checkpoint if one is there, runs the epochs (each: shuffled
batches, augmentation on the device, :func:`train_step`, validation, a checkpoint, a callback),
then tests with every patch and with fewer (the robustness curve), and saves the weights if
asked. SGD with momentum 0.9 or AdamW, linear warm-up then
cosine decay per step, label smoothing, gradient clipping (per member), bf16 autocast on a GPU,
seeded. A non-finite loss ends the run at that step (:class:`~pdsweep.training.faults.Diverged`).

Every member of an ensemble is its own model: its own data order, augmentation and PatchDropout
draws (a random stream per member and epoch, so a resumed run replays them), its own gradient
clipping. So how a step is arranged (:func:`pdsweep.cost.arrange`) changes where memory goes and
not what is computed: members may train together, a step at a time, or in turns, an epoch each
(the others' weights and optimizer state on the host), and a batch at once or as micro-batches
whose gradients accumulate; each gives the same losses and weights, within floating point.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pdsweep import cost
from pdsweep.config import Config
from pdsweep.cost import OptimizerName, Precision
from pdsweep.errors import PdsweepError
from pdsweep.objective import (
    EvalGroups, balanced_weights, bootstrap_intervals, check_scorable, class_recall, group_mean, scores,
)
from pdsweep.space import TrainingSettings
from pdsweep.training.augment import augment, normalize, to_float
from pdsweep.training.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from pdsweep.training.data import Dataset, Split
from pdsweep.training.device import DeviceName, free_memory_gb, resolve_device
from pdsweep.training.faults import Diverged
from pdsweep.training.kernels import attention_backend
from pdsweep.training.metrics import EpochCallback, EpochMetrics, TrainResult
from pdsweep.training.models import Ensemble, build_model, dropping_at_test, kept_at_test, one_draw
from pdsweep.training.weights import WeightFile, load_into, open_weights, save_weights

MOMENTUM = 0.9
log = logging.getLogger(__name__)


def train(
    config: Config,
    dataset: Dataset,
    settings: TrainingSettings = TrainingSettings(),
    *,
    device: DeviceName = "auto",
    checkpoint_dir: Path | None = None,
    pretrained: WeightFile | None = None,
    weights_cache: str | Path | None = None,
    save_weights_to: Path | None = None,
    on_epoch_end: EpochCallback | None = None,
    checkpoint_every_s: float = 0.0,
) -> TrainResult:
    """Train ``config`` on ``dataset``; resume from ``checkpoint_dir`` if it holds a checkpoint.

    A checkpoint is saved at the end of an epoch once ``checkpoint_every_s`` seconds have passed
    since the last one (or the start; 0: every epoch); ``on_epoch_end`` gets ``checkpoint_dir``
    after an epoch that saved one, else None.

    ``pretrained``: the weights a ``pretrained`` config starts from (found in ``weights_cache``
    or at their file); ``save_weights_to``: write the trained members there (``.safetensors``).
    """
    started = time.perf_counter()
    _check_matches(config, dataset)
    target = resolve_device(device)
    precision: Precision = settings.precision if target.type == "cuda" else "fp32"
    settings, predicted_gb = fit_to_device(config, settings, device)
    turns = bool(settings.member_turns) and config.ensemble_size > 1
    check_scorable(dataset, settings.metric, settings.eval_groups)
    weights = balanced_weights(dataset.train.labels, dataset.num_classes) if settings.class_weights == "balanced" else None

    if (config.init == "pretrained") != (pretrained is not None):
        raise PdsweepError(f"{config.name}: a pretrained config needs weights and a random one takes none; "
                           "give weights exactly when init is pretrained.")
    batch_size = min(settings.batch_size, len(dataset.train))
    model, optimizer, scheduler, loaded = _build(
        config, settings, len(dataset.train) // batch_size, torch.device("cpu") if turns else target, pretrained,
        weights_cache,
    )
    predicting = functools.partial(predict, model, batch_size=batch_size, device=target, precision=precision, turns=turns)
    history: list[EpochMetrics] = []
    start_epoch = 0
    if checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT_FILE).is_file():
        start_epoch, history = load_checkpoint(checkpoint_dir / CHECKPOINT_FILE, config, settings, model, optimizer, scheduler)

    last_saved = time.perf_counter()
    for epoch in range(start_epoch + 1, settings.epochs + 1):
        epoch_started = time.perf_counter()
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats(target)
        try:
            loss, images_per_second = _train_epoch(model, optimizer, scheduler, dataset.train, settings, precision, epoch,
                                                   batch_size, target, weights, turns=turns)
        except Diverged as diverged:
            diverged.history = tuple(history)
            raise
        val = scores(*score_units(predicting(dataset.val), dataset.val, settings.eval_groups), weights)
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=loss,
            val_accuracy=float(val["accuracy"]),  # type: ignore[arg-type]
            val_auc=val["auc"],
            lr=scheduler.get_last_lr()[0],
            images_per_second=images_per_second,
            seconds=time.perf_counter() - epoch_started,
            peak_memory_gb=torch.cuda.max_memory_allocated(target) / 1e9 if target.type == "cuda" else None,
            val_balanced_accuracy=val["balanced_accuracy"],
            val_macro_f1=val["macro_f1"],
            val_loss=val["loss"],
        )
        history.append(metrics)
        saved_to = None
        if checkpoint_dir is not None and time.perf_counter() - last_saved >= checkpoint_every_s:
            save_checkpoint(checkpoint_dir / CHECKPOINT_FILE, config, settings, epoch, model, optimizer, scheduler, history)
            saved_to, last_saved = checkpoint_dir, time.perf_counter()
        if on_epoch_end is not None:
            on_epoch_end(metrics, saved_to)

    tested = score_units(predicting(dataset.test), dataset.test, settings.eval_groups)
    test_scores = scores(*tested, weights)
    intervals = bootstrap_intervals(*tested, seed=settings.seed, class_weights=weights)
    test = functools.partial(evaluate, model, dataset.test, batch_size=batch_size, device=target, precision=precision,
                             eval_groups=settings.eval_groups, turns=turns)
    robustness = {1.0: float(test_scores["accuracy"]),  # type: ignore[arg-type]
                  **robustness_curve(model, lambda: float(test()["accuracy"]), settings.seed,  # type: ignore[arg-type]
                                     settings.test_keep_rates)}
    with on_device(model.members[0], target) if turns else contextlib.nullcontext():
        backend = _attention_backend(model, dataset.train, target, precision)
    saved = ()
    if save_weights_to is not None:
        saved = tuple(map(str, save_weights(list(model.members), save_weights_to, model=config.model,
                                            num_heads=config.preset.num_heads)))
    return TrainResult(
        config=config,
        dataset=dataset.name,
        num_classes=dataset.num_classes,
        train_gflops=cost.train_gflops(config),
        inference_gflops=cost.inference_gflops(config),
        history=tuple(history),
        test_accuracy=float(test_scores["accuracy"]),  # type: ignore[arg-type]
        test_auc=test_scores["auc"],
        robustness=robustness,
        test_scores=test_scores,
        test_intervals=intervals,
        class_recall=class_recall(*tested),
        scored_by=settings.eval_groups,
        seconds=time.perf_counter() - started,
        device=str(target),
        resumed_from_epoch=start_epoch,
        skipped_images=dataset.skipped,
        predicted_memory_gb=predicted_gb,
        weights=pretrained,
        pretrained_blocks=loaded,
        saved_weights=saved,
        attention_backend=backend,
        micro_batch_size=min(settings.micro_batch_size or batch_size, batch_size),
        member_turns=turns,
    )


def _build(
    config: Config, settings: TrainingSettings, steps_per_epoch: int, device: torch.device,
    pretrained: WeightFile | None, weights_cache: str | Path | None,
) -> tuple[Ensemble, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, int | None]:
    """The seeded model on ``device`` (every member from ``pretrained`` weights if given, each
    with its own fresh head), its optimizer and LR schedule, and how many blocks started from the
    weights."""
    torch.manual_seed(settings.seed)
    model = build_model(config, attention=settings.attention)
    loaded = None
    if pretrained is not None:
        state = open_weights(pretrained, weights_cache)
        for member in model.members:
            loaded = load_into(member, state)
        if loaded < config.blocks:
            log.info("%s: blocks %d-%d start random (the weights %s have %d)", config.name, loaded + 1,
                     config.blocks, pretrained.source, pretrained.depth)
    model.to(device)
    optimizer = make_optimizer(model, settings.optimizer, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(settings.warmup_epochs * steps_per_epoch, settings.epochs * steps_per_epoch)
    )
    return model, optimizer, scheduler, loaded


def _check_matches(config: Config, dataset: Dataset) -> None:
    if config.num_classes != dataset.num_classes:
        raise PdsweepError(
            f"the config has {config.num_classes} classes but dataset {dataset.name} has "
            f"{dataset.num_classes}; build the config with num_classes={dataset.num_classes}."
        )
    if dataset.resolution != config.resolution:
        raise PdsweepError(f"dataset {dataset.name} is at {dataset.resolution} px, the config at {config.resolution}.")


def _attention_backend(model: Ensemble, split: Split, device: torch.device, precision: Precision) -> str:
    """The attention kernel a training forward of this model ran (on two training images, after
    training: the random draws of the trial are not disturbed)."""
    images, _ = _batch(split, np.arange(min(2, len(split))), device)
    member = model.members[0]
    member.train()
    with torch.enable_grad(), autocast(device, precision):
        return attention_backend(lambda: member(normalize(to_float(images))))


def robustness_curve(model: Ensemble, test: Callable[[], float], seed: int,
                     rates: tuple[float, ...]) -> dict[float, float]:
    """Test accuracy when only part of the patches is kept at test time (each of ``rates`` below 1;
    a Swin's keyed by the rate its window keeps, :func:`kept_at_test`)."""
    curve = {}
    for rate in (kept_at_test(model, r) for r in rates if r < 1):
        if rate >= 1 or rate in curve:
            continue
        torch.manual_seed(seed)  # the same dropped patches on every run
        with dropping_at_test(model, rate):
            curve[rate] = test()
    return curve


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
    class_weights: np.ndarray | None = None,
    *,
    turns: bool = False,
) -> tuple[float, float]:
    """One pass over the shuffled training split; returns (mean loss, images per second).

    Each member of an ensemble sees the split in its own order with its own augmentation and
    PatchDropout draws. Together, every step trains each member in turn and then steps the
    optimizer; in ``turns``, each member runs the whole epoch on the device while the others
    wait on the host, the LR schedule replayed for each.
    """
    model.train()
    # Order, augmentation and PatchDropout draws depend only on (seed, epoch, member), so a
    # resumed run replays them, and members draw the same in turns as together.
    members = len(model.members)
    orders = [torch.randperm(len(split), generator=torch.Generator().manual_seed(_stream(settings.seed * 100_003, epoch, k)))
              .numpy() for k in range(members)]
    augment_rngs = [torch.Generator(device=device).manual_seed(_stream(settings.seed * 100_019, epoch, k))
                    for k in range(members)]
    draws = MemberStreams([_stream(settings.seed * 100_043, epoch, k) for k in range(members)], device)
    weight = torch.as_tensor(class_weights, dtype=torch.float32, device=device) if class_weights is not None else None
    starts = range(0, len(split) - batch_size + 1, batch_size)  # full batches only
    step = functools.partial(member_step, precision=precision, label_smoothing=settings.label_smoothing,
                             grad_clip=settings.grad_clip, class_weights=weight,
                             micro_batch_size=settings.micro_batch_size)

    def batch(k: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = _batch(split, orders[k][start : start + batch_size], device)
        images = to_float(images)
        if settings.augment:
            images = augment(images, augment_rngs[k])
        return normalize(images), labels

    losses = np.zeros(len(starts))
    started = time.perf_counter()
    if turns:
        schedule = scheduler.state_dict()
        for k, member in enumerate(model.members):
            _rewind(scheduler, optimizer, schedule)
            with on_device(member, device, optimizer), draws.member(k):
                for i, start in enumerate(starts):
                    optimizer.zero_grad(set_to_none=True)
                    loss = step(member, batch(k, start))  # the others have no gradient: the step leaves them
                    _check_finite(loss, epoch, i)
                    optimizer.step()
                    scheduler.step()
                    losses[i] += loss / members
    else:
        for i, start in enumerate(starts):
            optimizer.zero_grad(set_to_none=True)
            for k, member in enumerate(model.members):
                with draws.member(k):
                    losses[i] += step(member, batch(k, start)) / members
            _check_finite(float(losses[i]), epoch, i)
            optimizer.step()
            scheduler.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return float(np.mean(losses)), len(starts) * batch_size / (time.perf_counter() - started)


def _check_finite(loss: float, epoch: int, index: int) -> None:
    """Stop at the first bad step: nothing after it can recover."""
    if not math.isfinite(loss):
        raise Diverged(loss, epoch, index + 1)


def _rewind(scheduler: torch.optim.lr_scheduler.LRScheduler, optimizer: torch.optim.Optimizer,
            state: dict[str, object]) -> None:
    """The LR schedule back where ``state`` (its ``state_dict``) was, the optimizer's rates too."""
    scheduler.load_state_dict(dict(state))  # LambdaLR's load pops from the dict it is given
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
        group["lr"] = lr


class MemberStreams:
    """Each member's own random stream for its PatchDropout draws, seeded once: the process's
    random state is the member's inside :meth:`member` and its own again outside."""

    def __init__(self, seeds: list[int], device: torch.device) -> None:
        self.seeds = seeds
        self.device = device
        self.states: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    def _set(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    @contextlib.contextmanager
    def member(self, k: int) -> Iterator[None]:
        outside = self._state()
        if k in self.states:
            self._set(self.states[k])
        else:
            torch.manual_seed(self.seeds[k])
        try:
            yield
        finally:
            self.states[k] = self._state()
            self._set(outside)


@contextlib.contextmanager
def on_device(member: nn.Module, device: torch.device, optimizer: torch.optim.Optimizer | None = None) -> Iterator[None]:
    """``member`` (and its optimizer state) on ``device`` for its turn, back on the host after, its
    gradients dropped; nothing moves when the device is the host."""
    if device.type == "cpu":
        yield
        return
    _move(member, device, optimizer)
    try:
        yield
    finally:
        for param in member.parameters():
            param.grad = None
        _move(member, torch.device("cpu"), optimizer)


def _move(member: nn.Module, device: torch.device, optimizer: torch.optim.Optimizer | None) -> None:
    member.to(device)  # the same Parameter objects: the optimizer still knows them
    if optimizer is None:
        return
    for param in member.parameters():
        state = optimizer.state.get(param, {})
        for key, value in state.items():
            if torch.is_tensor(value) and key != "step":  # AdamW keeps its step count on the host
                state[key] = value.to(device)


def _stream(base: int, epoch: int, member: int) -> int:
    """The seed of a member's data order or augmentation in an epoch (the first member's is
    that of a single model)."""
    return base + epoch + member * 1_000_003


def _batch(split: Split, indices: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, R, R, C) images as stored (uint8 or uint16, C 1 or 3: :func:`to_float` makes them the
    model's (B, 3, R, R)) and (B,) labels, read from the memory map in file order."""
    indices = np.sort(indices)
    images = torch.from_numpy(np.ascontiguousarray(split.images[indices]))
    labels = torch.from_numpy(split.labels[indices])
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def train_step(
    model: Ensemble,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor] | Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    *,
    precision: Precision,
    label_smoothing: float = 0.1,
    grad_clip: float | None = None,
    class_weights: torch.Tensor | None = None,
    micro_batch_size: int | None = None,
) -> float:
    """One optimizer step of every member together; returns the members' mean loss.

    ``batch``: (images (B, 3, R, R), labels (B,)) for every member, or a function giving member
    k its own. Members train one backward at a time (:func:`member_step`), so only one member's
    activations (and batch) are alive at once (the memory model counts it so).
    """
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for k, member in enumerate(model.members):
        total += member_step(member, batch(k) if callable(batch) else batch, precision=precision,
                             label_smoothing=label_smoothing, grad_clip=grad_clip, class_weights=class_weights,
                             micro_batch_size=micro_batch_size)
    optimizer.step()
    return total / len(model.members)


def member_step(
    member: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    *,
    precision: Precision,
    label_smoothing: float = 0.1,
    grad_clip: float | None = None,
    class_weights: torch.Tensor | None = None,
    micro_batch_size: int | None = None,
) -> float:
    """One member's forward and backward over ``batch``, its gradients clipped; returns its loss.

    With ``micro_batch_size`` below the batch, the batch runs as micro-batches whose gradients
    accumulate: PatchDropout draws once for the whole batch (:func:`one_draw`), and each part's
    loss is its share of the batch's mean (summed, over the batch's total class weight), so the
    loss and the gradients are the batch's at once, within floating point. ``class_weights``:
    per-class loss weights (``training.class_weights``).
    """
    images, labels = batch
    size = len(labels)
    micro = min(micro_batch_size or size, size)
    total_weight = class_weights[labels].sum() if class_weights is not None else size
    loss_sum = 0.0
    with one_draw(member, size):
        for part_images, part_labels in zip(images.split(micro), labels.split(micro), strict=True):
            with autocast(images.device, precision):
                logits = member(part_images)  # (b, C)
            loss = F.cross_entropy(logits.float(), part_labels, weight=class_weights, label_smoothing=label_smoothing,
                                   reduction="sum") / total_weight
            loss.backward()
            loss_sum += loss.item()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(member.parameters(), grad_clip)
    return loss_sum


@torch.no_grad()
def predict(
    model: Ensemble, split: Split, *, batch_size: int, device: torch.device, precision: Precision = "fp32",
    turns: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The members' mean softmax (n, C) over ``split``, and its labels (n,); member by member
    (in ``turns``, each on the device for its own pass)."""
    model.eval()
    total: torch.Tensor | None = None
    labels: list[torch.Tensor] = []
    for member in model.members:
        probabilities = []
        with on_device(member, device) if turns else contextlib.nullcontext():
            for start in range(0, len(split), batch_size):
                images, batch_labels = _batch(split, np.arange(start, min(start + batch_size, len(split))), device)
                with autocast(device, precision):
                    logits = member(normalize(to_float(images)))
                probabilities.append(logits.float().softmax(dim=-1).cpu())
                if total is None:
                    labels.append(batch_labels.cpu())
        if probabilities:
            member_proba = torch.cat(probabilities).double()
            total = member_proba if total is None else total + member_proba
    if total is None:
        return np.zeros((0, 1)), np.zeros(0, dtype=np.int64)
    return (total / len(model.members)).numpy(), torch.cat(labels).numpy()


def score_units(predicted: tuple[np.ndarray, np.ndarray], split: Split,
                eval_groups: EvalGroups) -> tuple[np.ndarray, np.ndarray]:
    """What a split is scored over: its images, or (``mean``) its groups, each the mean of its
    images' probabilities."""
    proba, labels = predicted
    return group_mean(proba, labels, split.groups) if eval_groups == "mean" and split.groups is not None else (proba, labels)


def evaluate(
    model: Ensemble, split: Split, *, batch_size: int, device: torch.device, precision: Precision = "fp32",
    eval_groups: EvalGroups = "image", turns: bool = False,
) -> dict[str, float | None]:
    """Every metric (:func:`pdsweep.objective.scores`) of the members' mean softmax on ``split``."""
    return scores(*score_units(predict(model, split, batch_size=batch_size, device=device, precision=precision,
                                       turns=turns), split, eval_groups))


# ---- optimizer, schedule, precision --------------------------------------------------------


def make_optimizer(
    model: nn.Module, name: OptimizerName, *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD with momentum 0.9, or AdamW; no weight decay on norms, biases, embeddings and a Swin's
    relative position bias tables (timm's ``no_weight_decay`` for both).

    ``foreach`` on every device (torch picks it on GPUs only), so the step's memory is the same
    on a CPU as on the GPU the memory model is for.
    """
    decay, no_decay = [], []
    for name_, param in model.named_parameters():
        skip = param.ndim <= 1 or name_.endswith(("pos_embed", "cls_token", "relative_position_bias_table"))
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


def fit_to_device(config: Config, settings: TrainingSettings,
                  device: DeviceName = "auto") -> tuple[TrainingSettings, float]:
    """``settings`` with the step arranged to fit what the device has free, where they leave that
    open (:func:`pdsweep.cost.arrange`), and its predicted peak in GB; an error if nothing fits."""
    target = resolve_device(device)
    precision: Precision = settings.precision if target.type == "cuda" else "fp32"
    setup = replace(settings.step, precision=precision)
    free_gb = free_memory_gb(target)
    arranged = cost.arrange(config, setup, free_gb)
    if arranged is None:
        least = cost.loosest(setup, config.ensemble_size)
        raise PdsweepError(
            f"{config.name} needs about {cost.memory(config, least).gb:.2f} GB at batch {settings.batch_size} "
            f"({precision}, arranged as {cost.describe(least)}), more than the {free_gb:.2f} GB free on {target}; "
            "lower --batch-size or --ensemble-size, or pick a smaller model."
        )
    return settings.arranged(arranged), cost.memory(config, arranged).gb
