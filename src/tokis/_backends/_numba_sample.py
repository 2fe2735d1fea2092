"""Numba sampler: rows split over threads, O(log V) per token.

Same contract as ``tokis.envs._sample._sample_numpy``: ``(mdp, cdf, n, seed) -> (tokens,
contexts)``, both int64 ``(n, T)`` with ``-1`` at padding, and the same tokens bit for bit
for the same seed whatever the number of threads (each row depends only on ``(seed, i)``).
Rows are split into chunks of 256 over the thread pool (small batches stay on the calling
thread); each thread advances a block of 16 rows in lockstep (one binary-search step for
all of them, then the next), so the comparisons vectorise and the latency chains of
different rows overlap.
See :mod:`tokis._backends._tables` for why the binary search draws the reference's token.
"""

from __future__ import annotations

import numba
import numpy as np

from ..envs._rng import STREAM_TOKEN, run_key
from ._numba_rng import row_key, uniform_at
from ._tables import eos_index, start_table, step_tables

__all__ = ["sample_numba", "search_sorted_right"]


@numba.njit(cache=True, inline="always")
def search_sorted_right(table, offset, size, u):  # pragma: no cover - compiled
    """First ``a`` with ``u < table[offset + a]`` over ``size`` entries (result in ``[0, size)``).

    ``table[offset : offset + size]`` must be non-decreasing with its last entry above ``u``;
    the result then equals ``#{a : table[offset + a] <= u}``, the reference's count, after
    ceil(log2(size)) halving steps. Used for the start context; the token kernel runs the
    same steps interleaved over a block of rows.
    """
    base = offset
    while size > 1:
        half = size >> 1
        base += half if table[base + half - 1] <= u else 0
        size -= half
    return base - offset


_BLOCK = 16  # rows advanced in lockstep: their searches vectorise and their latencies overlap
_CHUNK_ROWS = 256  # rows per parallel work item
#: below this many (n * T) tokens the kernel runs on the calling thread
PARALLEL_MIN_TOKENS = 1 << 16


@numba.njit(cache=True)
def _sample_rows(cdf, start_cdf, nxt, eos, key, tokens, contexts, lo, hi):  # pragma: no cover - compiled
    # cdf (Tp, S, V) with Tp in {1, T}; start_cdf (S,); nxt (S, V) int64; key uint64 run key;
    # fills rows [lo, hi) of tokens, contexts (n, T) (allocated by numpy, which asks the
    # kernel for huge pages: first-touch page faults of numba-allocated outputs cost more
    # than the work). Each row's draws depend only on (key, row index): blocking, chunking
    # and threads change nothing. A block of rows runs one binary-search step for all its
    # rows before the next step, so the comparisons become data (vector selects) instead of
    # unpredictable branches.
    tp, S, V = cdf.shape
    T = tokens.shape[1]
    flat = cdf.ravel()
    nflat = nxt.ravel()
    keys = np.zeros(_BLOCK, dtype=np.uint64)
    ctx = np.zeros(_BLOCK, dtype=np.int64)
    alive = np.zeros(_BLOCK, dtype=np.bool_)
    u = np.empty(_BLOCK)
    pos = np.empty(_BLOCK, dtype=np.int64)
    for i0 in range(lo, hi, _BLOCK):
        m = min(_BLOCK, hi - i0)
        for j in range(_BLOCK):  # rows j >= m are idle copies of context 0, never written
            ctx[j] = 0
            alive[j] = j < m
            if j < m:
                keys[j] = row_key(key, i0 + j)
                ctx[j] = search_sorted_right(start_cdf, 0, S, uniform_at(keys[j], T))
        n_alive = m
        for t in range(T):
            if n_alive == 0:  # every row of the block ended (eos): pad the rest
                for j in range(m):
                    for s in range(t, T):
                        tokens[i0 + j, s] = -1
                        contexts[i0 + j, s] = -1
                break
            base_t = (t if tp > 1 else 0) * S
            for j in range(_BLOCK):
                u[j] = uniform_at(keys[j], t)
                pos[j] = (base_t + ctx[j]) * V
            size = V
            while size > 1:  # search_sorted_right, one step for every row of the block
                half = size >> 1
                for j in range(_BLOCK):
                    pos[j] += half if flat[pos[j] + half - 1] <= u[j] else 0
                size -= half
            for j in range(m):
                if alive[j]:
                    c = ctx[j]
                    a = pos[j] - (base_t + c) * V
                    tokens[i0 + j, t] = a
                    contexts[i0 + j, t] = c
                    ctx[j] = nflat[c * V + a]
                    if a == eos:
                        alive[j] = False
                        n_alive -= 1
                else:
                    tokens[i0 + j, t] = -1
                    contexts[i0 + j, t] = -1


@numba.njit(cache=True, parallel=True)
def _sample_par(cdf, start_cdf, nxt, eos, key, tokens, contexts):  # pragma: no cover - compiled
    n = tokens.shape[0]
    nitems = (n + _CHUNK_ROWS - 1) // _CHUNK_ROWS
    for item in numba.prange(nitems):
        _sample_rows(cdf, start_cdf, nxt, eos, key, tokens, contexts, item * _CHUNK_ROWS,
                     min(n, (item + 1) * _CHUNK_ROWS))


def sample_numba(mdp, cdf: np.ndarray, n: int, seed: int):
    """Sample token and context arrays with the numba kernel.

    Parameters
    ----------
    mdp : TokenMDP
    cdf : float64 (S, V) or (T, S, V)
        ``tokis.envs._sample.sampling_tables(behavior)``.
    n : int
        Number of sequences.
    seed : int
        Validated seed in ``[0, 2**64)``.

    Returns
    -------
    tokens, contexts : int64 (n, T)
        ``-1`` after a sequence ended; identical to the numpy reference for the same seed.
    """
    key = run_key(seed, STREAM_TOKEN)
    nxt = np.ascontiguousarray(mdp.next_context, dtype=np.int64)
    tokens = np.empty((n, mdp.horizon), dtype=np.int64)
    contexts = np.empty((n, mdp.horizon), dtype=np.int64)
    args = (step_tables(cdf), start_table(mdp.start), nxt, np.int64(eos_index(mdp)), key, tokens, contexts)
    if n * mdp.horizon < PARALLEL_MIN_TOKENS or numba.get_num_threads() < 2:
        _sample_rows(*args, 0, n)
    else:
        _sample_par(*args)
    return tokens, contexts
