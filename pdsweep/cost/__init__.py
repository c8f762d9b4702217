"""The cost of training a config, in closed form: FLOPs, memory, budgets and feasibility, and the
compute curve (relative cost against the patch count).

Imports no torch: the planner and the sampler call this thousands of times a second. fvcore's
count of the real model (the reference these formulas are tested against) is in
:mod:`pdsweep.training.verify`.
"""

from pdsweep.cost.arrangement import HOST_LINK_GB_S, arrange, candidates, describe, loosest, turn_seconds
from pdsweep.cost.budget import Budget, Cost, estimate
from pdsweep.cost.curve import (
    DEFAULT_KEEP_RATES,
    STANDARD_RESOLUTIONS,
    ComputeCurve,
    CurvePoint,
    CurveRow,
    compute_curve,
)
from pdsweep.cost.feasibility import (
    KeepRates,
    excess,
    fits,
    keep_rate_between,
    largest_keep_rate,
    max_keep_count,
    window_rates,
)
from pdsweep.cost.flops import (
    GIGA,
    eq1_flops,
    inference_flops,
    inference_gflops,
    param_count,
    train_flops,
    train_gflops,
)
from pdsweep.cost.memory import MemoryEstimate, memory
from pdsweep.cost.setup import ATTENTIONS, OPTIMIZERS, PRECISIONS, Attention, OptimizerName, Precision, StepSetup

__all__ = [
    "ATTENTIONS", "DEFAULT_KEEP_RATES", "HOST_LINK_GB_S", "GIGA", "OPTIMIZERS", "PRECISIONS", "STANDARD_RESOLUTIONS", "Attention",
    "Budget", "ComputeCurve", "Cost", "CurvePoint", "CurveRow", "KeepRates", "MemoryEstimate", "OptimizerName",
    "Precision", "StepSetup", "arrange", "candidates", "compute_curve", "describe", "eq1_flops", "estimate",
    "excess", "fits", "inference_flops", "inference_gflops", "keep_rate_between", "largest_keep_rate", "loosest",
    "max_keep_count", "memory", "param_count", "train_flops", "train_gflops", "turn_seconds", "window_rates",
]
