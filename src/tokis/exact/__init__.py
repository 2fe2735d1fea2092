"""Exact quantities by dynamic programming over (step, context); all O(T*S*V)."""

from ._divergence import Divergences, divergences, log_second_moment, sequence_kl, support_mismatch, token_divergence
from ._dp import final_distribution, occupancy, q_values, state_values, value
from ._moments import Moments, TokBiasDecomposition, moments, population_ess, tok_bias_decomposition

__all__ = [
    "occupancy",
    "final_distribution",
    "state_values",
    "q_values",
    "value",
    "token_divergence",
    "sequence_kl",
    "log_second_moment",
    "support_mismatch",
    "divergences",
    "Divergences",
    "moments",
    "Moments",
    "population_ess",
    "tok_bias_decomposition",
    "TokBiasDecomposition",
]
