"""The exception raised when no exact method applies (an expected outcome, not a bug)."""

from __future__ import annotations

__all__ = ["NoExactMethodError"]


class NoExactMethodError(ValueError):
    """No exact method gives this estimator's moments here.

    Raised by :func:`tokis.exact.moments` when the estimator has no finite recursion and the
    MDP is too large to enumerate (more than ``max_sequences`` sequences, or more than
    ``max_multisets`` multisets of ``n`` sequences), when a method is asked for that does not
    apply to the estimator, or when the moments do not exist (a self-normalised estimator whose
    weights are all zero with positive probability). Callers that tabulate many estimators (the harness, the ``tokis``
    commands) catch this exception and report the cell without exact values; tokis never
    substitutes sampling for an exact value. A subclass of ValueError.
    """
