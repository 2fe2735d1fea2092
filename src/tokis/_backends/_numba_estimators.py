r"""Numba estimator kernels: the table of ``tokis.estimators._weights`` compiled, parallel over rows.

Each function takes the same validated float64 arrays and returns the same pieces as its
numpy twin in :mod:`tokis.estimators._weights` (``log_ratio`` (n, T) with padding zeroed,
``mask`` (n, T) bool, ``rewards`` (n, T) with padding zeroed, ``lengths`` (n,)). Every row is
handled by one thread (rows split into chunks over the thread pool; small inputs stay on
the calling thread): the row is read from memory once (a second sweep over the
same row, where a max-shift needs it, hits the cache), and everything the estimator needs
from it -- log-weights, max-shifted sums of exponentials, band counts -- is computed in that
sweep. Results agree with numpy to rounding: sums may be added in another order (vector
lanes) and :func:`tokis._backends._numba_math.exp` is within an ulp of ``numpy.exp``, so
per-row values differ by a few ulps of the sum of magnitudes (about 1e-15 relative).

Outputs of shape (n, T) are allocated by numpy and filled in by the kernels: numpy asks the
kernel for huge pages, and first-touch page faults on numba-allocated (n, T) outputs cost
more than the arithmetic. Prefix sums (``per_decision``, ``per_decision_columns``, ``prefix_log_weight``) are
sequential within a row, exactly as ``numpy.cumsum``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._numba_math import exp
from .._kernel_contract import kernel_table

__all__ = [
    "log_weight",
    "prefix_log_weight",
    "clipped_log_weight",
    "geo_log_weight",
    "count_above",
    "token_linear",
    "per_decision",
    "per_decision_columns",
    "NUMBA_KERNELS",
]

# reassociation lets LLVM keep several vector accumulators; no "nnan"/"ninf": -inf is data
_FM = {"reassoc", "contract"}

# Every kernel is a serial function over a range of rows (``*_rows``, callable directly for
# small inputs) and a parallel driver that splits the rows into chunks; a row's result never
# depends on the chunking or the number of threads.


@numba.njit(cache=True, fastmath=_FM)
def _row_sum_rows(x, out, lo, hi):  # pragma: no cover - compiled
    T = x.shape[1]
    for i in range(lo, hi):
        s = 0.0
        for t in range(T):
            s += x[i, t]
        out[i] = s


@numba.njit(cache=True)
def _row_cumsum_rows(x, out, lo, hi):  # pragma: no cover - compiled
    T = x.shape[1]
    for i in range(lo, hi):
        s = 0.0
        for t in range(T):
            s += x[i, t]
            out[i, t] = s


@numba.njit(cache=True, fastmath=_FM)
def _clipped_sum_rows(x, mask, log_c, out, lo, hi):  # pragma: no cover - compiled
    T = x.shape[1]
    for i in range(lo, hi):
        s = 0.0
        for t in range(T):
            s += min(x[i, t], log_c) if mask[i, t] else 0.0
        out[i] = s


@numba.njit(cache=True)
def _count_above_rows(x, mask, log_c, out, lo, hi):  # pragma: no cover - compiled
    T = x.shape[1]
    for i in range(lo, hi):
        k = 0
        for t in range(T):
            k += np.int64(mask[i, t] & (x[i, t] > log_c))
        out[i] = k


@numba.njit(cache=True, fastmath=_FM)
def _token_linear_rows(x, mask, log_c, log_lo, log_hi, offset, b, h, inside, lo, hi):  # pragma: no cover
    # w_i = [1 - K_i] + sum_{t in B_i} min(r_t, c) = exp(b_i) h_i, b_i = max(0, max_{B_i} u_t)
    T = x.shape[1]
    for i in range(lo, hi):
        top = 0.0
        k = 0
        for t in range(T):
            v = x[i, t]
            band = mask[i, t] & (v >= log_lo) & (v <= log_hi)
            k += np.int64(band)
            top = max(top, min(v, log_c)) if band else top
        s = 0.0
        for t in range(T):
            v = x[i, t]
            band = mask[i, t] & (v >= log_lo) & (v <= log_hi)
            s += exp(min(v, log_c) - top) if band else 0.0
        if offset:
            s += (1.0 - k) * exp(-top)
        b[i] = top
        h[i] = s
        inside[i] = k


@numba.njit(cache=True)
def _per_decision_rows(x, rew, b, h, lo, hi):  # pragma: no cover - compiled
    # f_i = sum_t W_{<=t} rew_t = exp(b_i) h_i, b_i = max prefix log-weight over rewarded steps
    T = x.shape[1]
    for i in range(lo, hi):
        acc = 0.0
        top = -np.inf
        for t in range(T):
            acc += x[i, t]
            if rew[i, t] != 0.0 and acc > top:
                top = acc
        if top == -np.inf:
            top = 0.0
        acc = 0.0
        s = 0.0
        for t in range(T):
            acc += x[i, t]
            r = rew[i, t]
            if r != 0.0:
                s += exp(acc - top) * r
        b[i] = top
        h[i] = s


@numba.njit(cache=True)
def _prefix_max_rows(x, den, colmax, lo, hi):  # pragma: no cover - compiled
    # den[i] = prefix log-weights of row i; colmax = running column maxima over the rows
    T = x.shape[1]
    for i in range(lo, hi):
        acc = 0.0
        for t in range(T):
            acc += x[i, t]
            den[i, t] = acc
            colmax[t] = max(colmax[t], acc)


@numba.njit(cache=True)
def _scale_columns_rows(den, rew, m, num, lo, hi):  # pragma: no cover - compiled
    T = den.shape[1]
    for i in range(lo, hi):
        for t in range(T):
            d = exp(den[i, t] - m[t])
            den[i, t] = d
            num[i, t] = d * rew[i, t]


# parallel drivers: chunk ch covers rows [ch * rows, min(n, (ch + 1) * rows))


@numba.njit(cache=True, parallel=True)
def _row_sum_par(x, out, nchunks):  # pragma: no cover - compiled
    n = x.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _row_sum_rows(x, out, ch * rows, min(n, (ch + 1) * rows))


@numba.njit(cache=True, parallel=True)
def _row_cumsum_par(x, out, nchunks):  # pragma: no cover - compiled
    n = x.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _row_cumsum_rows(x, out, ch * rows, min(n, (ch + 1) * rows))


@numba.njit(cache=True, parallel=True)
def _clipped_sum_par(x, mask, log_c, out, nchunks):  # pragma: no cover - compiled
    n = x.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _clipped_sum_rows(x, mask, log_c, out, ch * rows, min(n, (ch + 1) * rows))


@numba.njit(cache=True, parallel=True)
def _count_above_par(x, mask, log_c, out, nchunks):  # pragma: no cover - compiled
    n = x.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _count_above_rows(x, mask, log_c, out, ch * rows, min(n, (ch + 1) * rows))


@numba.njit(cache=True, parallel=True)
def _token_linear_par(x, mask, log_c, log_lo, log_hi, offset, b, h, inside, nchunks):  # pragma: no cover
    n = x.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _token_linear_rows(x, mask, log_c, log_lo, log_hi, offset, b, h, inside, ch * rows, min(n, (ch + 1) * rows))


@numba.njit(cache=True, parallel=True)
def _per_decision_par(x, rew, b, h, nchunks):  # pragma: no cover - compiled
    n = x.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _per_decision_rows(x, rew, b, h, ch * rows, min(n, (ch + 1) * rows))


@numba.njit(cache=True, parallel=True)
def _prefix_max_par(x, den, part, nchunks):  # pragma: no cover - compiled
    n = x.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _prefix_max_rows(x, den, part[ch], ch * rows, min(n, (ch + 1) * rows))


@numba.njit(cache=True, parallel=True)
def _scale_columns_par(den, rew, m, num, nchunks):  # pragma: no cover - compiled
    n = den.shape[0]
    rows = (n + nchunks - 1) // nchunks
    for ch in numba.prange(nchunks):
        _scale_columns_rows(den, rew, m, num, ch * rows, min(n, (ch + 1) * rows))


#: below this many (n * T) elements a kernel runs on the calling thread: waking the thread
#: pool costs more than the work (and on some virtual machines a sleeping worker takes ms)
PARALLEL_MIN_ELEMENTS = 1 << 16


def _chunks(shape) -> int:
    """Number of row chunks: 1 (serial) for small inputs, else a few per thread."""
    n, T = shape
    if n * T < PARALLEL_MIN_ELEMENTS or numba.get_num_threads() < 2:
        return 1
    return max(1, min(n, 4 * numba.get_num_threads()))


def log_weight(log_ratio: np.ndarray) -> np.ndarray:
    """Sequence log-weight ``log W_i = sum_t l_{i,t}`` (n,)."""
    out = np.empty(log_ratio.shape[0])
    k = _chunks(log_ratio.shape)
    if k == 1:
        _row_sum_rows(log_ratio, out, 0, log_ratio.shape[0])
    else:
        _row_sum_par(log_ratio, out, k)
    return out


def prefix_log_weight(log_ratio: np.ndarray) -> np.ndarray:
    """Prefix log-weights ``log W_{i,<=t} = sum_{s<=t} l_{i,s}`` (n, T), sequential as ``np.cumsum``."""
    out = np.empty(log_ratio.shape)
    k = _chunks(log_ratio.shape)
    if k == 1:
        _row_cumsum_rows(log_ratio, out, 0, log_ratio.shape[0])
    else:
        _row_cumsum_par(log_ratio, out, k)
    return out


def clipped_log_weight(log_ratio: np.ndarray, mask: np.ndarray, log_c: float) -> np.ndarray:
    """``sum_t min(l_{i,t}, log c)`` over real tokens (n,): log of ``prod_t min(r_t, c)``."""
    out = np.empty(log_ratio.shape[0])
    k = _chunks(log_ratio.shape)
    if k == 1:
        _clipped_sum_rows(log_ratio, mask, float(log_c), out, 0, log_ratio.shape[0])
    else:
        _clipped_sum_par(log_ratio, mask, float(log_c), out, k)
    return out


def geo_log_weight(log_ratio: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``sum_t l_{i,t} / L_i`` (n,), 0 for an empty row."""
    total = log_weight(log_ratio)
    return np.where(lengths > 0, total / np.maximum(lengths, 1), 0.0)


def count_above(log_ratio: np.ndarray, mask: np.ndarray, log_c: float) -> int:
    """Number of real tokens with ``l > log c``."""
    out = np.empty(log_ratio.shape[0], dtype=np.int64)
    k = _chunks(log_ratio.shape)
    if k == 1:
        _count_above_rows(log_ratio, mask, float(log_c), out, 0, log_ratio.shape[0])
    else:
        _count_above_par(log_ratio, mask, float(log_c), out, k)
    return int(out.sum())


def token_linear(log_ratio, mask, *, log_c=np.inf, log_lo=-np.inf, log_hi=np.inf, offset=True):
    """Token-additive weight ``w_i = [1 - K_i] + sum_{t in B_i} min(r_t, c)`` as ``(b, h, K)``.

    ``B_i`` = real tokens with ``log lo <= l_t <= log hi``; ``w_i = exp(b_i) h_i`` with
    ``b_i = max(0, max_{t in B_i} min(l_t, log c))``; the bracket only when ``offset``.
    Same contract as ``tokis.estimators._weights.token_linear``.
    """
    n = log_ratio.shape[0]
    b, h = np.empty(n), np.empty(n)
    inside = np.empty(n, dtype=np.int64)
    args = (log_ratio, mask, float(log_c), float(log_lo), float(log_hi), bool(offset), b, h, inside)
    k = _chunks(log_ratio.shape)
    if k == 1:
        _token_linear_rows(*args, 0, n)
    else:
        _token_linear_par(*args, k)
    return b, h, inside


def per_decision(log_ratio: np.ndarray, rewards: np.ndarray):
    """``f_i = sum_t W_{i,<=t} rew_{i,t}`` as ``(b, h)``, ``b_i`` the largest rewarded prefix log-weight."""
    n = log_ratio.shape[0]
    b, h = np.empty(n), np.empty(n)
    k = _chunks(log_ratio.shape)
    if k == 1:
        _per_decision_rows(log_ratio, rewards, b, h, 0, n)
    else:
        _per_decision_par(log_ratio, rewards, b, h, k)
    return b, h


def per_decision_columns(log_ratio: np.ndarray, rewards: np.ndarray):
    """``(num, den, m)``: ``W_{i,<=t} rew_{i,t}`` and ``W_{i,<=t}`` scaled by ``exp(-m_t)``, ``m_t`` column maxima.

    Two sweeps: prefix log-weights with per-chunk column maxima (combined exactly: a maximum
    does not depend on the chunking), then the scaled exponentials.
    """
    n, T = log_ratio.shape
    num = np.empty((n, T))
    den = np.empty((n, T))
    k = _chunks(log_ratio.shape)
    part = np.full((k, T), -np.inf)
    if k == 1:
        _prefix_max_rows(log_ratio, den, part[0], 0, n)
    else:
        _prefix_max_par(log_ratio, den, part, k)
    m = part.max(axis=0)
    m = np.where(m > -np.inf, m, 0.0)
    if k == 1:
        _scale_columns_rows(den, rewards, m, num, 0, n)
    else:
        _scale_columns_par(den, rewards, m, num, k)
    return num, den, m


NUMBA_KERNELS = kernel_table(globals())


def _warm(parallel: bool = True) -> None:  # pragma: no cover - exercised by the benchmarks
    """Compile (or load from the cache) every kernel: serial ones, and the parallel drivers."""
    shape = (64, PARALLEL_MIN_ELEMENTS // 64) if parallel else (2, 3)
    x = np.zeros(shape)
    m = np.ones(shape, dtype=bool)
    log_weight(x)
    prefix_log_weight(x)
    clipped_log_weight(x, m, math.log(2.0))
    count_above(x, m, 0.0)
    token_linear(x, m)
    per_decision(x, x)
    per_decision_columns(x, x)
