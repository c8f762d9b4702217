"""Record a benchmark's latest table in bench/RESULTS.md, one section per script and device."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nThe latest run of each script in bench/, on the machine it names.\n"


def record(name: str, section: str, *, device: str = "cpu") -> None:
    """Replace the section of ``name`` on ``device`` (or append it) with ``section``."""
    key = name if device == "cpu" else f"{name} ({device})"
    begin, end = f"<!-- bench/{key}: begin -->", f"<!-- bench/{key}: end -->"
    body = f"{begin}\n{section}\n{end}"
    current = RESULTS.read_text() if RESULTS.exists() else HEADER
    if begin in current:
        head, rest = current.split(begin, 1)
        current = head + body + rest.split(end, 1)[1]
    else:
        current = current.rstrip() + "\n\n" + body + "\n"
    RESULTS.write_text(current)
