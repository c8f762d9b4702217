"""Search spaces: space files become validated objects, and a plan lists what fits a budget.

Imports no torch: ``pdsweep plan`` over the whole paper space takes milliseconds.
"""

from pdsweep.space.axes import Axis, Categorical, FloatRange, IntRange, keep_rates
from pdsweep.space.files import bundled_space_names, load_space, load_training, parse_space, resolve_space
from pdsweep.space.listed import ListedConfig, group_baselines
from pdsweep.space.plan import KEEP_POLICIES, KeepPolicy, Plan, PlannedConfig, listed_budget, plan
from pdsweep.space.search_space import SearchSpace
from pdsweep.space.settings import TrainingSettings

__all__ = [
    "KEEP_POLICIES", "Axis", "Categorical", "FloatRange", "IntRange", "KeepPolicy", "ListedConfig", "Plan", "PlannedConfig",
    "SearchSpace", "TrainingSettings", "bundled_space_names", "group_baselines", "keep_rates", "listed_budget", "load_space", "load_training", "parse_space", "plan",
    "resolve_space",
]
