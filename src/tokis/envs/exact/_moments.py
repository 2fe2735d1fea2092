"""Exact moments of estimators (placeholder until implemented)."""

__all__ = ["moments", "Moments", "population_ess", "tok_bias_decomposition", "TokBiasDecomposition"]


def _todo(*a, **k):
    raise NotImplementedError


moments = population_ess = tok_bias_decomposition = _todo
Moments = TokBiasDecomposition = None
