r"""numba kernels of the estimator forms: one kernel per form family, the token map compiled in.

An estimator is declared once as a *form* (``tokis.estimators.TokenSum``, ``TokenProduct``,
``PerDecision``) whose ``token`` is a plain Python function of the log-ratio written with
numpy ufuncs. :func:`compile_map` turns that function into a numba scalar function (the same
source, with ``np.where``/``np.clip`` given scalar meanings), and each family kernel below is
specialised once per map: the map is inlined into the row loop, not called through a table.
Parameters reach the map as a tuple of floats, in the order of its signature.

Each family is written once below as plain Python functions that call the global name ``MAP``
(and the drivers ``ROWS``); :func:`family` re-creates them over the same code with ``MAP`` bound
to a compiled token map and ``numba.njit``-s them, once per (family, map) per process. The map is
then a compile-time constant of the kernel: it is inlined, and a call from Python dispatches on
plain arrays (about 1 us; a map passed as an argument costs about 8 us of typing per call).
A map that can be imported by name (every built-in's) gets its family kernels from a small
generated module instead, whose functions numba caches on disk (:mod:`._kernel_cache`), so a
new process loads them rather than compiling them again; other maps (lambdas, closures) are
compiled in memory once per process. The map-free kernels (validation, reductions, sampling)
are cached as usual.

Kernels walk rows in chunks (:mod:`._chunks`, the one chunking driver); a row's result never
depends on the chunking or the thread count. Rows may hold several batches back to back
(``R * n`` rows): every kernel here is per row. Kernels trust their inputs: ``log_ratio``
(rows, T) float64 with padding zeroed, ``mask`` (rows, T) bool, ``full`` true when every
position is real (the mask is then not read).
"""

from __future__ import annotations

import functools
import sys
import threading
import types

import numba
import numpy as np
from numba import types as nbtypes
from numba.extending import overload

from .._core._xp import rebind_numpy
from . import _chunks, _numba_math
from ._chunks import bounds, chunks_for
from ._kernel_cache import cached_family
from ._numba_math import exp as fast_exp
from ._numba_math import expm1 as fast_expm1

__all__ = [
    "compile_map",
    "family",
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
# Templates: ``MAP`` is the compiled token map, ``ROWS`` the family's row function; both are bound
# by :func:`family`. Never called as they are.

# reassociation lets LLVM keep several vector accumulators; no "nnan"/"ninf": -inf is data
_FM = {"reassoc", "contract"}


#: Up to this many columns a row is too short for the map to vectorise along it: the sum kernels
#: then map blocks of ``_BLOCK`` rows as one contiguous run of entries (vectorised), and sum each
#: row from that buffer. Each row's terms are added in the order t = 0, 1, ...; the choice
#: depends only on T, never on the batch or the chunking.
_SMALL_T = 3
_BLOCK = 256


def _mapped_block(lr, mask, full, params, buf):  # pragma: no cover - template
    """``buf[j] = MAP(l) (0 where masked)`` for the entries of the rows of ``lr``, in memory order."""
    x = lr.ravel()
    if full:
        for j in range(x.shape[0]):
            buf[j] = MAP(x[j], *params)  # noqa: F821 - bound by family()
    else:
        mk = mask.ravel()
        for j in range(x.shape[0]):
            v = MAP(x[j], *params)  # noqa: F821
            buf[j] = v if mk[j] else 0.0


# Row functions work on views of their rows ``lo..hi-1`` indexed from 0: a loop index that is
# provably non-negative needs no wraparound check, and the loops vectorise.


def _token_sum_rows(lr, mask, full, params, offset, empty, per_length, lengths, out, lo, hi):  # pragma: no cover
    # ``(offset + sum_t MAP(l_t)) [/ L]`` per row, ``empty`` for a row with L = 0 under per_length; also
    # the token-product family's log-weights (offset 0, empty 0: adding +0.0 leaves every sum as it is)
    x, mk, L, o = lr[lo:hi], mask[lo:hi], lengths[lo:hi], out[lo:hi]
    rows, T = x.shape
    if T <= _SMALL_T:
        buf = np.empty(_BLOCK * T)
        for i0 in range(0, rows, _BLOCK):
            i1 = min(rows, i0 + _BLOCK)
            MAPPED(x[i0:i1], mk[i0:i1], full, params, buf)  # noqa: F821
            for i in range(i1 - i0):
                s = 0.0
                for t in range(T):
                    s += buf[i * T + t]
                s += offset
                if per_length:
                    k = L[i0 + i]
                    s = s / k if k > 0 else empty
                o[i0 + i] = s
        return
    for i in range(rows):
        s = 0.0
        if full:
            for t in range(T):
                s += MAP(x[i, t], *params)  # noqa: F821
        else:
            for t in range(T):
                v = MAP(x[i, t], *params)  # noqa: F821
                s += v if mk[i, t] else 0.0
        s += offset
        if per_length:
            k = L[i]
            s = s / k if k > 0 else empty
        o[i] = s


def _per_decision_rows(lr, mask, full, rew, params, b, h, lw, lo, hi):  # pragma: no cover
    # f_i = sum_t exp(P_t) rew_t = exp(b_i) h_i, P_t the prefix sum of y, b_i its max over rewarded steps.
    # One pass keeps the prefix sums and the list of rewarded steps (appended without a branch:
    # a reward every few steps is an unpredictable branch), then the exponentials are taken at
    # the rewarded steps only: the same sums, in the same order, as recomputing the prefix.
    x, mk, rw, bo, ho, lwo = lr[lo:hi], mask[lo:hi], rew[lo:hi], b[lo:hi], h[lo:hi], lw[lo:hi]
    rows, T = x.shape
    prefix = np.empty(T)
    steps = np.empty(T, dtype=np.int64)
    for i in range(rows):
        acc = 0.0
        top = -np.inf
        k = 0
        for t in range(T):
            if full or mk[i, t]:
                acc += MAP(x[i, t], *params)  # noqa: F821
            prefix[t] = acc
            steps[k] = t
            hit = rw[i, t] != 0.0
            k += hit
            top = max(top, acc if hit else -np.inf)  # acc is never -0.0 (sums start at +0.0): no sign ties
        lwo[i] = acc
        if top == -np.inf:
            top = 0.0
        s = 0.0
        for j in range(k):
            t = steps[j]
            s += fast_exp(prefix[t] - top) * rw[i, t]
        bo[i] = top
        ho[i] = s


def _prefix_rows(lr, mask, full, params, out, lo, hi):  # pragma: no cover
    x, mk, o = lr[lo:hi], mask[lo:hi], out[lo:hi]
    rows, T = x.shape
    for i in range(rows):
        acc = 0.0
        for t in range(T):
            if full or mk[i, t]:
                acc += MAP(x[i, t], *params)  # noqa: F821
            o[i, t] = acc


def _count_rows(lr, mask, full, params, out, lo, hi):  # pragma: no cover
    x, mk, o = lr[lo:hi], mask[lo:hi], out[lo:hi]
    rows, T = x.shape
    for i in range(rows):
        k = 0
        for t in range(T):
            if (full or mk[i, t]) and MAP(x[i, t], *params):  # noqa: F821
                k += 1
        o[i] = k


# parallel drivers: the family's row function ``ROWS`` over ``nch`` chunks (1: no parallel region).
# The one-chunk call passes ``lo`` as an int64, not the literal 0: numba would type a literal as
# ``Literal[int](0)`` and compile the row function a second time for it (~0.6 s per kernel).
_ZERO = np.int64(0)


def _token_sum_drive(lr, mask, full, params, offset, empty, per_length, lengths, out, nch):  # pragma: no cover
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = bounds(ch, nch, lr.shape[0])
            ROWS(lr, mask, full, params, offset, empty, per_length, lengths, out, lo, hi)  # noqa: F821
    else:
        ROWS(lr, mask, full, params, offset, empty, per_length, lengths, out, _ZERO, lr.shape[0])  # noqa: F821


def _per_decision_drive(lr, mask, full, rew, params, b, h, lw, nch):  # pragma: no cover
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = bounds(ch, nch, lr.shape[0])
            ROWS(lr, mask, full, rew, params, b, h, lw, lo, hi)  # noqa: F821
    else:
        ROWS(lr, mask, full, rew, params, b, h, lw, _ZERO, lr.shape[0])  # noqa: F821


def _out_drive(lr, mask, full, params, out, nch):  # pragma: no cover - prefix and count
    if nch > 1:
        for ch in numba.prange(nch):
            lo, hi = bounds(ch, nch, lr.shape[0])
            ROWS(lr, mask, full, params, out, lo, hi)  # noqa: F821
    else:
        ROWS(lr, mask, full, params, out, _ZERO, lr.shape[0])  # noqa: F821


_TEMPLATES = {
    "token_sum": (_token_sum_rows, _token_sum_drive, _FM),
    "token_product": (_token_sum_rows, _token_sum_drive, _FM),  # the sum of the log factors, offset 0
    "per_decision": (_per_decision_rows, _per_decision_drive, None),
    "prefix": (_prefix_rows, _out_drive, None),
    "count": (_count_rows, _out_drive, None),
}


def _bind(template, names: dict):
    glb = dict(template.__globals__)
    glb.update(names)
    return types.FunctionType(template.__code__, glb, template.__name__, template.__defaults__,
                              template.__closure__)


_DRIVERS_LOCK = threading.Lock()


def _drivers(kind: str, func):
    """``(parallel, serial)`` compiled drivers of family ``kind`` with the token map ``func`` inlined.

    Thread-safe: calls from several threads (the harness draws replication chunks on a pool)
    build a family's kernels once, the others wait for them.
    """
    with _DRIVERS_LOCK:
        return _build_drivers(kind, func)


@functools.lru_cache(maxsize=None)
def _build_drivers(kind: str, func):
    template, drive, fastmath = _TEMPLATES[kind]
    cached = cached_family(kind, func, template, drive, _mapped_block, fastmath,
                           depends=(sys.modules[__name__], _numba_math, _chunks))
    if cached is not None:  # a module-level map: the kernels come from numba's disk cache
        return cached
    opts = {"fastmath": fastmath} if fastmath else {}
    compiled = compile_map(func)
    # inlined into the row function in numba's IR: no separate function to compile (~0.1 s per kernel)
    mapped = numba.njit(fastmath=_FM, inline="always")(_bind(_mapped_block, {"MAP": compiled}))
    rows = numba.njit(**opts)(_bind(template, {"MAP": compiled, "MAPPED": mapped}))
    bound = _bind(drive, {"ROWS": rows})
    return numba.njit(nogil=True, parallel=True)(bound), numba.njit(nogil=True)(bound)


def family(kind: str, func, nch: int = 2):
    """The compiled driver of family ``kind`` with the token map ``func`` inlined, for ``nch`` chunks.

    ``kind`` is one of ``"token_sum"``, ``"token_product"``, ``"per_decision"``, ``"prefix"``,
    ``"count"``; the driver takes the row function's arguments (without ``lo, hi``) and the
    chunk count ``nch``. For ``nch == 1`` (a call on one thread) it is the same driver compiled
    without a parallel region, so a process whose calls all run on one thread -- every call
    below 2**24 elements, e.g. the whole main job -- never compiles numba's parfor machinery
    (about a quarter of a driver's compile time).
    """
    parallel, serial = _drivers(kind, func)
    return parallel if nch > 1 else serial


def token_sum(func, log_ratio, mask, full, params, offset, per_length, lengths, threads=1):
    """``(offset + sum_t x(l_t)) [/ L]`` per row (rows,) (1 for an empty row when ``per_length``).

    ``func`` is the token map ``x`` (its Python function); ``full``: read every position (every
    token is real, or the map is 0 at the zeroed padding); ``threads``: 1 runs on the calling thread.
    """
    out = np.empty(log_ratio.shape[0])
    nch = chunks_for(log_ratio.shape[0], threads)
    family("token_sum", func, nch)(log_ratio, mask, full, params, float(offset), 1.0, bool(per_length), lengths,
                                   out, nch)
    return out


def token_product(func, log_ratio, mask, full, params, per_length, lengths, threads=1):
    """Log-weight ``sum_t y(l_t) [/ L]`` per row (rows,) (0 for an empty row when ``per_length``)."""
    out = np.empty(log_ratio.shape[0])
    nch = chunks_for(log_ratio.shape[0], threads)
    family("token_product", func, nch)(log_ratio, mask, full, params, 0.0, 0.0, bool(per_length), lengths, out, nch)
    return out


def per_decision(func, log_ratio, mask, full, rewards, params, threads=1):
    """``f_i = sum_t exp(sum_{s<=t} y(l_s)) rew_t`` as ``exp(b_i) h_i``, and the full log-weights (rows,)."""
    n = log_ratio.shape[0]
    b, h, lw = np.empty(n), np.empty(n), np.empty(n)
    nch = chunks_for(n, threads)
    family("per_decision", func, nch)(log_ratio, mask, full, rewards, params, b, h, lw, nch)
    return b, h, lw


def prefix_log_weights(func, log_ratio, mask, full, params, threads=1):
    """Prefix log-weights ``sum_{s<=t} y(l_s)`` (rows, T) (an ended row keeps its total)."""
    out = np.empty(log_ratio.shape)
    nch = chunks_for(log_ratio.shape[0], threads)
    family("prefix", func, nch)(log_ratio, mask, full, params, out, nch)
    return out


def per_decision_columns(func, log_ratio, mask, full, rewards, params, R=1, threads=1):
    """Per-step numerators and denominators of a self-normalised per-decision form.

    Returns ``num, den`` (rows, T): ``exp(P_{i,t} - m_t) rew_{i,t}`` and ``exp(P_{i,t} - m_t)`` with
    ``P`` the prefix sums of ``y`` and ``m`` (R, T) the maximum of ``P`` over each batch's rows
    (0 where every weight is 0), as ``m`` (R, T).
    """
    prefix = prefix_log_weights(func, log_ratio, mask, full, params, threads)
    rows, T = prefix.shape
    p3 = prefix.reshape(R, rows // R, T)
    m = p3.max(axis=1)
    m = np.where(np.isfinite(m), m, 0.0)
    den = np.exp(p3 - m[:, None, :]).reshape(rows, T)
    return den * rewards, den, m


def count_tokens(func, log_ratio, mask, full, params, threads=1):
    """Number of real tokens where ``func(l, *params)`` holds, per row (rows,) int64."""
    out = np.empty(log_ratio.shape[0], np.int64)
    nch = chunks_for(log_ratio.shape[0], threads)
    family("count", func, nch)(log_ratio, mask, full, params, out, nch)
    return out
