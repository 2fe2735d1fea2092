r"""CuPy estimator kernels: the table of ``tokis.estimators._weights`` as CUDA, one warp per row.

Same names, arguments and results as the numpy kernels (validated float64 ``log_ratio``
(n, T) with padding zeroed, ``mask`` (n, T) bool, ``rewards`` (n, T)). Each row is read once
by one warp: lane ``j`` takes steps ``j, j + 32, ...`` (coalesced loads), the warp combines
its lanes with shuffles (sums, maxima, and a warp-wide inclusive scan for prefix
log-weights), and lane 0 writes the row's pieces; a second sweep over the row (the sum of
max-shifted exponentials) hits the cache. Results stay on the device for cupy input (what
:func:`tokis._core._batch.prepare` hands over for cupy input with ``backend="cupy"`` or
``"auto"``, after validating it on the device); numpy input (``backend="cupy"`` with numpy
arrays) is copied to the device and the results copied back.

Agreement with numpy is to rounding, not bit for bit: the lanes add in another order and
prefix sums are warp scans rather than sequential ``cumsum``s, and the GPU's ``exp`` may
differ from the host's in the last bit.

The kernels run through an :class:`Engine` (array module + launcher); the tests swap in one
that runs the same CUDA source on the CPU (``tests/backends/_cuda_emulation.py``; with
``tests/backends/_fake_cupy.py`` standing in for CuPy, the whole cupy-input path), so the
source is exercised without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .._core._xp import is_cupy_array
from ._cupy import cuda_module, require_cupy
from .._kernel_contract import kernel_table

__all__ = [
    "ESTIMATOR_SOURCE",
    "Engine",
    "cupy_engine",
    "log_weight",
    "prefix_log_weight",
    "clipped_log_weight",
    "geo_log_weight",
    "count_above",
    "token_linear",
    "per_decision",
    "per_decision_columns",
    "CUPY_KERNELS",
]

ESTIMATOR_SOURCE = r"""
#define TOKIS_FULL 0xffffffffu

// one warp per row: row = global warp index, lane = index within the warp; a warp past the
// last row returns as a whole (every shuffle below runs on a full warp)
#define TOKIS_ROW_LANE                                                                        \
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;            \
    const int lane = (int)(threadIdx.x & 31u);                                                \
    if (row >= n) return;

__device__ __forceinline__ double tokis_neg_inf() {
    return __longlong_as_double(0xfff0000000000000LL);
}

__device__ __forceinline__ double tokis_warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(TOKIS_FULL, v, o);
    return v;
}

__device__ __forceinline__ long long tokis_warp_sum_ll(long long v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(TOKIS_FULL, v, o);
    return v;
}

__device__ __forceinline__ double tokis_warp_max(double v) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(TOKIS_FULL, v, o));
    return v;
}

// inclusive scan over the lanes: lane j gets v_0 + ... + v_j
__device__ __forceinline__ double tokis_warp_scan(double v, int lane) {
    for (int o = 1; o < 32; o <<= 1) {
        const double u = __shfl_up_sync(TOKIS_FULL, v, o);
        if (lane >= o) v += u;
    }
    return v;
}

// log W_i = sum_t x[i, t]
extern "C" __global__ void tokis_row_sum(
    const double* __restrict__ x, const long long n, const long long T, double* __restrict__ out)
{
    TOKIS_ROW_LANE
    const double* r = x + row * T;
    double s = 0.0;
    for (long long t = lane; t < T; t += 32) s += r[t];
    s = tokis_warp_sum(s);
    if (lane == 0) out[row] = s;
}

// out[i, t] = x[i, 0] + ... + x[i, t], 32 steps at a time
extern "C" __global__ void tokis_row_cumsum(
    const double* __restrict__ x, const long long n, const long long T, double* __restrict__ out)
{
    TOKIS_ROW_LANE
    const double* r = x + row * T;
    double* o = out + row * T;
    double carry = 0.0;
    for (long long t0 = 0; t0 < T; t0 += 32) {
        const long long t = t0 + lane;
        const double acc = carry + tokis_warp_scan(t < T ? r[t] : 0.0, lane);
        if (t < T) o[t] = acc;
        carry = __shfl_sync(TOKIS_FULL, acc, 31);
    }
}

// sum over real tokens of min(x, log_c)
extern "C" __global__ void tokis_clipped_sum(
    const double* __restrict__ x, const bool* __restrict__ mask, const double log_c,
    const long long n, const long long T, double* __restrict__ out)
{
    TOKIS_ROW_LANE
    const double* r = x + row * T;
    const bool* m = mask + row * T;
    double s = 0.0;
    for (long long t = lane; t < T; t += 32) s += m[t] ? fmin(r[t], log_c) : 0.0;
    s = tokis_warp_sum(s);
    if (lane == 0) out[row] = s;
}

// number of real tokens with x > log_c, per row
extern "C" __global__ void tokis_count_above(
    const double* __restrict__ x, const bool* __restrict__ mask, const double log_c,
    const long long n, const long long T, long long* __restrict__ out)
{
    TOKIS_ROW_LANE
    const double* r = x + row * T;
    const bool* m = mask + row * T;
    long long k = 0;
    for (long long t = lane; t < T; t += 32) k += (m[t] && r[t] > log_c) ? 1 : 0;
    k = tokis_warp_sum_ll(k);
    if (lane == 0) out[row] = k;
}

// w_i = [1 - K_i] + sum_{t in B_i} min(r_t, c) = exp(b_i) h_i, b_i = max(0, max_{B_i} min(x, log_c)),
// B_i = real tokens with log_lo <= x <= log_hi, K_i = |B_i|; the bracket only when offset != 0
extern "C" __global__ void tokis_token_linear(
    const double* __restrict__ x, const bool* __restrict__ mask, const double log_c,
    const double log_lo, const double log_hi, const int offset, const long long n, const long long T,
    double* __restrict__ b, double* __restrict__ h, long long* __restrict__ inside)
{
    TOKIS_ROW_LANE
    const double* r = x + row * T;
    const bool* m = mask + row * T;
    double top = 0.0;
    long long k = 0;
    for (long long t = lane; t < T; t += 32) {
        const double v = r[t];
        if (m[t] && v >= log_lo && v <= log_hi) {
            k += 1;
            top = fmax(top, fmin(v, log_c));
        }
    }
    top = tokis_warp_max(top);
    k = tokis_warp_sum_ll(k);
    double s = 0.0;
    for (long long t = lane; t < T; t += 32) {
        const double v = r[t];
        if (m[t] && v >= log_lo && v <= log_hi) s += exp(fmin(v, log_c) - top);
    }
    s = tokis_warp_sum(s);
    if (lane == 0) {
        if (offset) s += (1.0 - (double)k) * exp(-top);
        b[row] = top;
        h[row] = s;
        inside[row] = k;
    }
}

// f_i = sum_t W_{<=t} rew_t = exp(b_i) h_i, b_i = largest prefix log-weight at a rewarded step (0 if none)
extern "C" __global__ void tokis_per_decision(
    const double* __restrict__ x, const double* __restrict__ rew, const long long n, const long long T,
    double* __restrict__ b, double* __restrict__ h)
{
    TOKIS_ROW_LANE
    const double* r = x + row * T;
    const double* w = rew + row * T;
    double carry = 0.0;
    double top = tokis_neg_inf();
    for (long long t0 = 0; t0 < T; t0 += 32) {
        const long long t = t0 + lane;
        const double acc = carry + tokis_warp_scan(t < T ? r[t] : 0.0, lane);
        if (t < T && w[t] != 0.0) top = fmax(top, acc);
        carry = __shfl_sync(TOKIS_FULL, acc, 31);
    }
    top = tokis_warp_max(top);
    if (top == tokis_neg_inf()) top = 0.0;
    carry = 0.0;
    double s = 0.0;
    for (long long t0 = 0; t0 < T; t0 += 32) {
        const long long t = t0 + lane;
        const double acc = carry + tokis_warp_scan(t < T ? r[t] : 0.0, lane);
        if (t < T && w[t] != 0.0) s += exp(acc - top) * w[t];
        carry = __shfl_sync(TOKIS_FULL, acc, 31);
    }
    s = tokis_warp_sum(s);
    if (lane == 0) {
        b[row] = top;
        h[row] = s;
    }
}
"""

_THREADS = 256  # 8 warps, 8 rows per block


@dataclass(frozen=True)
class Engine:
    """Where the kernels run: an array module and a launcher.

    Attributes
    ----------
    xp : module
        ``cupy`` (or ``numpy`` under the CPU emulation used by the tests).
    launch : callable
        ``launch(kernel_name, rows, args)`` runs one warp per row.
    to_device, to_host : callable
        Move an input to ``xp`` (C-contiguous) / bring a result back to numpy when the
        caller passed numpy.
    """

    xp: Any
    launch: Callable[[str, int, tuple], None]
    to_device: Callable[[Any], Any]
    to_host: Callable[[Any], Any]


def cupy_engine() -> Engine:
    """The GPU engine (raises ValueError without CuPy or a CUDA device)."""
    cp = require_cupy()

    def launch(name, rows, args):
        warps_per_block = _THREADS // 32
        blocks = (rows + warps_per_block - 1) // warps_per_block
        cuda_module(ESTIMATOR_SOURCE).get_function(name)((blocks,), (_THREADS,), args)

    return Engine(
        xp=cp,
        launch=launch,
        to_device=lambda a: cp.ascontiguousarray(cp.asarray(a)),
        to_host=cp.asnumpy,
    )


_ENGINE: list = []  # the cached default engine (tests may install another)


def _engine() -> Engine:
    if not _ENGINE:
        _ENGINE.append(cupy_engine())
    return _ENGINE[0]


def _start(first, *arrays):
    """Engine, whether results go back to the host, and the inputs on the device."""
    eng = _engine()
    host = not is_cupy_array(first) and eng.xp is not np
    return eng, host, [eng.to_device(a) for a in (first, *arrays)]


def _finish(eng: Engine, host: bool, *results):
    out = tuple(eng.to_host(r) if host else r for r in results)
    return out if len(out) > 1 else out[0]


def _shape(x):
    n, T = x.shape
    return n, T, np.int64(n), np.int64(T)


def log_weight(log_ratio):
    """Sequence log-weight ``log W_i = sum_t l_{i,t}`` (n,)."""
    eng, host, (x,) = _start(log_ratio)
    n, _, n64, T64 = _shape(x)
    out = eng.xp.empty(n)
    eng.launch("tokis_row_sum", n, (x, n64, T64, out))
    return _finish(eng, host, out)


def prefix_log_weight(log_ratio):
    """Prefix log-weights ``log W_{i,<=t}`` (n, T) by warp scans."""
    eng, host, (x,) = _start(log_ratio)
    n, T, n64, T64 = _shape(x)
    out = eng.xp.empty((n, T))
    eng.launch("tokis_row_cumsum", n, (x, n64, T64, out))
    return _finish(eng, host, out)


def clipped_log_weight(log_ratio, mask, log_c: float):
    """``sum_t min(l_{i,t}, log c)`` over real tokens (n,)."""
    eng, host, (x, m) = _start(log_ratio, mask)
    n, _, n64, T64 = _shape(x)
    out = eng.xp.empty(n)
    eng.launch("tokis_clipped_sum", n, (x, m, np.float64(log_c), n64, T64, out))
    return _finish(eng, host, out)


def geo_log_weight(log_ratio, lengths):
    """``sum_t l_{i,t} / L_i`` (n,), 0 for an empty row."""
    eng, host, (x, L) = _start(log_ratio, lengths)
    xp = eng.xp
    n, _, n64, T64 = _shape(x)
    total = xp.empty(n)
    eng.launch("tokis_row_sum", n, (x, n64, T64, total))
    out = xp.where(L > 0, total / xp.maximum(L, 1), 0.0)
    return _finish(eng, host, out)


def count_above(log_ratio, mask, log_c: float) -> int:
    """Number of real tokens with ``l > log c``."""
    eng, _, (x, m) = _start(log_ratio, mask)
    n, _, n64, T64 = _shape(x)
    out = eng.xp.empty(n, dtype=eng.xp.int64)
    eng.launch("tokis_count_above", n, (x, m, np.float64(log_c), n64, T64, out))
    return int(out.sum())


def token_linear(log_ratio, mask, *, log_c=np.inf, log_lo=-np.inf, log_hi=np.inf, offset=True):
    """Token-additive weight ``w_i = [1 - K_i] + sum_{t in B_i} min(r_t, c)`` as ``(b, h, K)``.

    Same contract as ``tokis.estimators._weights.token_linear``.
    """
    eng, host, (x, m) = _start(log_ratio, mask)
    xp = eng.xp
    n, _, n64, T64 = _shape(x)
    b, h = xp.empty(n), xp.empty(n)
    inside = xp.empty(n, dtype=xp.int64)
    args = (x, m, np.float64(log_c), np.float64(log_lo), np.float64(log_hi), np.int32(bool(offset)), n64, T64,
            b, h, inside)
    eng.launch("tokis_token_linear", n, args)
    return _finish(eng, host, b, h, inside)


def per_decision(log_ratio, rewards):
    """``f_i = sum_t W_{i,<=t} rew_{i,t}`` as ``(b, h)``."""
    eng, host, (x, w) = _start(log_ratio, rewards)
    xp = eng.xp
    n, _, n64, T64 = _shape(x)
    b, h = xp.empty(n), xp.empty(n)
    eng.launch("tokis_per_decision", n, (x, w, n64, T64, b, h))
    return _finish(eng, host, b, h)


def per_decision_columns(log_ratio, rewards):
    """``(num, den, m)``: ``W_{i,<=t} rew_{i,t}`` and ``W_{i,<=t}`` scaled by ``exp(-m_t)``.

    Prefix log-weights by the scan kernel, column maxima and the scaled exponentials by the
    array module's own (fused elementwise) kernels.
    """
    eng, host, (x, w) = _start(log_ratio, rewards)
    xp = eng.xp
    n, T, n64, T64 = _shape(x)
    clw = xp.empty((n, T))
    eng.launch("tokis_row_cumsum", n, (x, n64, T64, clw))
    m = clw.max(axis=0)
    m = xp.where(m > -xp.inf, m, 0.0)
    den = xp.exp(clw - m[None, :])
    return _finish(eng, host, den * w, den, m)


CUPY_KERNELS = kernel_table(globals())
