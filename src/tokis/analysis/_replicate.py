"""Replications as an array axis, drawn and reduced chunk by chunk, on every core.

The Monte Carlo harness and ``tokis coverage`` run ``R`` replications of ``n`` sequences of
``T`` tokens. :func:`replication_map` cuts them into chunks of consecutive replications that
fit a memory budget; for each chunk one sampler call draws the log-ratios, rewards and mask
(:func:`tokis.envs._sample.sample_ratios`, into buffers reused from chunk to chunk), one
:func:`tokis.estimators.prepare` validates them, and the caller's ``work(lo, batch)`` runs its
estimators on the prepared batch. Replication ``r`` is bit for bit the batch of seed
``seeds[r]`` whatever the chunking.

On every core: with numba's CPU kernels (``backend`` ``"auto"`` or ``"numba"``), at least two
numba threads and enough work (:func:`plan_chunks`), the chunks are spread over a pool of that
many Python threads, each drawing and reducing whole chunks on its own with every kernel on
its own thread (``numba.set_num_threads(1)`` is per thread; the kernels release the GIL).
This replaces numba's parallel regions inside each call: no region is entered, so there is no
wait for sleeping OpenMP workers between calls (:mod:`tokis._backends._chunks`), and when the
other cores are busy the threads simply share the free one. The results are consumed in
chunk order, so everything downstream is the same as on one thread, bit for bit.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .._backends import _chunks
from ._memory import CHUNK_BUDGET, replication_chunk

__all__ = ["plan_chunks", "replication_map"]


def plan_chunks(n: int, horizon: int, replications: int, backend: str, threads: int | None = None) -> tuple[int, int]:
    """``(replications per chunk, worker threads)`` for ``R`` replications of ``n x horizon`` tokens.

    One thread (and chunks of :data:`~tokis.analysis._memory.CHUNK_BUDGET` bytes) unless the
    backend runs numba's CPU kernels, ``threads`` (default: numba's thread count) is at least 2,
    all replications together hold at least :data:`~tokis._backends._chunks.SAMPLE_PARALLEL_MIN`
    token slots (the size from which one sampling call would take threads) and each chunk's
    calls stay below :data:`~tokis._backends._chunks.ESTIMATOR_PARALLEL_MIN` elements (where
    they would run on one thread anyway). Then the budget is shared by the threads, and there
    are at least as many chunks as threads.
    """
    n, T, R = int(n), int(horizon), int(replications)
    threads = numba.get_num_threads() if threads is None else int(threads)
    whole = replication_chunk(n, T, R, CHUNK_BUDGET)
    if backend not in ("auto", "numba") or threads < 2 or R < 2 or R * n * T < _chunks.SAMPLE_PARALLEL_MIN:
        return whole, 1
    step = min(replication_chunk(n, T, R, CHUNK_BUDGET // threads), math.ceil(R / threads))
    if step * n * T >= _chunks.ESTIMATOR_PARALLEL_MIN:
        return whole, 1
    return step, min(threads, math.ceil(R / step))


def _one_numba_thread():
    numba.set_num_threads(1)  # thread-local: this pool thread's kernels run on it alone


def replication_map(mdp, target, behavior, n, seeds, backend, work, threads: int | None = None):
    """Yield ``(lo, count, work(lo, batch))`` for chunks of consecutive replications, in order.

    ``batch`` is replications ``lo .. lo + count`` as one prepared estimator batch (leading
    axis ``count``); it lives in buffers that the next chunk of the same thread overwrites,
    so ``work`` must return what it needs (arrays it computed), never the batch itself.

    Parameters
    ----------
    mdp : TokenMDP
    target, behavior : Policy
    n : int
        Sequences per replication.
    seeds : sequence of int
        One seed per replication (:func:`~tokis.analysis._harness.replication_seeds`).
    backend : str
        Sampling and estimator backend.
    work : callable
        ``work(lo, batch) -> result``, run in the thread that drew the chunk (``lo``: index of
        its first replication). Chunks may run at the same time: ``work`` writes nothing but
        its own replications' rows.
    threads : int, optional
        Worker threads (default: numba's thread count; :func:`plan_chunks` decides whether
        they are used).
    """
    from ..envs._sample import sample_ratios
    from ..estimators import prepare

    seeds = list(seeds)
    R, T = len(seeds), int(mdp.horizon)
    step, workers = plan_chunks(n, T, R, backend, threads)
    local = threading.local()

    def task(lo):
        part = seeds[lo:lo + step]
        buffers = getattr(local, "buffers", None)
        if buffers is None:
            shape = (min(step, R), n, T)
            buffers = local.buffers = (np.empty(shape), np.empty(shape), np.empty(shape, dtype=bool))
        out = tuple(b[:len(part)] for b in buffers)
        log_ratio, rewards, mask = sample_ratios(mdp, behavior, target, n, part, backend, out=out)
        return lo, len(part), work(lo, prepare(log_ratio, rewards, mask=mask, backend=backend))

    starts = range(0, R, step)
    if workers == 1:
        for lo in starts:
            yield task(lo)
        return
    pool = ThreadPoolExecutor(max_workers=workers, initializer=_one_numba_thread, thread_name_prefix="tokis")
    try:
        yield from pool.map(task, starts)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
