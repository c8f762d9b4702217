"""What every pdsweep plot shares: matplotlib without a display, and how a figure is finished."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
