r"""The per-batch reductions of the numba estimator path, compiled (one pass per quantity, no numpy).

The form kernels (:mod:`._numba_forms`) write per-row pieces over ``rows = R * n`` rows: ``R``
batches (replications) of ``n`` consecutive rows each. These kernels reduce every batch
separately -- value, CLT or delta-method standard error, Kish ESS and the per-sample arrays --
in log space with max-shifting, like the numpy reference :mod:`tokis.estimators._reduce`:

mean of ``f_i = exp(b_i) h_i`` (product and per-decision forms) or ``f_i = h_i g_i`` (token sums)
    ``m = max{b_i : h_i != 0, b_i and h_i finite}``, ``u_i = exp(b_i - m) h_i`` (``|u_i| <= |h_i|``:
    no overflow; ``u_i = h_i g_i`` and ``m = 0`` for the second kind), ``M = max |u_i|``, stored
    terms ``s_i = u_i / M`` (``max |s_i| = 1``) with ``log_scale = m + log M``;
    ``value = exp(log_scale) mean(s)``, ``stderr = exp(log_scale) std(s, ddof=1) / sqrt(n)``. Rows
    whose term is not finite count as 0, as in the reference. ``ess = (sum w)^2 / sum w^2`` of the
    weights ``exp(lw_i - max lw)`` or ``wh_i / max |wh|`` (accumulated, not stored).
self-normalised ratio of ``w_i = exp(lw_i)``
    in :mod:`._numba_ratio`, with the helpers here.

A batch's results depend only on its own rows and are computed by the same sequential code
whether the batches are split over threads or not (sums run in a fixed order with four
accumulators; no ``fastmath`` reassociation), so a batch reduced inside an (R, n) call is bit
for bit the batch reduced alone. Outputs are written into arrays the caller allocates.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._chunks import bounds
from ._numba_math import exp as fast_exp

__all__ = ["mean_batches"]


@numba.njit(cache=True, nogil=True)
def _sum4(x):  # pragma: no cover - compiled
    """``sum(x)`` with four accumulators in a fixed order."""
    hi = x.shape[0]
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    i = 0
    while i + 4 <= hi:
        a0 += x[i]
        a1 += x[i + 1]
        a2 += x[i + 2]
        a3 += x[i + 3]
        i += 4
    while i < hi:
        a0 += x[i]
        i += 1
    return (a0 + a1) + (a2 + a3)


@numba.njit(cache=True, nogil=True)
def _sq_dev4(x, mean):  # pragma: no cover - compiled
    """``sum((x - mean)^2)`` with four accumulators in a fixed order."""
    hi = x.shape[0]
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    i = 0
    while i + 4 <= hi:
        d0 = x[i] - mean
        d1 = x[i + 1] - mean
        d2 = x[i + 2] - mean
        d3 = x[i + 3] - mean
        a0 += d0 * d0
        a1 += d1 * d1
        a2 += d2 * d2
        a3 += d3 * d3
        i += 4
    while i < hi:
        d = x[i] - mean
        a0 += d * d
        i += 1
    return (a0 + a1) + (a2 + a3)


@numba.njit(cache=True, nogil=True)
def _scaled(log_scale, x):  # pragma: no cover - compiled
    """``exp(log_scale) * x`` without overflow in between (``+-inf`` past float64)."""
    if x == 0.0 or x != x:
        return x
    e = log_scale + math.log(abs(x))
    mag = math.inf if e > 709.782712893384 else math.exp(e)
    return mag if x > 0 else -mag


@numba.njit(cache=True, nogil=True)
def _max_live(b, h):  # pragma: no cover - compiled
    """``max{b_i : h_i != 0, b_i and h_i finite}`` (``-inf`` if none); four exact running maxima."""
    hi = b.shape[0]
    a0 = -math.inf
    a1 = -math.inf
    a2 = -math.inf
    a3 = -math.inf
    i = 0
    while i + 4 <= hi:
        a0 = max(a0, _live(b[i], h[i]))
        a1 = max(a1, _live(b[i + 1], h[i + 1]))
        a2 = max(a2, _live(b[i + 2], h[i + 2]))
        a3 = max(a3, _live(b[i + 3], h[i + 3]))
        i += 4
    while i < hi:
        a0 = max(a0, _live(b[i], h[i]))
        i += 1
    return max(max(a0, a1), max(a2, a3))


@numba.njit(cache=True, nogil=True)
def _finite(x):  # pragma: no cover - compiled
    return x if abs(x) < math.inf else -math.inf


@numba.njit(cache=True, nogil=True)
def _max_finite(x):  # pragma: no cover - compiled
    """``max`` of the finite entries of ``x`` (``-inf`` if none); four exact running maxima."""
    hi = x.shape[0]
    a0 = -math.inf
    a1 = -math.inf
    a2 = -math.inf
    a3 = -math.inf
    i = 0
    while i + 4 <= hi:
        a0 = max(a0, _finite(x[i]))
        a1 = max(a1, _finite(x[i + 1]))
        a2 = max(a2, _finite(x[i + 2]))
        a3 = max(a3, _finite(x[i + 3]))
        i += 4
    while i < hi:
        a0 = max(a0, _finite(x[i]))
        i += 1
    return max(max(a0, a1), max(a2, a3))


@numba.njit(cache=True, nogil=True)
def _live(bi, hi_):  # pragma: no cover - compiled
    ok = (hi_ != 0.0) & (abs(hi_) < math.inf) & (abs(bi) < math.inf)
    return bi if ok else -math.inf


@numba.njit(cache=True, nogil=True)
def _abs_max(x):  # pragma: no cover - compiled
    hi = x.shape[0]
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    i = 0
    while i + 4 <= hi:
        a0 = max(a0, abs(x[i]))
        a1 = max(a1, abs(x[i + 1]))
        a2 = max(a2, abs(x[i + 2]))
        a3 = max(a3, abs(x[i + 3]))
        i += 4
    while i < hi:
        a0 = max(a0, abs(x[i]))
        i += 1
    return max(max(a0, a1), max(a2, a3))


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _exp_times(b, h, m, out):  # pragma: no cover - compiled
    """``out[i] = exp(b_i - m) h_i`` where the row is live (see :func:`_live`), else 0."""
    for i in range(b.shape[0]):
        bi = b[i]
        hi_ = h[i]
        ok = (hi_ != 0.0) & (abs(hi_) < math.inf) & (abs(bi) < math.inf)
        out[i] = fast_exp(bi - m) * hi_ if ok else 0.0


@numba.njit(cache=True, nogil=True)
def _shifted(b, h, out):  # pragma: no cover - compiled
    """``out[i] = exp(b_i - m) h_i / M``; returns ``log(exp(m) M)`` (0 when all are 0)."""
    m = _max_live(b, h)
    if m == -math.inf:
        out[:] = 0.0
        return 0.0
    _exp_times(b, h, m, out)
    top = _abs_max(out)
    for i in range(out.shape[0]):  # a division: 1 / top overflows for a subnormal top
        out[i] = out[i] / top
    return m + math.log(top)


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _product(h, g, out):  # pragma: no cover - compiled
    """``out[i] = h_i g_i`` where finite, else 0 (a non-finite term counts as 0, as in the reference)."""
    for i in range(h.shape[0]):
        u = h[i] * g[i]
        out[i] = u if abs(u) < math.inf else 0.0


@numba.njit(cache=True, nogil=True)
def _normalised(out):  # pragma: no cover - compiled
    """Divide ``out`` by ``max |out|``; return ``log max |out|`` (0 when all are 0)."""
    top = _abs_max(out)
    if top == 0.0:
        return 0.0
    for i in range(out.shape[0]):  # a division: 1 / top overflows for a subnormal top
        out[i] = out[i] / top
    return math.log(top)


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _exp_block(wb, m, i0, i1, buf):  # pragma: no cover - compiled
    x = wb[i0:i1]
    for j in range(x.shape[0]):
        buf[j] = fast_exp(x[j] - m)


@numba.njit(cache=True, nogil=True)
def _exp_sums(wb, m):  # pragma: no cover - compiled
    """``(sum w, sum w^2)`` of ``w_i = exp(wb_i - m)`` (each ``<= 1``), in a fixed order.

    The exponentials of a block of 256 rows go to a small buffer first (that loop vectorises);
    the sums then run over the buffer with four accumulators.
    """
    hi = wb.shape[0]
    buf = np.empty(256)
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    q0 = 0.0
    q1 = 0.0
    q2 = 0.0
    q3 = 0.0
    for i0 in range(0, hi, 256):
        k = min(256, hi - i0)
        _exp_block(wb, m, i0, i0 + k, buf)
        j = 0
        while j + 4 <= k:
            w0 = buf[j]
            w1 = buf[j + 1]
            w2 = buf[j + 2]
            w3 = buf[j + 3]
            s0 += w0
            s1 += w1
            s2 += w2
            s3 += w3
            q0 += w0 * w0
            q1 += w1 * w1
            q2 += w2 * w2
            q3 += w3 * w3
            j += 4
        while j < k:
            s0 += buf[j]
            q0 += buf[j] * buf[j]
            j += 1
    return (s0 + s1) + (s2 + s3), (q0 + q1) + (q2 + q3)


@numba.njit(cache=True, nogil=True)
def _plain_sums(wh):  # pragma: no cover - compiled
    """``(sum w, sum w^2)`` of ``w_i = wh_i / max |wh|`` (finite entries only), in a fixed order."""
    top = 0.0
    for i in range(wh.shape[0]):
        a = abs(wh[i])
        top = max(top, a if a < math.inf else 0.0)
    if top == 0.0:
        return 0.0, 0.0
    hi = wh.shape[0]
    s0 = 0.0
    s1 = 0.0
    q0 = 0.0
    q1 = 0.0
    i = 0
    while i + 2 <= hi:
        w0 = wh[i] / top
        w1 = wh[i + 1] / top
        w0 = w0 if abs(w0) <= 1.0 else 0.0
        w1 = w1 if abs(w1) <= 1.0 else 0.0
        s0 += w0
        s1 += w1
        q0 += w0 * w0
        q1 += w1 * w1
        i += 2
    if i < hi:
        w0 = wh[i] / top
        w0 = w0 if abs(w0) <= 1.0 else 0.0
        s0 += w0
        q0 += w0 * w0
    return s0 + s1, q0 + q1


@numba.njit(cache=True, nogil=True)
def _mean_batch(b, h, g, w, exp_f, exp_w, terms, value, stderr, ess, log_scale, r, n):  # pragma: no cover
    # f_i = exp(b_i) h_i (exp_f) or h_i g_i; weights exp(w_i) (exp_w) or w_i. The helpers get
    # views of the batch's rows indexed from 0 (loops with a provably non-negative index
    # vectorise; an offset index would be checked for wraparound).
    lo = r * n
    hi = lo + n
    t = terms[lo:hi]
    if exp_f:
        ls = _shifted(b[lo:hi], h[lo:hi], t)
    else:
        _product(h[lo:hi], g[lo:hi], t)
        ls = _normalised(t)
    mean = _sum4(t) / n
    value[r] = _scaled(ls, mean)
    if n >= 2:
        sd = math.sqrt(_sq_dev4(t, mean) / (n - 1)) / math.sqrt(n)
        stderr[r] = _scaled(ls, sd)
    else:
        stderr[r] = math.nan
    log_scale[r] = ls
    if exp_w:
        x = w[lo:hi]
        m = _max_finite(x)
        total, sq = _exp_sums(x, m) if m > -math.inf else (0.0, 0.0)
    else:
        total, sq = _plain_sums(w[lo:hi])
    ess[r] = 0.0 if sq == 0.0 else total * total / sq


@numba.njit(cache=True, nogil=True, parallel=True)
def _mean_batches(b, h, g, w, exp_f, exp_w, terms, value, stderr, ess, log_scale, n, nch):  # pragma: no cover
    R = value.shape[0]
    for ch in numba.prange(nch):
        lo, hi = bounds(ch, nch, R)
        for r in range(lo, hi):
            _mean_batch(b, h, g, w, exp_f, exp_w, terms, value, stderr, ess, log_scale, r, n)


@numba.njit(cache=True, nogil=True)
def _mean_batches_serial(b, h, g, w, exp_f, exp_w, terms, value, stderr, ess, log_scale, n):  # pragma: no cover
    # one thread: no parallel region to compile (numba's parfor passes are most of a driver's compile time)
    for r in range(value.shape[0]):
        _mean_batch(b, h, g, w, exp_f, exp_w, terms, value, stderr, ess, log_scale, r, n)


_NONE = np.empty(0)


def mean_batches(h, R: int, *, b=None, g=None, log_weights=None, weights=None, threads: int = 1):
    """Mean of the per-sample statistic per batch of ``n = rows / R`` rows, and Kish ESS of the weights.

    The statistic is ``f_i = exp(b_i) h_i`` (``b`` given) or ``f_i = h_i g_i`` (``g`` given); the
    weights are ``exp(log_weights_i)`` or ``weights_i`` (exactly one of the two).

    Parameters
    ----------
    h : float64 (rows,)
    R : int
        Number of batches.
    b, g, log_weights, weights : float64 (rows,), optional
    threads : int
        Batches are split over threads when ``threads > 1`` and ``R > 1``.

    Returns
    -------
    value, stderr, ess, log_scale : float64 (R,)
    terms : float64 (rows,)
        ``f_i * exp(-log_scale)`` (``max |terms| = 1`` per batch unless all are 0).
    """
    rows = h.shape[0]
    n = rows // R
    terms = np.empty(rows)
    value, stderr, ess, log_scale = np.empty(R), np.empty(R), np.empty(R), np.empty(R)
    exp_f, exp_w = b is not None, log_weights is not None
    w = log_weights if exp_w else weights
    nch = min(R, 4 * threads) if threads > 1 else 1
    args = (b if exp_f else _NONE, h, _NONE if exp_f else g, w, exp_f, exp_w, terms, value, stderr, ess, log_scale, n)
    if nch > 1:
        _mean_batches(*args, nch)
    else:
        _mean_batches_serial(*args)
    return value, stderr, ess, log_scale, terms
