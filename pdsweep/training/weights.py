"""Pretrained weights: find a :class:`~pdsweep.space.weights.WeightSource` on disk, read what it
holds, load it into a ViT of any grid, and save trained weights as timm loads them.

A hub name resolves through ``huggingface_hub`` in the Hugging Face cache (``--weights-cache``,
else ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``): timm's files, ``model.safetensors`` (else
``pytorch_model.bin``) and ``config.json``. Only :func:`fetch` goes online; everything else
reads the cache (``local_files_only``), so trials never download and work offline. A local file
is read with ``weights_only=True`` (or as safetensors): loading weights never runs code.

What a file holds (:class:`WeightFile`) is read once, before a sweep: width, depth, and, where
known, the head count (from the metadata ``pdsweep train --save-weights`` writes, or from the
timm architecture in the hub's ``config.json``; a foreign ``.pth`` does not say), its size and
SHA-256. A trial checks the checksum again, so the weights a row names are the ones it loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdsweep.errors import PdsweepError
from pdsweep.presets import ModelPreset, get_preset
from pdsweep.space.weights import WeightSource

if TYPE_CHECKING:
    from pdsweep.space import SearchSpace
    import torch
    from torch import nn

log = logging.getLogger(__name__)

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repositories hold, preferred first
HUB_CONFIG = "config.json"
_BLOCK = re.compile(r"blocks\.(\d+)\.")
_SWIN_BLOCK = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.")  # a Swin's: stage, block


def default_cache() -> Path:
    """The Hugging Face hub cache as ``huggingface_hub`` finds it, read now (not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


class WeightsNotHere(PdsweepError):
    """This machine lacks the weights a run checked before it began (missing, or another file):
    in a trial, the node's fault, not the config's."""


class WeightsMissing(WeightsNotHere):
    """A source that is not on this machine (a file that does not exist, a hub name not cached)."""


@dataclass(frozen=True)
class WeightFile:
    """A weight source found on disk, and what its tensors say about the ViT they are for."""

    source: WeightSource
    path: str
    sha256: str
    size_bytes: int
    embed_dim: int
    depth: int
    num_heads: int | None  # None: the file does not say
    num_classes: int | None  # its head's classes; None: no head
    revision: str | None = None  # a hub source: the cache snapshot (commit) found, so trials load that one
    family: str = "vit"  # or "swin" (a Swin's num_heads: its first stage's, read from the bias table)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "source": asdict(self.source)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> WeightFile:
        return cls(**{**values, "source": WeightSource(**values["source"])})

    @property
    def pinned(self) -> WeightSource:
        """The source at the snapshot that was checked (a later fetch may move ``main``)."""
        hub = hub_source(self.source)
        return WeightSource("hub", hub.location, self.revision) if hub.kind == "hub" and self.revision else hub

    def check_fits(self, model: str, preset: ModelPreset) -> None:
        """Refuse weights of another family, width or head count than ``preset`` (before any trial)."""
        if self.family != preset.family:
            kinds = {"vit": "a ViT", "swin": "a Swin Transformer"}
            raise PdsweepError(f"weights {self.source} for {model} are {kinds[self.family]}, but {model} is "
                               f"{kinds[preset.family]}; give {model} weights of its own family.")
        if self.embed_dim != preset.embed_dim:
            raise PdsweepError(
                f"weights {self.source} for {model} are a ViT of width {self.embed_dim}, but {model} has width "
                f"{preset.embed_dim}; give {model} weights of width {preset.embed_dim}, or list them under a model "
                "of that width."
            )
        if self.num_heads is not None and self.num_heads != preset.num_heads:
            raise PdsweepError(
                f"weights {self.source} for {model} have {self.num_heads} attention heads, but {model} has "
                f"{preset.num_heads}; give weights trained with {preset.num_heads} heads."
            )


def locate(source: WeightSource, cache: str | Path | None = None) -> Path:
    """The file ``source`` names, on this machine; nothing is downloaded."""
    if source.kind == "file":
        path = Path(source.location).expanduser()
        if not path.is_file():
            raise WeightsMissing(f"weight file {str(path)!r} not found; give the path of an existing .safetensors or "
                                 ".pth file.")
        return path
    from huggingface_hub import try_to_load_from_cache

    cache = Path(cache) if cache else default_cache()
    hub = hub_source(source)
    for name in HUB_FILES:
        found = try_to_load_from_cache(hub.location, name, cache_dir=cache, revision=hub.revision)
        if isinstance(found, str):
            return Path(found)
    revision = f" --revision {hub.revision}" if hub.revision else ""
    raise WeightsMissing(
        f"weights {source} are not in the Hugging Face cache {str(cache)!r}; on a machine online, run `hf download "
        f"{hub.location}{revision} --cache-dir {cache}` (for a space: `pdsweep weights fetch SPACE --cache-dir "
        f"{cache}`), or give the cache that holds them (--weights-cache; --cache-dir for `pdsweep weights`)."
    )


def hub_source(source: WeightSource) -> WeightSource:
    """A timm name as the hub repository timm's pretrained config names; other sources as they are."""
    if source.kind != "timm":
        return source
    import timm

    config = timm.models.get_pretrained_cfg(source.location)
    hub_id = getattr(config, "hf_hub_id", None) if config is not None else None
    if not hub_id:
        raise PdsweepError(
            f"timm has no pretrained weights on the Hugging Face hub called {source.location!r}; give a timm name "
            "with its tag (`timm.list_pretrained()` lists them, e.g. deit_tiny_patch16_224.fb_in1k), a hub name "
            "ORG/NAME or a local file."
        )
    repo, _, revision = hub_id.partition("@")
    return WeightSource("hub", repo, revision or None)


def fetch(source: WeightSource, cache: str | Path | None = None) -> Path:
    """Download a hub (or timm) source into the cache unless it is there (a local file: just
    found); the path of its weights."""
    if source.kind == "file":
        return locate(source)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    hub = hub_source(source)
    cache = Path(cache) if cache else default_cache()
    try:
        return locate(source, cache)
    except WeightsMissing:
        pass
    for name in (HUB_CONFIG, *HUB_FILES):
        try:
            path = hf_hub_download(hub.location, name, revision=hub.revision, cache_dir=cache)
        except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError: caught first)
            raise WeightsMissing(
                f"weights {source} cannot be fetched: the Hugging Face hub cannot be reached (offline, or "
                "HF_HUB_OFFLINE=1); fetch them on a machine online into a cache this one reads."
            ) from None
        except EntryNotFoundError:  # the repository lacks this file: try the next
            continue
        except (HfHubHTTPError, OSError, ValueError) as error:
            raise WeightsMissing(f"weights {source} cannot be fetched ({type(error).__name__}: "
                                 f"{str(error).splitlines()[0] if str(error) else error}); check the name.") from None
        if name != HUB_CONFIG:
            return Path(path)
    raise WeightsMissing(f"hub repository {source} has neither {' nor '.join(HUB_FILES)}; is it a timm model?")


def inspect(source: WeightSource, cache: str | Path | None = None) -> WeightFile:
    """Find ``source`` and read what it holds (width, depth, heads where known, checksum)."""
    path = locate(source, cache)
    state, metadata = read_state(path, source)
    embed_dim = next((int(state[k].shape[-1]) for k in ("cls_token", "pos_embed") if k in state), None)
    if embed_dim is None and "patch_embed.proj.weight" in state:
        embed_dim = int(state["patch_embed.proj.weight"].shape[0])
    swin_blocks = {m.groups() for k in state if (m := _SWIN_BLOCK.match(k))}
    if swin_blocks and "patch_embed.proj.weight" in state:
        return _inspect_swin(source, path, state, len(swin_blocks))
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
    if embed_dim is None or not blocks:
        raise PdsweepError(f"weights {source} hold no ViT (no blocks.N.* and no cls_token or pos_embed tensors); "
                           "give a timm VisionTransformer state dict.")
    heads = metadata.get("num_heads")
    head = state.get("head.weight")
    return WeightFile(
        source=source, path=str(path), sha256=sha256(path), size_bytes=path.stat().st_size,
        embed_dim=embed_dim, depth=max(blocks) + 1,
        num_heads=int(heads) if heads is not None else _hub_heads(source, path),
        num_classes=int(head.shape[0]) if head is not None and head.ndim == 2 else None,
        revision=path.parent.name if source.kind != "file" else None,  # .../snapshots/COMMIT/model.safetensors
    )


def _inspect_swin(source: WeightSource, path: Path, state: Mapping[str, torch.Tensor], blocks: int) -> WeightFile:
    """What a timm Swin state dict holds: its width, its blocks in all, and its first stage's heads
    (the relative position bias table has one column per head)."""
    table = state.get("layers.0.blocks.0.attn.relative_position_bias_table")
    head = state.get("head.fc.weight", state.get("head.weight"))
    return WeightFile(
        source=source, path=str(path), sha256=sha256(path), size_bytes=path.stat().st_size,
        embed_dim=int(state["patch_embed.proj.weight"].shape[0]), depth=blocks,
        num_heads=int(table.shape[-1]) if table is not None else None,
        num_classes=int(head.shape[0]) if head is not None and head.ndim == 2 else None,
        revision=path.parent.name if source.kind != "file" else None, family="swin",
    )


@dataclass(frozen=True)
class WeightCheck:
    """One model's weights as :func:`check_space_weights` found them."""

    model: str
    source: WeightSource
    found: WeightFile | None
    problem: str | None = None  # why not found, or why they do not fit the model
    missing: bool = False  # not on this machine (fetching may help), as opposed to unusable


def check_space_weights(space: SearchSpace, cache: str | Path | None = None, *, download: bool = False) -> list[WeightCheck]:
    """Every weight source of ``space``: found (``download``: fetched first) and checked against
    its model's width and heads, or the problem, one line each, naming the model."""
    checks = []
    for model, source in space.weights.items():
        try:
            if download:
                fetch(source, cache)
            found = inspect(source, cache)
            found.check_fits(model, get_preset(model))
        except WeightsMissing as error:
            checks.append(WeightCheck(model, source, None, f"{model}: {str(error).replace('SPACE', space.source)}", True))
        except PdsweepError as error:
            checks.append(WeightCheck(model, source, None, f"{model}: {error}"))
        else:
            checks.append(WeightCheck(model, source, found))
    return checks


def inspect_space(space: SearchSpace, cache: str | Path | None = None) -> dict[str, WeightFile]:
    """The weights of every model of ``space`` that starts pretrained, found and checked (before a
    sweep writes anything); the first problem is the error."""
    if not space.starts_pretrained:
        return {}
    checks = check_space_weights(space, cache)
    for check in checks:
        if check.problem is not None:
            raise (WeightsMissing if check.missing else PdsweepError)(check.problem)
    return {check.model: check.found for check in checks if check.found is not None}


def check_unchanged(weights: Mapping[str, WeightFile], cache: str | Path | None = None) -> None:
    """Each of ``weights`` is still on this machine, unchanged (before a sweep resumes)."""
    for model, found in weights.items():
        try:
            _find_checked(found, cache)
        except PdsweepError as error:
            raise type(error)(f"{model}: {error}") from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state(path: Path, source: WeightSource | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a checkpoint (unwrapped from ``model``/``state_dict``) and its metadata."""
    import torch

    metadata: dict[str, str] = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                state: Any = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (no __iter__)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors and torch raise several types for a file that is not theirs
        first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise PdsweepError(f"weights {source} ({path}) cannot be read as a state dict ({first}); give a timm "
                           ".safetensors or .pth file.") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PdsweepError(f"weights {source} ({path}) hold no state dict of tensors; give a timm .safetensors or "
                           ".pth file.")
    return state, {k.removeprefix("pdsweep."): v for k, v in metadata.items()}


def _hub_heads(source: WeightSource, path: Path) -> int | None:
    """The head count a hub repository's ``config.json`` implies (its ``model_args``, else the
    timm architecture's default); None when it does not say."""
    if source.kind == "file":
        return None
    config_path = path.with_name(HUB_CONFIG)
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(config.get("model_args"), dict) and "num_heads" in config["model_args"]:
        return int(config["model_args"]["num_heads"])
    architecture = config.get("architecture")
    if not isinstance(architecture, str):
        return None
    try:
        import timm
        import torch

        with torch.device("meta"):
            model = timm.create_model(architecture, pretrained=False)
        return int(model.blocks[0].attn.num_heads)
    except Exception:  # an architecture this timm does not know: the heads stay unknown
        return None


def open_weights(weights: WeightFile, cache: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The tensors of ``weights`` as found on this machine, checked to be the file that was inspected."""
    return read_state(_find_checked(weights, cache), weights.source)[0]


def _find_checked(weights: WeightFile, cache: str | Path | None) -> Path:
    path = locate(weights.pinned, cache)
    found = sha256(path)
    if found != weights.sha256:
        raise WeightsNotHere(
            f"weights {weights.source} at {path} are not the ones checked before the run (SHA-256 {found[:12]}..., "
            f"expected {weights.sha256[:12]}...); restore that file, or start a new run with these weights."
        )
    return path


def load_into(member: nn.Module, state: Mapping[str, torch.Tensor], *, head: bool = False) -> int:
    """Load ``state`` into a ViT ``member``; returns the blocks loaded.

    Position embeddings are resampled to the member's grid and the patch embedding to its patch
    size (timm's ``checkpoint_filter_fn``). Blocks beyond the checkpoint's depth keep their
    initialisation; a checkpoint deeper than the member gives its first blocks. The classifier
    head is loaded only with ``head=True`` and a matching class count: a fine-tuned trial
    starts with a fresh head, drawn from its own seed (ensemble members thus differ).
    """
    if hasattr(member, "window_drop"):
        return _load_swin(member, state, head=head)
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = checkpoint_filter_fn(dict(state), member)
    own = member.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and (head or not k.startswith("head."))}
    if not any(k.startswith("blocks.") for k in usable):
        raise PdsweepError(f"the weights match none of the model's blocks; are they a ViT of width {member.embed_dim}?")
    member.load_state_dict(usable, strict=False)
    loaded = len({m.group(1) for k in usable if (m := _BLOCK.match(k))})
    fresh = sorted({".".join(k.split(".")[:2]) if k.startswith("blocks.") else k.split(".")[0] for k in own if k not in usable})
    if fresh:
        log.info("pretrained weights: left at their initialisation: %s", ", ".join(fresh))
    return loaded


def _load_swin(member: nn.Module, state: Mapping[str, torch.Tensor], *, head: bool) -> int:
    """:func:`load_into` for a Swin: timm's own filter (bias tables kept for the same window,
    resampled for another; masks and indices are rebuilt, not loaded). Stage-3 blocks beyond the
    checkpoint's keep their initialisation."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    state = checkpoint_filter_fn(dict(state), member)
    own = member.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and (head or not k.startswith("head."))}
    loaded = {m.groups() for k in usable if (m := _SWIN_BLOCK.match(k))}
    if not loaded:
        raise PdsweepError(f"the weights match none of the model's blocks; are they a Swin of width {member.embed_dim}?")
    member.load_state_dict(usable, strict=False)
    fresh = sorted({".".join(k.split(".")[:4]) for k in own if k not in usable and k.startswith("layers.")})
    if fresh:
        log.info("pretrained weights: left at their initialisation: %s", ", ".join(fresh))
    return len(loaded)


def save_weights(members: list[nn.Module], path: Path, *, model: str, num_heads: int) -> list[Path]:
    """Write trained members as timm-loadable ``.safetensors``: the first at ``path``, the
    others of an ensemble beside it as ``STEM-2.safetensors``, ``STEM-3.safetensors``, ...

    Each file records (as safetensors metadata) the preset and its head count, which the tensors
    alone do not say, so a later sweep can check the weights against its models.
    """
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for k, member in enumerate(members, start=1):
        target = path if k == 1 else path.with_name(f"{path.stem}-{k}{path.suffix}")
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in member.state_dict().items()}
        partial = target.with_name(f".{target.name}.partial")
        try:
            save_file(state, str(partial), metadata={"pdsweep.model": model, "pdsweep.num_heads": str(num_heads),
                                                    "format": "pt"})
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        written.append(target)
    return written
