"""CuPy sampler: one GPU thread per sequence, O(log V) binary search per token.

The CUDA kernel mirrors ``tokis._backends._numba_sample`` line for line: the same SplitMix64
uniforms (:data:`tokis._backends._cupy.CUDA_RNG`), the same inverse-CDF tables and the same
binary search, so it draws the numpy reference's tokens bit for bit (only integer arithmetic
and exact comparisons of doubles are involved, so the GPU's floating point cannot differ).
"""

from __future__ import annotations

import numpy as np

from .._core._rng import STREAM_TOKEN, run_key
from ._cupy import CUDA_RNG, cuda_module, require_cupy
from ._tables import eos_index, start_table, step_tables

__all__ = ["SAMPLE_SOURCE", "launch_plan", "sample_cupy", "sample_cupy_device"]

SAMPLE_SOURCE = (
    CUDA_RNG
    + r"""
// first index a with u < row[a]; row non-decreasing and row[len - 1] > u
__device__ __forceinline__ long long tokis_search(const double* row, long long len, double u) {
    long long lo = 0, hi = len - 1;
    while (lo < hi) {
        long long mid = (lo + hi) >> 1;
        if (u < row[mid]) hi = mid; else lo = mid + 1;
    }
    return lo;
}

// cdf (tp, S, V) with tp in {1, T}; start_cdf (S,); nxt (S, V); tokens, contexts (n, T)
extern "C" __global__ void tokis_sample(
    const double* __restrict__ cdf, const int tp, const long long S, const long long V,
    const double* __restrict__ start_cdf, const long long* __restrict__ nxt,
    const long long eos, const unsigned long long key, const long long n, const long long T,
    long long* __restrict__ tokens, long long* __restrict__ contexts)
{
    const long long i = (long long)blockIdx.x * (long long)blockDim.x + (long long)threadIdx.x;
    if (i >= n) return;
    const unsigned long long rk = tokis_mix64(key ^ (unsigned long long)i);
    long long c = tokis_search(start_cdf, S, tokis_uniform(rk, (unsigned long long)T));
    long long* tok = tokens + i * T;
    long long* ctx = contexts + i * T;
    long long t = 0;
    while (t < T) {
        const double u = tokis_uniform(rk, (unsigned long long)t);
        const double* row = cdf + ((tp > 1 ? t : 0) * S + c) * V;
        const long long a = tokis_search(row, V, u);
        tok[t] = a;
        ctx[t] = c;
        c = nxt[c * V + a];
        ++t;
        if (a == eos) break;
    }
    for (; t < T; ++t) {
        tok[t] = -1;
        ctx[t] = -1;
    }
}
"""
)

_THREADS = 256


def launch_plan(mdp, cdf: np.ndarray, n: int, seed: int, xp, threads: int = _THREADS):
    """Arguments of the ``tokis_sample`` kernel, with outputs allocated by ``xp``.

    ``xp`` is ``cupy`` on the GPU; the tests pass ``numpy`` to run the same CUDA source on
    the CPU (compiled by the host compiler with a thread-index shim), so argument order and
    types are checked without a GPU.

    Returns
    -------
    grid, block : tuple of int
    args : tuple
        Device arrays and numpy scalars typed as the kernel's parameters.
    outputs : (tokens, contexts)
    """
    T = int(mdp.horizon)
    table = step_tables(cdf)
    tp, S, V = table.shape
    tokens = xp.empty((n, T), dtype=xp.int64)
    contexts = xp.empty((n, T), dtype=xp.int64)
    args = (
        xp.asarray(table),
        np.int32(tp),
        np.int64(S),
        np.int64(V),
        xp.asarray(start_table(mdp.start)),
        xp.asarray(np.ascontiguousarray(mdp.next_context, dtype=np.int64)),
        np.int64(eos_index(mdp)),
        np.uint64(run_key(seed, STREAM_TOKEN)),
        np.int64(n),
        np.int64(T),
        tokens,
        contexts,
    )
    return ((n + threads - 1) // threads,), (threads,), args, (tokens, contexts)


def sample_cupy_device(mdp, cdf: np.ndarray, n: int, seed: int):
    """Sample on the GPU and leave the result there.

    Parameters and tokens as :func:`tokis._backends._numba_sample.sample_numba`.

    Returns
    -------
    tokens, contexts : cupy int64 (n, T)
    """
    cp = require_cupy()
    grid, block, args, outputs = launch_plan(mdp, cdf, n, seed, cp)
    cuda_module(SAMPLE_SOURCE).get_function("tokis_sample")(grid, block, args)
    return outputs


def sample_cupy(mdp, cdf: np.ndarray, n: int, seed: int):
    """Sample on the GPU and copy ``(tokens, contexts)`` back as numpy int64 ``(n, T)`` arrays."""
    cp = require_cupy()
    tokens, contexts = sample_cupy_device(mdp, cdf, n, seed)
    return cp.asnumpy(tokens), cp.asnumpy(contexts)
