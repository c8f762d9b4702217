"""A space's ``configs:`` section: complete configs, run exactly as listed.

Where ``axes`` describe a space to search, ``configs`` list the points of a comparison, as the
PatchDropout study's experiments are: a few configs compared at equal cost. Each entry names
its axes (``model``, ``resolution`` and ``patch_size`` at least; the others default as in
:class:`pdsweep.config.Config`), and may carry a ``label`` (how tables name it) and a ``group``
(configs compared with one another; the report's paper layout gives each row's difference
against its group's baseline: the group's first config with every token kept, else its first)::

    configs:
      - {group: 224px, label: full tokens, model: deit_base, resolution: 224, patch_size: 16, keep_rate: 1}
      - {group: 224px, label: larger image, model: deit_base, resolution: 448, patch_size: 16, keep_rate: 0.25}

Keep mode ``uniform`` takes ``keep_range_low`` (the draw is between it and ``keep_rate``).
``pdsweep run --search grid`` trains each listed config once; with a budget, every listed config
must fit it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pdsweep.config import Config, strategy_count
from pdsweep.errors import PdsweepError

LABEL_KEYS = ("label", "group")
EXTRA_KEYS = ("keep_range_low",)  # not a space axis (it follows from a keep range), but a listed config's own
REQUIRED_KEYS = ("model", "resolution", "patch_size")


@dataclass(frozen=True)
class ListedConfig:
    """One entry of a space's ``configs``: the config (its ``num_classes`` is the dataset's, set
    with :meth:`for_classes`), its label and its group."""

    config: Config
    label: str = ""
    group: str = ""

    @property
    def title(self) -> str:
        """How a table names the config: its label, else its run name."""
        return self.label or self.config.name

    @property
    def full_tokens(self) -> bool:
        """Every patch kept in every iteration: a group's natural baseline."""
        return self.config.keep_rate >= 1.0 and self.config.keep_mode == "fixed"

    def for_classes(self, num_classes: int) -> Config:
        return replace(self.config, num_classes=num_classes)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "label": self.label, "group": self.group}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ListedConfig:
        return cls(Config.from_dict(values["config"]), values.get("label", ""), values.get("group", ""))


def group_baselines(listed: tuple[ListedConfig, ...]) -> dict[str, ListedConfig]:
    """Each group's baseline: its first full-token config, else its first config."""
    baselines: dict[str, ListedConfig] = {}
    for entry in listed:
        current = baselines.get(entry.group)
        if current is None or (entry.full_tokens and not current.full_tokens):
            baselines[entry.group] = entry
    return baselines


def trains_as(config: Config) -> tuple[object, ...]:
    """What a config trains: its architecture and the patch counts it keeps. Two keep rates that
    keep the same patches (0.5 and 0.55 of 16 patches both keep 8) train the same model."""
    if config.family == "swin":
        counts = tuple(config.window_keeps)
    else:
        counts = tuple(strategy_count(config.grid_size, c, config.sampling) for c in config.requested_counts)
    return replace(config.explicit, keep_rate=1.0, keep_mode="fixed", keep_range_low=None), config.keep_mode, counts


def check_listed(listed: tuple[ListedConfig, ...]) -> None:
    """No config listed twice, nor two that train alike (one would train twice under two names)."""
    seen: dict[tuple[object, ...], int] = {}
    names: dict[str, int] = {}
    for index, entry in enumerate(listed):
        key = trains_as(entry.config)
        name = entry.config.name
        if name in names and key not in seen:  # two configs one name: results would be matched to the wrong one
            raise PdsweepError(f"configs[{index}]: is named {name} as configs[{names[name]}] is, but keeps "
                               f"{entry.config.patches_kept} of {entry.config.num_patches} patches, not "
                               f"{listed[names[name]].config.patches_kept}; give keep rates that differ in the "
                               "first three digits.")
        names.setdefault(name, index)
        if key in seen:
            first = listed[seen[key]].config
            same = "again" if first.name == entry.config.name else f"({entry.config.name}), which trains as {first.name}"
            kept = entry.config.patches_kept
            raise PdsweepError(
                f"configs[{index}]: lists {entry.config.name if same == 'again' else 'a config'} {same} (configs[{seen[key]}]: "
                f"both keep {kept} of {entry.config.num_patches} patches); list each config once (a repeat with other "
                "seeds is what --repeats is for; a smaller keep rate keeps fewer patches)."
            )
        seen[key] = index
