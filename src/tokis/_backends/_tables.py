"""Inputs shared by the compiled samplers: the start-context table and per-step CDF views.

Every backend draws token ``t`` of sequence ``i`` by inverse CDF from the counter-based
uniform ``u(seed, STREAM_TOKEN, i, t)`` (:mod:`tokis._core._rng`), and the start context from
``u(seed, STREAM_TOKEN, i, T)``. The reference rule (``tokis.envs._sample._sample_numpy``) is

    token = #{a : cdf[c, a] <= u},

an O(V) count. Because every CDF row is non-decreasing (a sequential cumulative sum of
non-negative numbers divided by its positive last entry, then 2.0 from the last
positive-probability entry on), the count equals the first ``a`` with ``u < cdf[c, a]``,
which a binary search finds in O(log V). That is the compiled backends' equivalent of alias
tables: O(log V) per token with no per-row preprocessing beyond the CDF itself, and the same
token bit for bit as the O(V) reference for every ``u`` (alias tables would draw *a* token of
the right distribution, but not the *same* token from the same uniform).
"""

from __future__ import annotations

import numpy as np

__all__ = ["start_table", "step_tables", "eos_index"]


def start_table(start: np.ndarray) -> np.ndarray:
    """Inverse-CDF table of the start distribution, built exactly as the numpy sampler does.

    Parameters
    ----------
    start : float64 (S,)
        ``TokenMDP.start``, a probability vector.

    Returns
    -------
    float64 (S,)
        ``cumsum(start) / cumsum(start)[-1]`` with entries from the last positive-probability
        context on set to 2.0, so ``c0 = first c with u < table[c]``.
    """
    start = np.asarray(start, dtype=np.float64)
    table = np.cumsum(start)
    table = table / table[-1]
    last = len(start) - 1 - np.argmax((start > 0)[::-1])
    table[last:] = 2.0
    return np.ascontiguousarray(table)


def step_tables(cdf: np.ndarray) -> np.ndarray:
    """A sampling table ``(S, V)`` or ``(T, S, V)`` as a C-contiguous ``(Tp, S, V)`` float64 array.

    ``Tp = 1`` for a stationary policy (the one slice is used at every step), ``Tp = T``
    for a time-dependent one.
    """
    cdf = np.asarray(cdf, dtype=np.float64)
    if cdf.ndim == 2:
        cdf = cdf[None]
    return np.ascontiguousarray(cdf)


def eos_index(mdp) -> int:
    """``mdp.eos`` as an int, ``-1`` when the MDP has no eos token."""
    return -1 if mdp.eos is None else int(mdp.eos)
