"""CSV manifests (``csv:PATH``): one row per image, columns ``path``, ``label`` and optional
``group`` and ``split``.

A path is relative to the CSV's folder (an absolute one is allowed); a label is a class name;
a group names the patient (exam, ...) an image comes from, so that no group is in two splits;
a split is train, val (validation), test, or empty (split by pdsweep).
``csv:PATH?path=COL&label=COL&group=COL`` names other columns.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pdsweep.errors import PdsweepError

# A split cell -> the split; "all": not split yet.
SPLIT_CELLS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "": "all"}


@dataclass(frozen=True)
class Manifest:
    """A manifest read and checked: per row, its image file, label, split and (if any) group."""

    files: tuple[Path, ...]
    labels: tuple[str, ...]
    splits: tuple[str, ...]  # "train", "val", "test" or "all"
    groups: tuple[str, ...] | None  # None: no group column


def read_manifest(path: Path, options: Mapping[str, str]) -> Manifest:
    """The manifest at ``path``; every listed file must exist and, with groups, every row have one."""
    where = f"csv dataset {str(path)!r}"
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name for name in reader.fieldnames or () if name]
            path_col, label_col = options.get("path", "path"), options.get("label", "label")
            group_col = options.get("group", "group" if "group" in header else None)
            missing = [c for c in (path_col, label_col, group_col) if c is not None and c not in header]
            if missing:
                raise PdsweepError(
                    f"{where} has no column {', '.join(map(repr, missing))}; its columns are "
                    f"{', '.join(header) or 'none'}. Name them with csv:PATH?path=COL&label=COL&group=COL."
                )
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PdsweepError(f"{where} cannot be read as CSV ({error}).") from None
    files, labels, splits, groups = [], [], [], []
    for line, row in rows:
        cells = {column: (row.get(column) or "").strip() for column in (path_col, label_col, group_col, "split")
                 if column}
        for column in (path_col, label_col, group_col):
            if column and not cells[column]:
                raise PdsweepError(f"{where} line {line}: the {column!r} cell is empty; fill it in or drop the row.")
        split = cells.get("split", "").lower()
        if split not in SPLIT_CELLS:
            raise PdsweepError(f"{where} line {line}: split {cells['split']!r} is not train, val, validation, "
                               "test or empty.")
        file = Path(cells[path_col]).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            raise PdsweepError(f"{where} line {line}: image {cells[path_col]!r} does not exist "
                               f"(looked for {str(file)!r}); paths are relative to the CSV's folder.")
        files.append(file)
        labels.append(cells[label_col])
        splits.append(SPLIT_CELLS[split])
        groups.append(cells[group_col] if group_col else "")
    return Manifest(tuple(files), tuple(labels), tuple(splits), tuple(groups) if group_col else None)
