r"""numba kernels of the estimator forms: one kernel per form family, the token map compiled in.

An estimator is declared once as a *form* (``tokis.estimators.TokenSum``, ``TokenProduct``,
``PerDecision``) whose ``token`` is a plain Python function of the log-ratio written with
numpy ufuncs. :func:`compile_map` turns that function into a numba scalar function (the same
source, with ``np.where``/``np.clip`` given scalar meanings), and each family kernel below takes
the compiled map as its first argument, so numba specialises the family kernel once per map:
the map is inlined into the row loop, not called through a table. Parameters reach the map as
a tuple of floats, in the order of its signature.

The family kernels are not cached on disk: their type signature holds the token map's dispatcher,
which a cache entry written by another process cannot refer to, so each process compiles the
families it uses (about 0.3-0.6 s per family and map). Every kernel walks rows in chunks (:mod:`._chunks`, the one chunking driver); a row's result never depends on the chunking or the thread count.
Kernels trust their inputs: ``log_ratio`` (n, T) float64 with padding zeroed, ``mask`` (n, T)
bool, ``full`` true when every position is real (the mask is then not read).
"""

from __future__ import annotations

import functools
import types

import numba
import numpy as np
from numba import types as nbtypes
from numba.extending import overload

from .._core._xp import rebind_numpy
from ._chunks import bounds, chunk_count
from ._numba_math import exp as fast_exp
from ._numba_math import expm1 as fast_expm1

__all__ = [
    "compile_map",
    "count_tokens",
    "per_decision",
    "per_decision_columns",
    "token_product",
    "token_sum",
]

# --------------------------------------------------------------------------- compiling token maps


def _scalar_where(cond, a, b):
    return np.where(cond, a, b)


@overload(_scalar_where)
def _ov_where(cond, a, b):  # pragma: no cover - typing hook
    if isinstance(cond, nbtypes.Boolean) and isinstance(a, nbtypes.Number) and isinstance(b, nbtypes.Number):
        return lambda cond, a, b: a if cond else b
    return lambda cond, a, b: np.where(cond, a, b)


def _scalar_clip(x, lo, hi):
    return np.clip(x, lo, hi)


@overload(_scalar_clip)
def _ov_clip(x, lo, hi):  # pragma: no cover - typing hook
    if isinstance(x, nbtypes.Number):
        return lambda x, lo, hi: min(max(x, lo), hi)
    return lambda x, lo, hi: np.clip(x, lo, hi)


def _scalar_numpy() -> types.ModuleType:
    """A module with numpy's names in which ``where`` and ``clip`` also take scalars (for numba)."""
    mod = types.ModuleType("numpy")
    mod.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    mod.where = _scalar_where
    mod.clip = _scalar_clip
    mod.exp = fast_exp  # vectorisable, within about an ulp of numpy's
    mod.expm1 = fast_expm1
    return mod


_NP = _scalar_numpy()


@functools.lru_cache(maxsize=None)
def compile_map(func):
    """The numba scalar version of a token map written with numpy ufuncs.

    ``func(l, *params)`` is re-created over the same code with a numpy whose ``where`` and
    ``clip`` accept scalars (numba's ``np.where`` on scalars returns a 0-d array) -- plain
    Python functions it calls too (:func:`tokis._core._xp.rebind_numpy`) -- and ``numba.njit``-ed.
    The original function is left untouched for the array path.
    """
    if isinstance(func, numba.core.registry.CPUDispatcher):
        return func
    return numba.njit(rebind_numpy(func, _NP, numba.njit))


# --------------------------------------------------------------------------- family kernels

# reassociation lets LLVM keep several vector accumulators; no "nnan"/"ninf": -inf is data
_FM = {"reassoc", "contract"}


@numba.njit(fastmath=_FM)
def _token_sum_rows(x, lr, mask, full, params, offset, per_length, lengths, out, lo, hi):  # pragma: no cover
    T = lr.shape[1]
    for i in range(lo, hi):
        s = 0.0
        k = lengths[i]
        if full:
            for t in range(T):
                s += x(lr[i, t], *params)
        else:
            for t in range(T):
                v = x(lr[i, t], *params)
                s += v if mask[i, t] else 0.0
        s += offset
        if per_length:
            s = s / k if k > 0 else 1.0
        out[i] = s


@numba.njit(parallel=True)
def _token_sum(x, lr, mask, full, params, offset, per_length, lengths, out, nch):  # pragma: no cover - compiled
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = bounds(ch, nch, lr.shape[0])
            _token_sum_rows(x, lr, mask, full, params, offset, per_length, lengths, out, lo, hi)
    else:
        _token_sum_rows(x, lr, mask, full, params, offset, per_length, lengths, out, 0, lr.shape[0])


def token_sum(x, log_ratio, mask, full, params, offset, per_length, lengths):
    """``(offset + sum_t x(l_t)) [/ L]`` per row (n,) (1 for an empty row when ``per_length``).

    ``full``: read every position (every token is real, or the map is 0 at the zeroed padding).
    """
    out = np.empty(log_ratio.shape[0])
    _token_sum(x, log_ratio, mask, full, params, float(offset), bool(per_length), lengths, out,
               chunk_count(*log_ratio.shape))
    return out


@numba.njit(fastmath=_FM)
def _token_product_rows(y, lr, mask, full, params, per_length, lengths, out, lo, hi):  # pragma: no cover
    T = lr.shape[1]
    for i in range(lo, hi):
        s = 0.0
        k = lengths[i]
        if full:
            for t in range(T):
                s += y(lr[i, t], *params)
        else:
            for t in range(T):
                v = y(lr[i, t], *params)
                s += v if mask[i, t] else 0.0
        if per_length:
            s = s / k if k > 0 else 0.0
        out[i] = s


@numba.njit(parallel=True)
def _token_product(y, lr, mask, full, params, per_length, lengths, out, nch):  # pragma: no cover - compiled
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = bounds(ch, nch, lr.shape[0])
            _token_product_rows(y, lr, mask, full, params, per_length, lengths, out, lo, hi)
    else:
        _token_product_rows(y, lr, mask, full, params, per_length, lengths, out, 0, lr.shape[0])


def token_product(y, log_ratio, mask, full, params, per_length, lengths):
    """Log-weight ``sum_t y(l_t) [/ L]`` per row (n,) (0 for an empty row when ``per_length``).

    ``full``: read every position (every token is real, or the map is 0 at the zeroed padding).
    """
    out = np.empty(log_ratio.shape[0])
    _token_product(y, log_ratio, mask, full, params, bool(per_length), lengths, out, chunk_count(*log_ratio.shape))
    return out


@numba.njit
def _per_decision_rows(y, lr, mask, full, rew, params, b, h, lw, lo, hi):  # pragma: no cover - compiled
    # f_i = sum_t exp(P_t) rew_t = exp(b_i) h_i, P_t the prefix sum of y, b_i its max over rewarded steps
    T = lr.shape[1]
    for i in range(lo, hi):
        acc = 0.0
        top = -np.inf
        for t in range(T):
            if full or mask[i, t]:
                acc += y(lr[i, t], *params)
            if rew[i, t] != 0.0 and acc > top:
                top = acc
        lw[i] = acc
        if top == -np.inf:
            top = 0.0
        acc = 0.0
        s = 0.0
        for t in range(T):
            if full or mask[i, t]:
                acc += y(lr[i, t], *params)
            r = rew[i, t]
            if r != 0.0:
                s += fast_exp(acc - top) * r
        b[i] = top
        h[i] = s


@numba.njit(parallel=True)
def _per_decision(y, lr, mask, full, rew, params, b, h, lw, nch):  # pragma: no cover - compiled
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = bounds(ch, nch, lr.shape[0])
            _per_decision_rows(y, lr, mask, full, rew, params, b, h, lw, lo, hi)
    else:
        _per_decision_rows(y, lr, mask, full, rew, params, b, h, lw, 0, lr.shape[0])


def per_decision(y, log_ratio, mask, full, rewards, params):
    """``f_i = sum_t exp(sum_{s<=t} y(l_s)) rew_t`` as ``exp(b_i) h_i``, and the full log-weights (n,)."""
    n = log_ratio.shape[0]
    b, h, lw = np.empty(n), np.empty(n), np.empty(n)
    _per_decision(y, log_ratio, mask, full, rewards, params, b, h, lw, chunk_count(*log_ratio.shape))
    return b, h, lw


@numba.njit
def _prefix_rows(y, lr, mask, full, params, out, lo, hi):  # pragma: no cover - compiled
    T = lr.shape[1]
    for i in range(lo, hi):
        acc = 0.0
        for t in range(T):
            if full or mask[i, t]:
                acc += y(lr[i, t], *params)
            out[i, t] = acc


@numba.njit(parallel=True)
def _prefix(y, lr, mask, full, params, out, nch):  # pragma: no cover - compiled
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = bounds(ch, nch, lr.shape[0])
            _prefix_rows(y, lr, mask, full, params, out, lo, hi)
    else:
        _prefix_rows(y, lr, mask, full, params, out, 0, lr.shape[0])


def per_decision_columns(y, log_ratio, mask, full, rewards, params):
    """Per-step numerators and denominators of a self-normalised per-decision form.

    Returns ``num, den`` (n, T): ``exp(P_{i,t} - m_t) rew_{i,t}`` and ``exp(P_{i,t} - m_t)`` with
    ``P`` the prefix sums of ``y`` and ``m_t = max_i P_{i,t}`` (T,) (0 where every weight is 0).
    """
    prefix = np.empty(log_ratio.shape)
    _prefix(y, log_ratio, mask, full, params, prefix, chunk_count(*log_ratio.shape))
    m = prefix.max(axis=0)
    m = np.where(np.isfinite(m), m, 0.0)
    den = np.exp(prefix - m[None, :])
    return den * rewards, den, m


@numba.njit
def _count_rows(flag, lr, mask, full, params, out, lo, hi):  # pragma: no cover - compiled
    T = lr.shape[1]
    for i in range(lo, hi):
        k = 0
        for t in range(T):
            if (full or mask[i, t]) and flag(lr[i, t], *params):
                k += 1
        out[i] = k


@numba.njit(parallel=True)
def _count(flag, lr, mask, full, params, out, nch):  # pragma: no cover - compiled
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = bounds(ch, nch, lr.shape[0])
            _count_rows(flag, lr, mask, full, params, out, lo, hi)
    else:
        _count_rows(flag, lr, mask, full, params, out, 0, lr.shape[0])


def count_tokens(flag, log_ratio, mask, full, params) -> int:
    """Number of real tokens where ``flag(l, *params)`` holds."""
    out = np.empty(log_ratio.shape[0], np.int64)
    _count(flag, log_ratio, mask, full, params, out, chunk_count(*log_ratio.shape))
    return int(out.sum())
