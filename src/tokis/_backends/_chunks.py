"""The one thread-chunking driver of the numba kernels, and how many threads a pass gets.

Every parallel kernel splits its rows (sequences, or contexts for the exact recursions) into
``nch`` chunks and runs ``numba.prange`` over them; with ``nch = 1`` it runs on the calling
thread without entering a parallel region (a launch costs more than a small pass, and much
more when the cores are busy). A row's result never depends on the chunking.

Threads per call (estimators and sampling)
------------------------------------------
A parallel region must wait for every worker of the pool to arrive. A worker that has been
idle for a while is asleep (numba's OpenMP layer, default ``OMP_WAIT_POLICY``), and on a
virtual machine whose other vCPUs are busy it runs only when the scheduler gets to it.
Measured on the 2-vCPU KVM guest of ``benchmarks/RESULTS.md`` in the default environment (no
``OMP_WAIT_POLICY``, no ``OPENBLAS_NUM_THREADS``), shared with other jobs, a whole estimator
call on every thread cost anywhere from 0.05 ms less to 20 ms more than on one thread,
depending on what the other jobs were doing at that moment:

=====================  ==============  ==============  =============================================
public call            numpy           numba, 1 thread  numba, every thread (idle / busy machine)
=====================  ==============  ==============  =============================================
seq 32768 x 2          2.0-2.5 ms      0.5 ms          0.45 ms / 20.8 ms
tok 4096 x 256         9.2-14 ms       1.9-2.1 ms      1.2 ms / 23 ms
seq 8192 x 512         23-32 ms        5.5-7.5 ms      3.0 ms / 23 ms
seq 32768 x 512        110-120 ms      26-36 ms        14 ms / 46 ms
sample() 16384 x 64    190-200 ms      40-46 ms        21-24 ms / 24 ms
=====================  ==============  ==============  =============================================

One thread was never slower than numpy (3-8x faster at every shape); every thread was up to
8x slower than numpy at the small shapes when the other vCPU was busy. So a call takes threads
only when its single-thread work is long enough that even the worst penalty measured (about
20 ms) leaves it far ahead of numpy -- about 40 ms of single-thread work here:

- estimator calls: ``ESTIMATOR_PARALLEL_MIN = 2**24`` elements (rows x T over all batches;
  2-3 ns per element on one thread: 35-50 ms);
- sampling calls: ``SAMPLE_PARALLEL_MIN = 2**20`` token slots (about 40 ns per slot: 40 ms).

Below the thresholds one thread is the measured-safe choice; above them threads are a bet on
an idle core that a dedicated machine always wins (about 2x here when the other vCPU was
free) and that cannot make a call slower than numpy. :func:`threads_for` is the rule; the
figures come from ``benchmarks/run.py`` (section "auto"). The exact recursions keep their own
rule (``PARALLEL_MIN_ELEMENTS`` through :func:`chunk_count`).

Many calls in a row (the Monte Carlo harness) get the cores another way: independent chunks of
replications on a pool of Python threads, every kernel of a chunk on its own thread (numba's
thread count is per thread; the kernels release the GIL) -- no parallel region, so nothing to
wait for (:mod:`tokis.analysis._replicate`).
"""

from __future__ import annotations

import numba

__all__ = [
    "PARALLEL_MIN_ELEMENTS",
    "ESTIMATOR_PARALLEL_MIN",
    "SAMPLE_PARALLEL_MIN",
    "threads_for",
    "chunks_for",
    "use_threads",
    "chunk_count",
    "bounds",
]

#: Below this much work (elements, flows) a pass of the exact recursions runs on the calling thread.
PARALLEL_MIN_ELEMENTS = 1 << 16

#: Elements (rows x T, all batches together) below which an estimator call runs on one thread.
ESTIMATOR_PARALLEL_MIN = 1 << 24

#: Token slots (rows x T, all batches together) below which a sampling call runs on one thread.
SAMPLE_PARALLEL_MIN = 1 << 20


def threads_for(work: int, minimum: int) -> int:
    """Threads for a call of ``work`` elements: 1 below ``minimum``, else every numba thread."""
    return numba.get_num_threads() if work >= minimum else 1


def chunks_for(rows: int, threads: int, per_thread: int = 4) -> int:
    """Chunks for ``rows`` rows on ``threads`` threads: 1 (no parallel region) or ``per_thread`` per thread."""
    if threads <= 1:
        return 1
    return max(1, min(rows, per_thread * threads))


def use_threads(work: int, minimum: int | None = None) -> bool:
    """Whether a pass of ``work`` elements is worth a parallel region on this machine."""
    limit = PARALLEL_MIN_ELEMENTS if minimum is None else minimum
    return work >= limit and numba.get_num_threads() >= 2


def chunk_count(rows: int, cols: int, *, per_thread: int = 4, minimum: int | None = None) -> int:
    """Chunks for a pass over ``rows`` rows of ``cols`` elements: 1, or ``per_thread`` per thread (at most ``rows``)."""
    if not use_threads(rows * cols, minimum):
        return 1
    return max(1, min(rows, per_thread * numba.get_num_threads()))


@numba.njit(cache=True, inline="always")
def bounds(ch, nch, n):  # pragma: no cover - compiled
    """Rows ``lo..hi-1`` of chunk ``ch`` out of ``nch`` over ``n`` rows."""
    size = (n + nch - 1) // nch
    lo = min(n, ch * size)
    return lo, min(n, lo + size)
