"""Exact quantities of token MDPs by dynamic programming over (step, context); all O(T*S*V).

Value, occupancy, Q and V of any policy; divergences between two policies; and the exact
moments of every declared estimator (:func:`moments`), derived from its form.
"""

from ._divergence import Divergences, divergences, log_second_moment, sequence_kl, support_mismatch, token_divergence
from ._dp import final_distribution, occupancy, q_values, state_values, value
from ._errors import NoExactMethodError
from ._gradient import gradient
from ._moments import moments
from ._objective import GradientMoments, objective_gradient
from ._optimal import optimal_value
from ._results import Moments
from ._surrogate import SurrogateCurve, surrogate
from ._tok_bias import TokBiasDecomposition, population_ess, tok_bias_decomposition

__all__ = [
    "occupancy",
    "final_distribution",
    "state_values",
    "q_values",
    "value",
    "optimal_value",
    "gradient",
    "token_divergence",
    "sequence_kl",
    "log_second_moment",
    "support_mismatch",
    "divergences",
    "Divergences",
    "moments",
    "Moments",
    "NoExactMethodError",
    "objective_gradient",
    "GradientMoments",
    "surrogate",
    "SurrogateCurve",
    "population_ess",
    "tok_bias_decomposition",
    "TokBiasDecomposition",
]
