"""The two-command promise: .ci/run runs exactly README's install and test commands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_block(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"## {heading}\n.*?```bash\n(.*?)```", readme, re.S)
    assert match, f"README has no bash block under '## {heading}'"
    return match.group(1).strip()


def test_ci_runs_readmes_install_and_test_commands_verbatim() -> None:
    ci_commands = [
        line for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd ", "if ", "fi", " "))  # system packages aside
    ]
    assert ci_commands == [_readme_block("Install"), _readme_block("Test")]
