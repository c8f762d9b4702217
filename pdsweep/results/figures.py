"""What every pdsweep plot shares: matplotlib without a display, and how a figure is finished."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pdsweep.errors import PdsweepError


def output_dir(path: Path) -> Path:
    """``path`` made if missing: a folder that cannot be made (a file is there, no permission) is
    one line that names it, not a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PdsweepError(f"cannot write into {str(path)!r} ({error.strerror or error}); choose another folder "
                           "with --out DIR.") from None
    return path


def write_text(path: Path, text: str) -> Path:
    """``text`` into ``path`` (its folder made); a file that cannot be written is one line."""
    try:
        output_dir(path.parent)
        path.write_text(text)
    except OSError as error:
        raise PdsweepError(f"cannot write {str(path)!r} ({error.strerror or error}); choose another folder with "
                           "--out DIR.") from None
    return path


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed: plots are files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure: Any, axes: Any, path: Path, *, grid_which: str = "both") -> Path:
    """Grid, legend and tight layout, then the figure written to ``path`` (its folder made) and closed."""
    import matplotlib.pyplot as plt

    axes.grid(True, which=grid_which, alpha=0.3)
    axes.legend(loc="best", fontsize=8, framealpha=0.9)
    figure.tight_layout()
    try:
        figure.savefig(output_dir(path.parent) / path.name)
    except OSError as error:
        raise PdsweepError(f"cannot write {str(path)!r} ({error.strerror or error}); choose another folder with "
                           "--out DIR.") from None
    finally:
        plt.close(figure)
    return path
