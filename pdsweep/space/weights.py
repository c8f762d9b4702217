"""Where a model's pretrained weights come from: a :class:`WeightSource`, as a space file or
``pdsweep train --pretrained`` names it.

Three forms, told apart by their shape alone (nothing is looked up here):

- a **hub name**, ``timm/deit_tiny_patch16_224.fb_in1k`` (``ORG/NAME``, optionally ``@REVISION``,
  optionally behind timm's ``hf-hub:`` prefix), resolved through ``huggingface_hub`` into the
  Hugging Face cache;
- a **timm name**, ``deit_tiny_patch16_224.fb_in1k`` (a model and optionally its pretrained tag),
  which timm's pretrained config maps to its hub name;
- a **local file**, a timm state dict: a path ending in ``.safetensors``, ``.pth``, ``.pt`` or
  ``.bin``, or any path that starts with ``/``, ``./``, ``../`` or ``~``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pdsweep.errors import PdsweepError

SourceKind = Literal["hub", "timm", "file"]
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
HUB_PREFIX = "hf-hub:"
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?")
_TIMM_NAME = re.compile(r"[A-Za-z0-9][\w-]*(\.[\w-]+)?")
_EXAMPLE = "timm/deit_tiny_patch16_224.fb_in1k"


@dataclass(frozen=True)
class WeightSource:
    """A hub repository (``location`` = repo id, ``revision`` or None for main), a timm model
    name (``location``; its hub repository is timm's to say), or a local file."""

    kind: SourceKind
    location: str
    revision: str | None = None

    @classmethod
    def parse(cls, text: object) -> WeightSource:
        """The source a space file or a flag names; a malformed one is an error that shows both forms."""
        if not isinstance(text, str) or not text.strip():
            raise PdsweepError(f"a weight source must be a hub name such as {_EXAMPLE} or a local .safetensors or "
                               f".pth file, got {text!r}.")
        text = text.strip()
        if text.startswith(HUB_PREFIX):
            return cls._hub(text[len(HUB_PREFIX):], text)
        path_like = text.startswith(("/", "./", "../", "~")) or text.endswith(WEIGHT_SUFFIXES)
        if path_like:
            if not text.endswith(WEIGHT_SUFFIXES):
                raise PdsweepError(f"weight file {text!r} must be a timm state dict ending in "
                                   f"{', '.join(WEIGHT_SUFFIXES)}; convert it, or give a hub name such as {_EXAMPLE}.")
            return cls("file", str(Path(text).expanduser()))
        if "/" not in text and _TIMM_NAME.fullmatch(text):
            return cls("timm", text)
        return cls._hub(text, text)

    @classmethod
    def _hub(cls, name: str, text: str) -> WeightSource:
        if not _HUB_NAME.fullmatch(name):
            raise PdsweepError(f"weight source {text!r} is neither a hub name (ORG/NAME[@REVISION], such as "
                               f"{_EXAMPLE}), a timm name (such as deit_tiny_patch16_224.fb_in1k) nor a local file "
                               "(.safetensors or .pth); correct it.")
        repo, _, revision = name.partition("@")
        return cls("hub", repo, revision or None)

    def absolute(self) -> WeightSource:
        """A local file's path made absolute (trials run in other working directories)."""
        return WeightSource("file", str(Path(self.location).resolve())) if self.kind == "file" else self

    def __str__(self) -> str:
        return f"{self.location}@{self.revision}" if self.revision else self.location
