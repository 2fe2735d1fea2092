r"""The self-normalised ratio of the numba estimator path, per batch (see :mod:`._numba_reduce`).

``w_i = exp(lw_i - max lw)``, ``N_i = w_i g_i``; ``value = sum N / sum w`` and the delta-method
standard error ``std(z, ddof=1) / sqrt(n)`` with ``z_i = (N_i - value w_i) / mean(w)``; ``nan``
when every weight of the batch is 0; Kish ESS ``(sum w)^2 / sum w^2``. Same conventions as the
mean: each batch on views of its own rows, sums in a fixed order, so a batch reduced with others
is bit for bit the batch reduced alone.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._chunks import bounds
from ._numba_math import exp as fast_exp
from ._numba_reduce import _max_finite, _sq_dev4, _sum4

__all__ = ["ratio_batches"]


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _weights(lw, g, m, num, den):  # pragma: no cover - compiled
    for i in range(lw.shape[0]):
        w = fast_exp(lw[i] - m)
        den[i] = w
        num[i] = w * g[i]


@numba.njit(cache=True, nogil=True)
def _ratio_batch(lw, g, num, den, value, stderr, ess, log_scale, r, n):  # pragma: no cover - compiled
    lo = r * n
    hi = lo + n
    x, nu, de = lw[lo:hi], num[lo:hi], den[lo:hi]  # views indexed from 0 (see _mean_batch)
    m = _max_finite(x)
    if m == -math.inf:
        m = 0.0
    _weights(x, g[lo:hi], m, nu, de)
    log_scale[r] = m
    den_sum = _sum4(de)
    sq = _sq_dev4(de, 0.0)
    ess[r] = 0.0 if sq == 0.0 else den_sum * den_sum / sq
    if den_sum == 0.0:
        value[r] = math.nan
        stderr[r] = math.nan
        return
    v = _sum4(nu) / den_sum
    value[r] = v
    if n < 2:
        stderr[r] = math.nan
        return
    scale = den_sum / n
    # z_i = (N_i - v w_i) / mean(w): std(z, ddof=1) / sqrt(n) in two passes in a fixed order
    z = np.empty(n)
    for i in range(n):
        z[i] = (nu[i] - v * de[i]) / scale
    zm = _sum4(z) / n
    stderr[r] = math.sqrt(_sq_dev4(z, zm) / (n - 1)) / math.sqrt(n)


@numba.njit(cache=True, nogil=True, parallel=True)
def _ratio_batches(lw, g, num, den, value, stderr, ess, log_scale, n, nch):  # pragma: no cover - compiled
    R = value.shape[0]
    for ch in numba.prange(nch):
        lo, hi = bounds(ch, nch, R)
        for r in range(lo, hi):
            _ratio_batch(lw, g, num, den, value, stderr, ess, log_scale, r, n)


@numba.njit(cache=True, nogil=True)
def _ratio_batches_serial(lw, g, num, den, value, stderr, ess, log_scale, n):  # pragma: no cover - compiled
    # one thread: no parallel region to compile
    for r in range(value.shape[0]):
        _ratio_batch(lw, g, num, den, value, stderr, ess, log_scale, r, n)


def ratio_batches(lw, g, R: int, threads: int = 1):
    """Self-normalised ratio ``sum w g / sum w`` per batch, ``w = exp(lw)`` (see the module docstring).

    Returns
    -------
    value, stderr, ess, log_scale : float64 (R,)
    numerator, denominator : float64 (rows,)
        ``w_i g_i`` and ``w_i``, times ``exp(-log_scale)``.
    """
    rows = lw.shape[0]
    n = rows // R
    num, den = np.empty(rows), np.empty(rows)
    value, stderr, ess, log_scale = np.empty(R), np.empty(R), np.empty(R), np.empty(R)
    nch = min(R, 4 * threads) if threads > 1 else 1
    if nch > 1:
        _ratio_batches(lw, g, num, den, value, stderr, ess, log_scale, n, nch)
    else:
        _ratio_batches_serial(lw, g, num, den, value, stderr, ess, log_scale, n)
    return value, stderr, ess, log_scale, num, den
