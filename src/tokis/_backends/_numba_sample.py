"""Numba sampler: rows split over threads, O(log V) per token.

Same contract as ``tokis.envs._sample._sample_numpy``: ``(mdp, cdf, n, seed) -> (tokens,
contexts)``, both int64 ``(n, T)`` with ``-1`` at padding, and the same tokens bit for bit
for the same seed whatever the number of threads (each row depends only on ``(seed, i)``).
Rows are split into chunks of 256 over the thread pool (small batches stay on the calling
thread); each thread advances a block of 16 rows in lockstep (one binary-search step for
all of them, then the next), so the comparisons vectorise and the latency chains of
different rows overlap.
See :mod:`tokis._backends._tables` for why the binary search draws the reference's token.

:func:`rollouts_numba` is the whole of ``tokis.envs.sample`` for the numba backend: each
parallel work item samples its rows and then, while they are still in cache, assembles
them -- the mask, the log-probabilities of the sampled tokens under the behaviour and the
target policy, their difference, the step rewards with the (observed, possibly Bernoulli)
terminal reward added at the last real step, the lengths and the final contexts. Every
field equals ``tokis.envs._sample._assemble`` (the numpy reference) bit for bit: the same
gathers, the same single subtraction and addition per entry, the same uniforms.

:func:`ratios_numba` is the lean pass for estimates: it writes only what an estimator reads --
the mask, ``log_ratio`` and the per-step rewards (17 bytes per token slot instead of 49) --
computing each entry as the token is drawn, with no token, context or log-probability array,
one row after the other (see ``_ratio_rows`` for why not in blocks); the same entries as
:func:`rollouts_numba`'s, bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

from .._core._rng import STREAM_REWARD, STREAM_TOKEN, run_key
from . import _chunks
from ._chunks import threads_for
from ._numba_rng import row_key, uniform_at
from ._tables import eos_index, start_table, step_tables

__all__ = ["sample_numba", "rollouts_numba", "ratios_numba", "search_sorted_right", "run_keys", "sample_threads"]


@numba.njit(cache=True, nogil=True, inline="always")
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


@numba.njit(cache=True, nogil=True)
def _sample_rows(cdf, start_cdf, nxt, eos, keys, n, tokens, contexts, lo, hi):  # pragma: no cover - compiled
    # cdf (Tp, S, V) with Tp in {1, T}; start_cdf (S,); nxt (S, V) int64; keys (R,) uint64 run
    # keys, one per replication of n rows (global row g is sequence g % n of replication g // n);
    # fills rows [lo, hi) of tokens, contexts (R * n, T) (allocated by numpy, which asks the
    # kernel for huge pages: first-touch page faults of numba-allocated outputs cost more
    # than the work). Each row's draws depend only on (key, row index): blocking, chunking
    # and threads change nothing. A block of rows runs one binary-search step for all its
    # rows before the next step, so the comparisons become data (vector selects) instead of
    # unpredictable branches.
    tp, S, V = cdf.shape
    T = tokens.shape[1]
    flat = cdf.ravel()
    nflat = nxt.ravel()
    rkeys = np.zeros(_BLOCK, dtype=np.uint64)
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
                g = i0 + j
                rkeys[j] = row_key(keys[g // n], g % n)
                ctx[j] = search_sorted_right(start_cdf, 0, S, uniform_at(rkeys[j], T))
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
                u[j] = uniform_at(rkeys[j], t)
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


@numba.njit(cache=True, nogil=True, parallel=True)
def _sample_par(cdf, start_cdf, nxt, eos, keys, n, tokens, contexts):  # pragma: no cover - compiled
    rows = tokens.shape[0]
    nitems = (rows + _CHUNK_ROWS - 1) // _CHUNK_ROWS
    for item in numba.prange(nitems):
        _sample_rows(cdf, start_cdf, nxt, eos, keys, n, tokens, contexts, item * _CHUNK_ROWS,
                     min(rows, (item + 1) * _CHUNK_ROWS))


def run_keys(seeds, stream: int) -> np.ndarray:
    """The run keys (R,) uint64 of ``seeds`` (one int, or a sequence of R ints) for ``stream``."""
    seeds = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)
    return np.array([run_key(s, stream) for s in seeds], dtype=np.uint64)


def sample_threads(rows: int, T: int) -> int:
    """Threads of a sampling call over ``rows`` x ``T`` token slots (:mod:`._chunks`)."""
    return threads_for(rows * T, _chunks.SAMPLE_PARALLEL_MIN)


def sample_numba(mdp, cdf: np.ndarray, n: int, seed):
    """Sample token and context arrays with the numba kernel.

    Parameters
    ----------
    mdp : TokenMDP
    cdf : float64 (S, V) or (T, S, V)
        ``tokis.envs._sample.sampling_tables(behavior)``.
    n : int
        Number of sequences (per replication).
    seed : int or sequence of int
        Validated seed(s) in ``[0, 2**64)``; R seeds draw R replications of n rows, back to back.

    Returns
    -------
    tokens, contexts : int64 (R * n, T)
        ``-1`` after a sequence ended; identical to the numpy reference for the same seed.
    """
    keys = run_keys(seed, STREAM_TOKEN)
    rows = n * keys.shape[0]
    nxt = np.ascontiguousarray(mdp.next_context, dtype=np.int64)
    tokens = np.empty((rows, mdp.horizon), dtype=np.int64)
    contexts = np.empty((rows, mdp.horizon), dtype=np.int64)
    args = (step_tables(cdf), start_table(mdp.start), nxt, np.int64(eos_index(mdp)), keys, np.int64(n), tokens,
            contexts)
    if sample_threads(rows, mdp.horizon) <= 1:
        _sample_rows(*args, 0, rows)
    else:
        _sample_par(*args)
    return tokens, contexts


@numba.njit(cache=True, nogil=True)
def _assemble_rows(tokens, contexts, lpb_tab, lpt_tab, has_target, step_tab, term_tab, nxt, noisy, reward_keys, n,
                   mask, lpb, lpt, lr, rew, lengths, final, last_reward, lo, hi):  # pragma: no cover - compiled
    # The numpy reference's _assemble for rows [lo, hi): lp tables (Tp, S, V) with Tp in
    # {1, T'} (time-dependent policies index step t); step_tab (S, V); term_tab (S,).
    # last_reward[i] = rew[i, last] (the row's return when every step reward is +0).
    # A sampled row is a prefix of tokens then -1 padding (the sampler writes -1 only after
    # the row ended), so the real steps are gathered first and the padding filled after, in
    # a loop of plain stores that vectorises.
    T = tokens.shape[1]
    tb = lpb_tab.shape[0] > 1
    tt = lpt_tab.shape[0] > 1
    for i in range(lo, hi):
        L = 0
        while L < T and tokens[i, L] >= 0:
            t = L
            a = tokens[i, t]
            c = contexts[i, t]
            b = lpb_tab[t if tb else 0, c, a]
            mask[i, t] = True
            lpb[i, t] = b
            if has_target:
                p = lpt_tab[t if tt else 0, c, a]
                lpt[i, t] = p
                lr[i, t] = p - b
            rew[i, t] = step_tab[c, a]
            L += 1
        for t in range(L, T):
            mask[i, t] = False
            lpb[i, t] = 0.0
            rew[i, t] = 0.0
        if has_target:
            for t in range(L, T):
                lpt[i, t] = 0.0
                lr[i, t] = 0.0
        lengths[i] = L
        # the reference reads column L - 1 (-1, the last column, for an empty row) with the
        # padding's context and token taken as 0
        last = L - 1 if L > 0 else T - 1
        c = contexts[i, last] if L > 0 else 0
        a = tokens[i, last] if L > 0 else 0
        f = nxt[c, a]
        final[i] = f
        term = term_tab[f]
        if noisy:
            term = 1.0 if uniform_at(row_key(reward_keys[i // n], i % n), 0) < term else 0.0
        rew[i, last] += term
        last_reward[i] = rew[i, last]


@numba.njit(cache=True, nogil=True, parallel=True)
def _rollouts_par(cdf, start_cdf, nxt, eos, keys, n, tokens, contexts, lpb_tab, lpt_tab, has_target, step_tab,
                  term_tab, noisy, reward_keys, mask, lpb, lpt, lr, rew, lengths, final, last_reward):  # pragma: no cover
    rows = tokens.shape[0]
    nitems = (rows + _CHUNK_ROWS - 1) // _CHUNK_ROWS
    for item in numba.prange(nitems):
        lo = item * _CHUNK_ROWS
        hi = min(rows, lo + _CHUNK_ROWS)
        _sample_rows(cdf, start_cdf, nxt, eos, keys, n, tokens, contexts, lo, hi)
        # the rows just sampled are still in this core's cache
        _assemble_rows(tokens, contexts, lpb_tab, lpt_tab, has_target, step_tab, term_tab, nxt, noisy, reward_keys, n,
                       mask, lpb, lpt, lr, rew, lengths, final, last_reward, lo, hi)


def _log_prob_table(policy) -> np.ndarray:
    lp = np.asarray(policy.log_probs, dtype=np.float64)
    return np.ascontiguousarray(lp if lp.ndim == 3 else lp[None])


def _log_ratio_table(behavior, target) -> np.ndarray:
    """``log pi - log mu`` for every (step, context, token) (Tp, S, V): the subtraction the
    reference does per sampled token, done once per table entry (the same float64 operation,
    so the same values; entries no sequence can sample may be nan and are never read)."""
    with np.errstate(invalid="ignore"):
        return np.ascontiguousarray(_log_prob_table(target) - _log_prob_table(behavior))


#: dtype of ``mask.sum(axis=1)``, the reference's lengths
_LENGTH_DTYPE = np.zeros((1, 1), dtype=bool).sum(axis=1).dtype


def rollouts_numba(mdp, behavior, target, cdf: np.ndarray, n: int, seed) -> dict:
    """Sample and assemble rollouts in one parallel numba pass (``tokis.envs.sample``'s fields).

    With R seeds the R replications are drawn in the same pass, as ``R * n`` rows (replication
    ``r`` = rows ``r * n .. (r + 1) * n - 1``, sequence ``i`` of it keyed by ``(seed[r], i)``):
    every field is (R * n, ...), each replication's rows bit for bit those of its own call.

    Parameters
    ----------
    mdp : TokenMDP
    behavior : Policy
        The sampling policy mu (its tables ``cdf``).
    target : Policy or None
    cdf : float64 (S, V) or (T', S, V)
        ``tokis.envs._sample.sampling_tables(behavior)``.
    n : int
    seed : int or sequence of int
        Validated seed(s) in ``[0, 2**64)``.

    Returns
    -------
    dict
        The keyword arguments of ``tokis.envs.Rollouts`` (rows of every replication back to back): tokens, mask, contexts,
        logp_behavior, logp_target, rewards, returns, log_ratio, lengths, final_contexts;
        each equal to the numpy reference's (``_sample_numpy`` then ``_assemble``) bit for
        bit. ``returns`` is ``rewards.sum(axis=1)`` computed by numpy when the MDP has
        non-zero step rewards (so the summation order is numpy's); otherwise every row holds
        one non-zero reward and the return is that entry, taken from the kernel.
    """
    T = int(mdp.horizon)
    keys = run_keys(seed, STREAM_TOKEN)
    reward_keys = run_keys(seed, STREAM_REWARD)
    n_per = n
    n = n_per * keys.shape[0]  # rows
    nxt = np.ascontiguousarray(mdp.next_context, dtype=np.int64)
    tokens = np.empty((n, T), dtype=np.int64)
    contexts = np.empty((n, T), dtype=np.int64)
    mask = np.empty((n, T), dtype=np.bool_)
    lpb = np.empty((n, T))
    rew = np.empty((n, T))
    has_target = target is not None
    lpt = np.empty((n, T)) if has_target else np.empty((1, 1))
    lr = np.empty((n, T)) if has_target else np.empty((1, 1))
    lengths = np.empty(n, dtype=_LENGTH_DTYPE)
    final = np.empty(n, dtype=np.int64)
    last_reward = np.empty(n)
    lpb_tab = _log_prob_table(behavior)
    lpt_tab = _log_prob_table(target) if has_target else lpb_tab
    step_tab = np.ascontiguousarray(mdp.step_reward, dtype=np.float64)
    term_tab = np.ascontiguousarray(mdp.terminal_reward, dtype=np.float64)
    noisy = mdp.reward_noise == "bernoulli"
    sample_args = (step_tables(cdf), start_table(mdp.start), nxt, np.int64(eos_index(mdp)), keys, np.int64(n_per),
                   tokens, contexts)
    tables = (lpb_tab, lpt_tab, has_target, step_tab, term_tab)
    outputs = (mask, lpb, lpt, lr, rew, lengths, final, last_reward)
    if sample_threads(n, T) <= 1:
        _sample_rows(*sample_args, 0, n)
        _assemble_rows(tokens, contexts, *tables, nxt, noisy, reward_keys, np.int64(n_per), *outputs, 0, n)
    else:
        _rollouts_par(*sample_args, *tables, noisy, reward_keys, *outputs)
    zero_steps = not (np.any(step_tab) or np.signbit(step_tab).any())
    return dict(
        tokens=tokens,
        mask=mask,
        contexts=contexts,
        logp_behavior=lpb,
        logp_target=lpt if has_target else None,
        rewards=rew,
        returns=last_reward if zero_steps else rew.sum(axis=1),
        log_ratio=lr if has_target else None,
        lengths=lengths,
        final_contexts=final.astype(mdp.next_context.dtype, copy=False),
    )


@numba.njit(cache=True, nogil=True)
def _ratio_rows(cdf, start_cdf, nxt, eos, keys, n, lr_tab, step_tab, term_tab, noisy, reward_keys, mask, lr,
                rew, lo, hi):  # pragma: no cover - compiled
    # _sample_rows and _assemble_rows fused for rows [lo, hi), writing only mask, lr and rew:
    # each drawn token's entries are written at once (the same gather and single subtraction
    # as the reference), then the padding, then the terminal reward at the last real step,
    # read at the context after it (context and token 0 for an empty row, as the reference).
    # One row after the other, not blocks of rows in lockstep: with nothing else to write, a
    # row's own loop measured 20-30 % faster than the block for V = 2..32 and even at V = 256
    # (51 x 1024 rows x 64 steps, one thread).
    tp, S, V = cdf.shape
    T = lr.shape[1]
    tl = lr_tab.shape[0] > 1
    flat = cdf.ravel()
    lr_flat = lr_tab.ravel()
    step_flat = step_tab.ravel()
    nxt_flat = nxt.ravel()
    for i in range(lo, hi):
        rk = row_key(keys[i // n], i % n)
        c = search_sorted_right(start_cdf, 0, S, uniform_at(rk, T))
        L = 0
        last_c = 0
        last_a = 0
        for t in range(T):
            a = search_sorted_right(flat, ((t if tp > 1 else 0) * S + c) * V, V, uniform_at(rk, t))
            k = c * V + a  # (context, token) in the flat (S, V) tables
            mask[i, t] = True
            lr[i, t] = lr_flat[(t if tl else 0) * S * V + k]
            rew[i, t] = step_flat[k]
            L = t + 1
            last_c = c
            last_a = a
            c = nxt_flat[k]
            if a == eos:
                break
        for t in range(L, T):
            mask[i, t] = False
            lr[i, t] = 0.0
            rew[i, t] = 0.0
        term = term_tab[nxt[last_c, last_a]]
        if noisy:
            term = 1.0 if uniform_at(row_key(reward_keys[i // n], i % n), 0) < term else 0.0
        rew[i, L - 1 if L > 0 else T - 1] += term


@numba.njit(cache=True, nogil=True, parallel=True)
def _ratios_par(cdf, start_cdf, nxt, eos, keys, n, lr_tab, step_tab, term_tab, noisy, reward_keys, mask, lr,
                rew):  # pragma: no cover - compiled
    rows = lr.shape[0]
    nitems = (rows + _CHUNK_ROWS - 1) // _CHUNK_ROWS
    for item in numba.prange(nitems):
        _ratio_rows(cdf, start_cdf, nxt, eos, keys, n, lr_tab, step_tab, term_tab, noisy, reward_keys, mask,
                    lr, rew, item * _CHUNK_ROWS, min(rows, (item + 1) * _CHUNK_ROWS))


def ratios_numba(mdp, behavior, target, cdf: np.ndarray, n: int, seed, out=None) -> tuple:
    """The ``log_ratio``, ``rewards`` and ``mask`` fields of :func:`rollouts_numba`, and nothing else.

    Parameters
    ----------
    mdp : TokenMDP
    behavior, target : Policy
        mu (its tables ``cdf``) and pi.
    cdf : float64 (S, V) or (T', S, V)
        ``tokis.envs._sample.sampling_tables(behavior)``.
    n : int
    seed : int or sequence of int
        Validated seed(s); R seeds give R * n rows, replication after replication.
    out : tuple of three arrays, optional
        ``(log_ratio, rewards, mask)`` to write into (float64, float64, bool; C-contiguous with
        ``R * n * T`` elements, checked by the caller): reusing them from one call to the next
        spares the kernel's first touch of fresh pages.

    Returns
    -------
    log_ratio : float64 (R * n, T)
    rewards : float64 (R * n, T)
    mask : bool (R * n, T)
        Bit for bit the fields :func:`rollouts_numba` (and the numpy reference) returns.
    """
    T = int(mdp.horizon)
    keys = run_keys(seed, STREAM_TOKEN)
    rows = n * keys.shape[0]
    if out is None:
        lr, rew, mask = np.empty((rows, T)), np.empty((rows, T)), np.empty((rows, T), dtype=np.bool_)
    else:
        lr, rew, mask = (a.reshape(rows, T) for a in out)
    args = (step_tables(cdf), start_table(mdp.start), np.ascontiguousarray(mdp.next_context, dtype=np.int64),
            np.int64(eos_index(mdp)), keys, np.int64(n), _log_ratio_table(behavior, target),
            np.ascontiguousarray(mdp.step_reward, dtype=np.float64),
            np.ascontiguousarray(mdp.terminal_reward, dtype=np.float64), mdp.reward_noise == "bernoulli",
            run_keys(seed, STREAM_REWARD), mask, lr, rew)
    if sample_threads(rows, T) <= 1:
        _ratio_rows(*args, 0, rows)
    else:
        _ratios_par(*args)
    return lr, rew, mask
