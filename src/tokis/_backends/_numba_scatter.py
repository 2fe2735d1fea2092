r"""numba scatter-add of per-token gradient coefficients into the logits' shape.

For softmax logits, ``grad_theta log pi(y | c) = e_y - pi(. | c)`` on row ``c`` (row ``(t, c)`` for
time-dependent logits), so ``sum_i sum_t w_{i,t} grad log pi(y_{i,t} | c_{i,t})`` is

    G[c, a] = sum_{i,t: c_{i,t} = c} w_{i,t} (1{y_{i,t} = a} - pi(a | c)).

One pass over the tokens adds ``w`` at ``(c, y)`` and accumulates the total weight per row; the
``- pi`` part is then one multiply per row. Rows of the batch are split into chunks with their
own accumulators (summed in chunk order); the chunking depends on the batch's size only, so the
result does not depend on the thread count.
"""

from __future__ import annotations

import numba
import numpy as np

from ._chunks import PARALLEL_MIN_ELEMENTS, bounds

#: Row chunks of a large batch (fixed: the sum order must not depend on the thread count).
CHUNKS = 32

__all__ = ["scatter_gradient"]


@numba.njit(cache=True, nogil=True)
def _scatter_rows(w, tokens, contexts, mask, time_dependent, acc, tot, lo, hi):  # pragma: no cover - compiled
    T = w.shape[1]
    for i in range(lo, hi):
        for t in range(T):
            if mask[i, t]:
                k = t if time_dependent else 0
                c = contexts[i, t]
                acc[k, c, tokens[i, t]] += w[i, t]
                tot[k, c] += w[i, t]


@numba.njit(cache=True, nogil=True, parallel=True)
def _scatter(w, tokens, contexts, mask, time_dependent, acc, tot, nch):  # pragma: no cover - compiled
    n = w.shape[0]
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = bounds(ch, nch, n)
            _scatter_rows(w, tokens, contexts, mask, time_dependent, acc[ch], tot[ch], lo, hi)
    else:
        _scatter_rows(w, tokens, contexts, mask, time_dependent, acc[0], tot[0], 0, n)


def scatter_gradient(w, tokens, contexts, mask, probs):
    """``G`` of the module docstring, shaped like ``probs`` ((S, V) or (T, S, V)).

    Parameters
    ----------
    w : float64 (n, T)
        Coefficients (0 at padding).
    tokens, contexts : int64 (n, T)
    mask : bool (n, T)
    probs : float64 (S, V) or (T, S, V)
        The current policy's probabilities.
    """
    time_dependent = probs.ndim == 3
    n, T = w.shape
    K = probs.shape[0] if time_dependent else 1
    S, V = probs.shape[-2:]
    nch = 1 if n * T < PARALLEL_MIN_ELEMENTS else min(n, CHUNKS)
    acc = np.zeros((nch, K, S, V))
    tot = np.zeros((nch, K, S))
    _scatter(np.ascontiguousarray(w, dtype=np.float64), np.ascontiguousarray(tokens, dtype=np.int64),
             np.ascontiguousarray(contexts, dtype=np.int64), np.ascontiguousarray(mask), time_dependent, acc, tot, nch)
    a, s = acc.sum(axis=0), tot.sum(axis=0)
    p = probs if time_dependent else probs[None]
    g = a - s[..., None] * p
    return g if time_dependent else g[0]
