"""Reading a YAML file a user wrote (a space file, a runtime env): every way it can fail is one
line that names the file and, where PyYAML knows it, the line and column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pdsweep.errors import PdsweepError

__all__ = ["read_yaml"]


def read_yaml(path: Path, what: str, loader: type | None = None) -> Any:
    """The document in ``path`` (``what``: how the file is named in an error, e.g. "the space
    file"), read with ``loader`` (default: PyYAML's safe loader)."""
    import yaml

    try:
        return yaml.load(path.read_text(), Loader=loader or yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise PdsweepError(f"{path}: not valid YAML{where}: {_one_line(problem)}.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PdsweepError(f"{path}: cannot read {what} ({_one_line(str(error))}).") from None
    except RecursionError:  # PyYAML builds nested lists and mappings recursively
        raise PdsweepError(f"{path}: not {what}: lists or mappings nested too deeply to read.") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())
