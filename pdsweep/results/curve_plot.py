"""The compute curve as a PNG: relative train compute against the patch count N (log x).

Per keep rate, one colour: the cost model's exact ratio solid, Eq. 1's dashed, ``keep_rate^2``
(the limit both approach, :mod:`pdsweep.cost.curve`) a dotted horizontal line; the standard
resolutions are labelled vertical marks.
"""

from __future__ import annotations

from pathlib import Path

from pdsweep.cost.curve import ComputeCurve
from pdsweep.results.figures import pyplot, save


def plot_curve(curve: ComputeCurve, path: Path) -> Path:
    """Draw ``curve`` into the PNG ``path`` (folders made as needed); returns ``path``."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=120)
    colours = plt.get_cmap("tab10")
    patches = [row.num_patches for row in curve.rows]
    for i, (rate, limit) in enumerate(zip(curve.keep_rates, curve.limits)):
        colour = colours(i % 10)
        axes.plot(patches, [row.points[i].exact for row in curve.rows], color=colour, linewidth=1.6,
                  label=f"keep {rate:g}: exact (cost model)")
        axes.plot(patches, [row.points[i].eq1 for row in curve.rows], color=colour, linewidth=1.2, linestyle="--",
                  label=f"keep {rate:g}: Eq. 1")
        axes.axhline(limit, color=colour, linewidth=1, linestyle=":", label=f"keep {rate:g}: limit keep² = {limit:g}")
    for row in curve.rows:
        if row.standard:
            axes.axvline(row.num_patches, color="grey", linewidth=0.8, alpha=0.6)
            axes.annotate(f"{row.resolution}px", (row.num_patches, 1.0), xycoords=("data", "axes fraction"),
                          xytext=(2, -2), textcoords="offset points", rotation=90, va="top", fontsize=7,
                          color="dimgrey")
    axes.set_xscale("log")
    axes.set_ylim(0, 1.02 * max([1e-3, *(point.exact for row in curve.rows for point in row.points)]))
    axes.set_xlabel(f"patches N (log scale; resolution = √N × {curve.patch_size}; grey: standard resolutions)")
    axes.set_ylabel("train compute relative to keep rate 1")
    axes.set_title(f"{curve.name}: PatchDropout's saving approaches keep_rate² as N grows")
    return save(figure, axes, path)
