"""The one thread-chunking driver of the numba kernels.

Every parallel kernel splits its rows (sequences, or contexts for the exact recursions) into
``nch`` chunks and runs ``numba.prange`` over them; with ``nch = 1`` it runs on the calling
thread without entering a parallel region (a launch costs more than a small pass, and much
more when the cores are busy). A row's result never depends on the chunking.
"""

from __future__ import annotations

import numba

__all__ = ["PARALLEL_MIN_ELEMENTS", "use_threads", "chunk_count", "bounds"]

#: Below this much work (elements, flows) a pass runs on the calling thread.
PARALLEL_MIN_ELEMENTS = 1 << 16


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
