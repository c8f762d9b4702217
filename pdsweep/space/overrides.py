"""``--set KEY.PATH=VALUE``: a space file changed from the command line, checked as the file is.

An override replaces one value of the file's YAML document before the document is validated,
so a wrong key, type or range gets the file's own message with its key path::

    --set training.epochs=2             a setting
    --set axes.model=deit_tiny          an axis, now fixed
    --set axes.resolution=[32,64]       an axis, now a list (the value is YAML, as in the file)
    --set axes.keep_rate.low=0.25       one bound of a range

A value is read as YAML reads it in the file, except that a number in exponent form
(``training.lr=1e-3``) is a number, as a command line means it (YAML 1.1 reads it as text).
A key path goes through mappings; sections it names that the file lacks are created. Through a
list of mappings (a space's ``configs``) it goes into each of them: ``--set configs.model=vit_micro``
sets the model of every listed config. Into a list of values it cannot go (``axes.resolution.0=32``):
give the whole list. Overrides apply in order, so a
later one wins. A sweep records them (``sweep.json``, the MLflow parent run), and ``resume``
applies them again to the file's text it kept.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pdsweep.errors import PdsweepError
from pdsweep.validate import describe_value

EXAMPLE = "--set training.epochs=2"
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass(frozen=True)
class Override:
    """One ``KEY.PATH=VALUE``: the key path and the value, parsed as YAML."""

    path: tuple[str, ...]
    value: Any
    text: str  # as given, for messages and the record

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @classmethod
    def parse(cls, text: str) -> Override:
        key, equals, raw = text.partition("=")
        key = key.strip()
        if not equals or not key:
            raise PdsweepError(f"--set {text!r}: give KEY.PATH=VALUE, e.g. {EXAMPLE}.")
        path = tuple(part.strip() for part in key.split("."))
        if not all(path):
            raise PdsweepError(f"--set {text!r}: the key path {key!r} has an empty part; write it as in the file, "
                               f"e.g. {EXAMPLE}.")
        if not raw.strip():
            raise PdsweepError(f"--set {key}: no value after '='; give one, e.g. {key}=VALUE (YAML, as in the file).")
        return cls(path, _yaml_value(key, raw), text)


def _yaml_value(key: str, raw: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise PdsweepError(f"--set {key}: {raw!r} is not a valid YAML value ({problem}); quote text, and write lists "
                           "as [a, b] and ranges as {low: A, high: B}.") from None
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 as text; on a command line it is the number
    return value


def parse_overrides(texts: Iterable[str]) -> tuple[Override, ...]:
    return tuple(Override.parse(text) for text in texts)


def apply_overrides(document: Any, overrides: Iterable[Override]) -> Any:
    """A copy of ``document`` (a space file's YAML) with each override applied in order. A
    document that is not a mapping is returned as it is: the space parser says what is wrong."""
    overrides = tuple(overrides)
    if not overrides or not isinstance(document, dict):
        return document
    changed = copy.deepcopy(document)
    for override in overrides:
        _set(changed, override, 0)
    return changed


def _set(node: dict[str, Any], override: Override, depth: int) -> None:
    """Set ``override`` below ``node``, which its key path reached after ``depth`` parts."""
    path = override.path
    if depth == len(path) - 1:
        node[path[depth]] = copy.deepcopy(override.value)
        return
    part = path[depth]
    child = node.get(part)
    where = ".".join(path[:depth + 1])
    if child is None:
        child = node[part] = {}
    if isinstance(child, list) and child and all(isinstance(item, dict) for item in child):
        if path[depth + 1].isdigit():
            raise PdsweepError(f"--set {override.key}: {where} is a list; a key path through it sets the key in every "
                               f"entry (--set {where}.{'.'.join(path[depth + 2:]) or 'KEY'}=VALUE), not in one by its "
                               f"index; to change one entry, set the whole list (--set {where}=[...]).")
        for item in child:  # a list of mappings (listed configs): the rest of the path in each
            _set(item, override, depth + 1)
        return
    if isinstance(child, list):
        raise PdsweepError(f"--set {override.key}: {where} is a list, and a key path cannot go into a list; "
                           f"set the whole list, e.g. --set {where}=[A,B].")
    if not isinstance(child, dict):
        raise PdsweepError(f"--set {override.key}: {where} is {describe_value(child)}, not a section with keys; "
                           f"set it whole, e.g. --set {where}=VALUE.")
    _set(child, override, depth + 1)


def described(source: str, overrides: Iterable[Override]) -> str:
    """How messages name a space file changed by overrides: ``FILE (with --set ...)``."""
    texts = [o.text for o in overrides]
    return f"{source} (with --set {' --set '.join(texts)})" if texts else source
