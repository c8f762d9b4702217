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

from pdsweep.config import Config
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


def check_listed(listed: tuple[ListedConfig, ...]) -> None:
    """No config listed twice (two labels for one config would train it twice under two names)."""
    seen: dict[str, int] = {}
    for index, entry in enumerate(listed):
        name = entry.config.name
        if name in seen:
            raise PdsweepError(f"configs[{index}]: lists {name} again (as configs[{seen[name]}]); list each config "
                               "once (a repeat with other seeds is what --repeats is for).")
        seen[name] = index
